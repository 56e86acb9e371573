"""The per-pool task queue: five priorities, fair across sessions, bounded.

Priority 0 is served before 1, and so on. Within a priority, sessions take
turns (round-robin): a client's 10,000-task batch gets one task out, then
another session's single call does, so the call waits for at most the tasks
already running, not for the batch. Within a session, first in, first out.
A task's session is the one it names, else the client that submitted it.

Cancelled tasks are removed lazily (skipped when popped) so cancel is O(1).
A session whose next task belongs to a client in `blocked` (over its output
budget, see outbox.py) is passed over until that client reads; its tasks do
not count toward the workers the pool wants (`runnable`).
"""

from __future__ import annotations

import collections
from collections.abc import Collection, Hashable, Iterator

from para.daemon.tasks import TaskRecord
from para.ipc import messages as m

LEVELS = 5


def session_key(record: TaskRecord) -> Hashable:
    if record.session is not None:
        return record.session
    return record.spec.session or record.owner or b""


class PoolQueue:
    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth
        # One rotation of sessions per priority; each session a FIFO.
        self._levels: list[collections.OrderedDict[Hashable, collections.deque[TaskRecord]]] = [
            collections.OrderedDict() for _ in range(LEVELS)]
        self.depth = 0
        self.blocked: Collection[Hashable] = ()  # owners whose tasks wait: the outbox's set
        self._owners: collections.Counter[Hashable] = collections.Counter()  # queued tasks by owner

    @property
    def runnable(self) -> int:
        """Queued tasks that may start now: those of blocked owners wait."""
        if not self.blocked:
            return self.depth
        return self.depth - sum(self._owners[o] for o in self.blocked if o in self._owners)

    def full(self, adding: int = 1) -> bool:
        return self.depth + adding > self.max_depth

    def _fifo(self, record: TaskRecord) -> collections.deque[TaskRecord]:
        level = self._levels[record.spec.priority]
        key = session_key(record)
        fifo = level.get(key)
        if fifo is None:
            fifo = level[key] = collections.deque()
        return fifo

    def push(self, record: TaskRecord) -> None:
        self._fifo(record).append(record)
        self.depth += 1
        self._owners[record.owner] += 1

    def push_front(self, record: TaskRecord) -> None:
        """A task that goes back (a retry, an unroutable assignment) goes ahead of its session."""
        self._fifo(record).appendleft(record)
        self.depth += 1
        self._owners[record.owner] += 1

    def pop(self) -> TaskRecord | None:
        """The next task to run, passing over sessions whose next task's owner is blocked."""
        blocked = self.blocked
        for level in self._levels:
            turns = len(level)
            while turns:
                turns -= 1
                key, fifo = next(iter(level.items()))
                while fifo and fifo[0].state != m.QUEUED:
                    fifo.popleft()
                if not fifo:
                    del level[key]
                    continue
                if blocked and fifo[0].owner in blocked:
                    level.move_to_end(key)
                    continue
                record = fifo.popleft()
                if fifo:
                    level.move_to_end(key)  # this session's turn is over
                else:
                    del level[key]
                self._left(record)
                return record
        return None

    def discard(self, record: TaskRecord) -> None:
        """Called when a queued task is cancelled; pop() will skip it."""
        self._left(record)

    def _left(self, record: TaskRecord) -> None:
        self.depth -= 1
        n = self._owners[record.owner] - 1
        if n:
            self._owners[record.owner] = n
        else:
            del self._owners[record.owner]

    def queued(self) -> Iterator[TaskRecord]:
        for level in self._levels:
            for fifo in level.values():
                yield from (r for r in fifo if r.state == m.QUEUED)

    def drain(self) -> list[TaskRecord]:
        records = list(self.queued())
        for level in self._levels:
            level.clear()
        self.depth = 0
        self._owners.clear()
        return records
