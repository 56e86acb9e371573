"""The task journal: every accepted task, its states and its result, in SQLite, across crashes.

    store.py      the Journal: changes grouped into one commit per loop turn, syncs, lookups
    rows.py       a task as a row and back
    schema.py     the tables, versioned, and the migrations between versions
    opening.py    one parad per state directory; an unreadable journal moved aside
    retention.py  finished tasks dropped by age and bytes, oldest first
    transaction.py  one transaction, rolled back whole (keeping the error that ended it)
    recovery.py   after a restart: unfinished tasks and batches back in the daemon

`opening.open_store` gives the task store a config asks for: the Journal, or,
with `durability: off`, the in-memory store of finished results (tasks.py).
"""

