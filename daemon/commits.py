"""When the loop commits the task store, and what leaves after it (the outbox's fence).

A commit is owed to a client only when a frame waits for it (an Accepted, a
Done: `Outbox.holding`); otherwise what changed was told to nobody, and a
crash that takes it back takes back nothing acknowledged (a task submitted
without an ack is resubmitted by its client's resume). So:

- frames wait: commit now, unless more requests or results wait to be
  read (`more_waiting`) and the oldest change is younger than commit_interval:
  then the next turn commits with it (group commit);
- nothing waits: the changes wait too, until the store says they are due
  (`due_in`: commit_interval after the oldest, or, for a task accepted
  without an ack, UNTOLD_WAIT or its end, journal/store.py), a timer
  bringing the loop back then. A quick `run()` thus costs one commit, its
  row written once with its end, and so does each task of a `map()`.

Starts of tasks that may not run twice are committed by the store itself
before their assignment leaves (`record_starts`). While the store cannot
write, fenced frames wait and a timer brings the loop back every RETRY_EVERY
seconds to try again (journal/store.py).
"""

from __future__ import annotations

import time
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
                 retry_every: float, on_writable: Callable[[], None]) -> None:
        self.store = store
        self.outbox = outbox
        self.timers = timers
        self._more_waiting = more_waiting   # whether messages wait to be read now
        self.retry_every = retry_every
        self._on_writable = on_writable     # the store writes again after trouble
        self._wake_at: float | None = None   # when a timer brings the loop back
        self._timer: int | None = None

    def turn(self, force: bool = False) -> None:
        """Commit what changed if it is owed now (always if `force`); then what it records may leave."""
        store = self.store
        if not force:
            if not self.outbox.holding:
                left = store.due_in()
                if left is not None and left > 0:
                    self._wake_in(left)
                    return
            elif store.pending and not store.due() and self._more_waiting():
                return   # the next turn comes at once, and commits with it
        in_trouble = store.trouble is not None
        if not store.commit():
            self._wake_in(self.retry_every)
            return
        left = store.due_in()   # tasks accepted untold wait on (journal/store.py)
        if left is not None:
            self._wake_in(max(0.0, left))
        self.outbox.committed()
        if in_trouble:
            self._on_writable()

    def _wake_in(self, delay: float) -> None:
        at = time.monotonic() + delay
        if self._wake_at is None or at < self._wake_at:
            if self._timer is not None:
                self.timers.cancel(self._timer)
            self._wake_at = at
            self._timer = self.timers.call_at(at, self._woken)

    def _woken(self) -> None:
        self._wake_at = self._timer = None
