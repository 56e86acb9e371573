"""The journal's timers in the supervisor loop: syncs to disk (durability batched) and retention."""

from __future__ import annotations

import logging

from para.daemon.journal.store import Journal
from para.daemon.timers import Timers

log = logging.getLogger("parad")

RETENTION_EVERY = 30.0   # seconds between retention checks
RETENTION_CHUNKS = 5     # chunks of rows a check deletes at most, so the loop is not held long


class Upkeep:
    def __init__(self, journal: Journal, timers: Timers) -> None:
        self.journal = journal
        self.timers = timers
        self._sync_armed = False

    def start(self) -> None:
        self.timers.call_later(RETENTION_EVERY, self._retain)

    def committed(self) -> None:
        """A commit went through: with durability batched, it is synced to disk within sync_interval
        (a timer only while there is something to sync, so an idle parad does not wake for it)."""
        if not self._sync_armed and self.journal.unsynced and self.journal.settings.durability == "batched":
            self._sync_armed = True
            self.timers.call_later(self.journal.settings.sync_interval, self._sync)

    def _sync(self) -> None:
        self._sync_armed = False
        self.journal.sync()

    def _retain(self) -> None:
        try:
            if self.journal.retention.due():
                gone = self.journal.retention.prune(chunks=RETENTION_CHUNKS)
                log.info("journal retention: dropped %d finished tasks (%d bytes, %d files)",
                         gone["tasks"], gone["bytes"], gone["files"])
        except Exception:   # a failed prune is tried again next time; it must not stop the loop
            log.exception("journal retention failed")
        self.timers.call_later(RETENTION_EVERY, self._retain)
