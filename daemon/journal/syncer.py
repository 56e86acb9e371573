"""Putting the journal on disk without making the loop wait: parad's one thread of its own.

A commit (store.py) leaves its pages in the operating system's cache: safe
from a crash of parad, not from a power cut. Syncing them to the disk takes
from a fraction of a millisecond to seconds, by how much was written and by
the disk, and the loop must not stall for that. So a thread, every
`sync_interval` after a commit, checkpoints the WAL on a connection of its
own (`PRAGMA wal_checkpoint(PASSIVE)`: SQLite syncs the WAL first, then
copies it into the database and syncs that) and fsyncs the result files
written since. sqlite3 releases the GIL while it works, so the loop goes on.

It shares nothing with the loop but `committed()` (a flag) and the list of
files to sync, under a lock. With durability `sync`, each commit is synced by
the loop itself (synchronous=FULL); the thread then only checkpoints, which
keeps the WAL short in both modes (the loop's own auto-checkpoint is only a
fallback).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger("parad")


class Syncer:
    def __init__(self, path: Path, interval: float) -> None:
        self.path = path
        self.interval = interval
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._files: list[Path] = []
        self._lock = threading.Lock()
        self._due = threading.Event()      # something was committed since the last sync
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="para-journal-sync", daemon=True)
        self.syncs = 0

    def start(self) -> None:
        self._thread.start()

    def committed(self, files: list[Path] | None = None) -> None:
        """A commit went through (with these new result files): sync it within `interval`."""
        if files:
            with self._lock:
                self._files.extend(files)
        self._due.set()

    def close(self) -> None:
        """Sync what is left and end the thread."""
        self._stop.set()
        self._due.set()
        if self._thread.is_alive():
            self._thread.join()
        else:
            self._sync()
        self._conn.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._due.wait()
            if not self._stop.is_set():
                self._stop.wait(self.interval)   # a commit's neighbours join its sync
            self._due.clear()
            self._sync()

    def _sync(self) -> None:
        with self._lock:
            files, self._files = self._files, []
        for path in files:
            fsync(path)
        if files:   # their names too, or a power cut can lose them
            fsync(files[0].parent)
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self.syncs += 1
        except sqlite3.Error as exc:   # a full disk: the next commit says so; the WAL stays synced by the next try
            log.warning("journal: checkpoint of %s failed: %s", self.path, exc)


def fsync(path: Path) -> None:
    """Put a file, or a directory's entries, on disk; a file already gone (pruned) is skipped."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        log.warning("journal: fsync of %s failed: %s", path, exc.strerror)
    finally:
        os.close(fd)
