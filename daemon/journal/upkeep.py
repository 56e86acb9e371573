"""The journal's timer in the supervisor loop: retention (syncs to disk are the syncer thread's)."""

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

    def start(self) -> None:
        self.journal.start()
        self.timers.call_later(RETENTION_EVERY, self._retain)

    def _retain(self) -> None:
        try:
            if self.journal.retention.due():
                gone = self.journal.retention.prune(chunks=RETENTION_CHUNKS)
                log.info("journal retention: dropped %d finished tasks (%d bytes, %d files)",
                         gone["tasks"], gone["bytes"], gone["files"])
        except Exception:   # a failed prune is tried again next time; it must not stop the loop
            log.exception("journal retention failed")
        self.timers.call_later(RETENTION_EVERY, self._retain)
