"""How long finished tasks stay in the journal: by age and by total bytes, oldest first
(in the order they were accepted).

`count` and `bytes` are the finished tasks kept and their bytes (their rows'
spec and result, and result files), read once when the journal opens and kept
up to date after, so that a check costs nothing. `prune` deletes in chunks of
CHUNK rows, each its own short transaction, so the loop is never held long;
`due` says whether the limits are passed (the supervisor prunes on a timer,
`paractl gc` at once).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

from para.daemon.config import JournalSection
from para.daemon.journal.transaction import transaction

log = logging.getLogger("parad")

CHUNK = 2000   # rows deleted per transaction


class Retention:
    def __init__(self, conn: sqlite3.Connection, results_dir: Path, settings: JournalSection) -> None:
        self.conn = conn
        self.results_dir = results_dir
        self.settings = settings
        self.count, self.bytes = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM tasks WHERE ended IS NOT NULL").fetchone()

    def added(self, size: int) -> None:
        """A finished task of `size` bytes was committed."""
        self.count += 1
        self.bytes += size

    def due(self) -> bool:
        return self.bytes > self.settings.max_bytes or self._oldest_end() < time.time() - self.settings.retain

    def _oldest_end(self) -> float:
        row = self.conn.execute("SELECT ended FROM tasks WHERE ended IS NOT NULL ORDER BY seq LIMIT 1").fetchone()
        return row[0] if row and row[0] is not None else float("inf")

    def prune(self, older_than: float | None = None, chunks: int | None = None) -> dict[str, int]:
        """Delete finished tasks that ended more than `older_than` (else `retain`) seconds ago, then the
        oldest while past `max_bytes`; at most `chunks` chunks (None: all). What went."""
        age = self.settings.retain if older_than is None else min(older_than, self.settings.retain)
        cutoff = time.time() - age
        gone = {"tasks": 0, "bytes": 0, "files": 0}
        while chunks is None or chunks > 0:
            victims = self._victims(cutoff)
            if not victims:
                break
            self._delete(victims, gone)
            chunks = None if chunks is None else chunks - 1
        self._drop_batches(cutoff)
        if gone["tasks"]:
            self.conn.execute("PRAGMA incremental_vacuum(2048)")   # give freed pages back to the filesystem
        return gone

    def _victims(self, cutoff: float) -> list[tuple[int, int, str | None]]:
        """The next chunk to delete: ended before `cutoff`, or the oldest ended while over max_bytes."""
        over = self.bytes - int(self.settings.max_bytes)
        found = self.conn.execute(
            "SELECT seq, size, result_file, ended FROM tasks WHERE ended IS NOT NULL ORDER BY seq LIMIT ?",
            (CHUNK,)).fetchall()
        victims = []
        for seq, size, file, ended in found:
            if ended >= cutoff and over <= 0:
                break
            victims.append((seq, size, file))
            over -= size
        return victims

    def _delete(self, victims: list[tuple[int, int, str | None]], gone: dict[str, int]) -> None:
        with transaction(self.conn) as conn:
            conn.executemany("DELETE FROM tasks WHERE seq = ?", [(seq,) for seq, _, _ in victims])
        for _, size, file in victims:
            self.count -= 1
            self.bytes -= size
            gone["tasks"] += 1
            gone["bytes"] += size
            if file is not None:
                try:
                    (self.results_dir / file).unlink()
                    gone["files"] += 1
                except FileNotFoundError:
                    pass

    def _drop_batches(self, cutoff: float) -> None:
        """Ended batches past the age limit go too (their tasks went with theirs)."""
        self.conn.execute("DELETE FROM batches WHERE ended IS NOT NULL AND ended < ?", (cutoff,))
