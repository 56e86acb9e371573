"""The journal's tables, and the migrations that bring an older journal up to date.

`PRAGMA user_version` holds the journal's schema version. A parad opens a
journal of its own version or older (each step of MIGRATIONS runs once, in
its own transaction, in order) and moves aside one of a newer version
(store.py), since it cannot know what that one means.

Version 1 held the tasks and their results. Version 2 added each task's
history of states and the batches, so that batches resume after a restart.
Version 3 added the idempotency key of a task that has one.
"""

from __future__ import annotations

import sqlite3

from para.daemon.journal.transaction import transaction

# One list of statements per version: MIGRATIONS[n - 1] takes a journal from version n - 1 to n.
MIGRATIONS: list[list[str]] = [
    [
        # seq: the order tasks were accepted in (their queue order after a restart).
        """CREATE TABLE tasks (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            pool TEXT NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            max_attempts INTEGER NOT NULL,
            retry_on TEXT NOT NULL,
            batch TEXT,
            parent TEXT,
            depth INTEGER NOT NULL DEFAULT 0,
            session BLOB,
            spec BLOB NOT NULL,
            arg_bytes INTEGER NOT NULL DEFAULT 0,
            accepted REAL NOT NULL,
            ended REAL,
            result BLOB,
            result_file TEXT,
            size INTEGER NOT NULL DEFAULT 0
        )""",
        # Recovery reads only the tasks that had not ended.
        "CREATE INDEX tasks_live ON tasks(seq) WHERE ended IS NULL",
    ],
    [
        "ALTER TABLE tasks ADD COLUMN history TEXT NOT NULL DEFAULT ''",
        """CREATE TABLE batches (
            id TEXT PRIMARY KEY,
            on_failure TEXT NOT NULL,
            after BLOB NOT NULL,
            first_failure TEXT,
            accepted REAL NOT NULL,
            ended REAL
        )""",
        "CREATE INDEX tasks_batch ON tasks(batch) WHERE batch IS NOT NULL",
    ],
    [
        # A task's idempotency key (with its tool), so that a restarted parad still knows the window's keys.
        "ALTER TABLE tasks ADD COLUMN idem TEXT",
        "CREATE INDEX tasks_idem ON tasks(accepted) WHERE idem IS NOT NULL",
    ],
]
VERSION = len(MIGRATIONS)


class NewerJournal(Exception):
    """A journal written by a newer parad: this one cannot read it."""


def version_of(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn: sqlite3.Connection, target: int = VERSION) -> tuple[int, int]:
    """Bring the journal to version `target`, one transaction per step; (version before, after).
    `conn` is in autocommit mode (isolation_level None): each step opens its own transaction."""
    found = version_of(conn)
    if found > VERSION:
        raise NewerJournal(f"it has schema version {found}, and this parad knows versions up to {VERSION}")
    for version in range(found + 1, target + 1):
        with transaction(conn):   # a step is applied whole or not at all
            for statement in MIGRATIONS[version - 1]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
    return found, max(found, target)
