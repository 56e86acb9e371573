"""When the loop commits the task store, and what leaves after it (the outbox's fence).

Once per loop turn, what changed is committed, then the frames that report
it (an Accepted, a Done) may leave. Group commit: while more requests or
results wait to be read (`more_waiting`), the commit waits for the next
turn, up to commit_interval after the oldest change. So anything a client
can see (a reply, `ps`) of a task that may not run again unnoticed is
committed by the time it sees it.

A task the store lets wait (journal/store.py: a task accepted without an
ack, written at its start if that must be kept, else with its end, or after
UNTOLD_WAIT) is not a change for this: the store says when it is due
(`due_in`), and a timer brings the loop back then. The end of such a task
that was never written does not wait for a commit at all: its Done leaves at
once and its row follows within QUIET_WAIT, with others (`batched` only). A
quick `run()` or each task of a `map()` of a retry-safe tool is thus one row,
written after its Done left, a few to a commit.

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
        """Commit what changed, unless grouped with the next turn's (never if `force`); then what it records may leave."""
        store = self.store
        if not force and store.pending and not store.due() and self._more_waiting():
            return   # the next turn comes at once, and commits with it
        in_trouble = store.trouble is not None
        if not store.commit():
            self._wake_in(self.retry_every)
            return
        left = store.due_in()   # tasks accepted untold wait on (journal/store.py)
        if left is not None:
            self._wake_in(max(0.0, left))
        elif self._timer is not None:   # nothing left to commit: no turn for nothing
            self.timers.cancel(self._timer)
            self._woken()
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
