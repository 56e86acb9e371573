"""Opening the journal: one parad per state directory, migrations, and a journal that cannot be read moved aside.

A journal that SQLite finds corrupt or not a database at all, or that a newer
parad wrote, is renamed `journal.sqlite3.unreadable-<time>` (with its WAL),
logged, and a fresh one is started: parad serves again rather than refusing
forever, and the old file is there to inspect. Any other failure (the folder
cannot be written, the disk is full) stops parad with a message that says so:
a fresh journal would not help.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import time
from pathlib import Path

from para.daemon.config import Config, JournalSection
from para.daemon.core import memory_store
from para.daemon.journal import schema
from para.daemon.journal.store import Journal
from para.daemon.tasks import TaskStore

log = logging.getLogger("parad")

NAME = "journal.sqlite3"
UNREADABLE = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) if hasattr(sqlite3, "SQLITE_CORRUPT") else (11, 26)
QUICK_CHECK_BELOW = 256 << 20   # bytes: a larger journal is not checked page by page at start


class JournalError(Exception):
    """The journal cannot be opened; the message says what to do."""


def open_store(config: Config, state_dir: Path) -> TaskStore:
    """The journal in `state_dir`, or the memory store when durability is off. Raises JournalError."""
    settings = config.daemon.journal
    if settings.durability == "off":
        return memory_store(config)
    return open_journal(state_dir, settings)


def open_journal(state_dir: Path, settings: JournalSection) -> Journal:
    """The journal in `state_dir`, locked for this parad, migrated; a fresh one if it could not be read."""
    path = state_dir / NAME
    lock = _lock(state_dir)
    try:
        return Journal(_connect(path, settings), path, settings, lock)
    except (sqlite3.DatabaseError, schema.NewerJournal) as exc:
        if not _unreadable(exc):
            raise JournalError(f"cannot open the journal {path}: {exc}; make the state directory writable, "
                               f"free space on it, or set daemon.journal.durability: off") from None
        moved = _move_aside(path)
        log.error("journal %s cannot be read (%s); moved it aside to %s and started a fresh one: "
                  "the tasks in it are not recovered", path, " ".join(str(exc).split()), moved)
    try:
        return Journal(_connect(path, settings), path, settings, lock)
    except sqlite3.Error as exc:
        os.close(lock)
        raise JournalError(f"cannot create a fresh journal {path}: {exc}") from None


def _lock(state_dir: Path) -> int:
    # Two parads on one journal would each recover, and run, the same tasks.
    fd = os.open(state_dir / "journal.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JournalError(f"another parad uses the state directory {state_dir}; give this one its own "
                           f"(--state-dir)") from None
    return fd   # held for as long as the journal is open


def _connect(path: Path, settings: JournalSection) -> sqlite3.Connection:
    fresh = not path.exists()
    if not fresh and path.stat().st_size == 0:   # SQLite takes an empty file for a new database
        log.warning("journal %s is empty (truncated?): starting a fresh one; no tasks are recovered", path)
    if fresh:   # made 0600 before SQLite opens it: its WAL and shm files are created with the same mode
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, cached_statements=32)
    try:
        if fresh:
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")   # before the first table, or it cannot be set
        if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] != "wal":
            raise sqlite3.OperationalError("the journal cannot use write-ahead logging on this filesystem")
        conn.execute(f"PRAGMA synchronous = {'FULL' if settings.durability == 'sync' else 'NORMAL'}")
        # The syncer thread checkpoints (syncer.py); the loop only as a fallback, if the WAL grows past ~16 MiB.
        conn.execute("PRAGMA wal_autocheckpoint = 4096")
        if not fresh and path.stat().st_size < QUICK_CHECK_BELOW:
            problem = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
            if problem != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed ({problem})")
        before, after = schema.migrate(conn)
        if before and before != after:
            log.info("journal %s: schema version %d migrated to %d", path, before, after)
        for suffix in ("", "-wal", "-shm"):   # also those an older parad made
            if os.path.exists(f"{path}{suffix}"):
                os.chmod(f"{path}{suffix}", 0o600)
        return conn
    except BaseException:
        conn.close()
        raise


def _unreadable(exc: BaseException) -> bool:
    if isinstance(exc, schema.NewerJournal):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in UNREADABLE
    return type(exc) is sqlite3.DatabaseError   # no code (older Pythons): not an OperationalError


def _move_aside(path: Path) -> Path:
    moved = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            os.replace(source, f"{moved}{suffix}")
    return moved
