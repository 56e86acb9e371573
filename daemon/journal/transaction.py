"""One SQLite transaction, applied whole or not at all."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT on `conn` (autocommit mode), rolled back if anything in it raises.
    After some errors (SQLITE_FULL, SQLITE_IOERR) SQLite has already rolled back: then the error
    that did it is the one raised, not a ROLLBACK's "no transaction is active"."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
