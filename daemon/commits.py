"""When the loop commits the task store, and what leaves after it (the outbox's fence).

A commit is owed to a client only when a frame waits for it (an Accepted, a
Done: `Outbox.holding`); otherwise what changed was told to nobody, and a
crash that takes it back takes back nothing acknowledged (a task submitted
without an ack is resubmitted by its client's resume). So:

- frames wait: commit now, unless more messages wait to be read (a
  zero-timeout poll) and the oldest change is younger than commit_interval:
  then the next turn commits with it (group commit);
- nothing waits: the changes wait too, up to commit_interval after the
  oldest, a timer bringing the loop back then. A lone `run()` thus costs
  one commit, its row written once with its end, instead of one for its
  acceptance and one for its end.

Starts of tasks that may not run twice are committed by the store itself
before their assignment leaves (`record_starts`). While the store cannot
write, fenced frames wait and a timer brings the loop back every RETRY_EVERY
seconds to try again (journal/store.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from para.daemon.tasks import TaskStore
from para.daemon.timers import Timers


class Fence(Protocol):
    holding: bool

    def committed(self) -> None: ...


class Commits:
    """The end of a loop turn's commit; see the module docstring."""

    def __init__(self, store: TaskStore, outbox: Fence, timers: Timers, more_waiting: Callable[[], bool],
                 interval: float, retry_every: float, on_writable: Callable[[], None]) -> None:
        self.store = store
        self.outbox = outbox
        self.timers = timers
        self._more_waiting = more_waiting   # whether messages wait to be read now
        self.interval = interval
        self.retry_every = retry_every
        self._on_writable = on_writable     # the store writes again after trouble
        self._armed = False                  # a timer will bring the loop back

    def turn(self, force: bool = False) -> None:
        """Commit what changed if it is owed now (always if `force`); then what it records may leave."""
        store = self.store
        if not force and store.pending and not store.due():
            if not self.outbox.holding:
                self._wake_in(self.interval)
                return
            if self._more_waiting():
                return   # the next turn comes at once, and commits with it
        in_trouble = store.trouble is not None
        if not store.commit():
            self._wake_in(self.retry_every)
            return
        self.outbox.committed()
        if in_trouble:
            self._on_writable()

    def _wake_in(self, delay: float) -> None:
        if not self._armed:
            self._armed = True
            self.timers.call_later(delay, self._disarm)

    def _disarm(self) -> None:
        self._armed = False
