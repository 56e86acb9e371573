"""The per-pool task queue: five priorities, fair across sessions, bounded.

Priority 0 is served before 1, and so on. Within a priority, sessions take
turns (round-robin): a client's 10,000-task batch gets one task out, then
another session's single call does, so the call waits for at most the tasks
already running, not for the batch. Within a session, first in, first out.
A task's session is the one it names, else the client that submitted it.

Cancelled tasks are removed lazily (skipped when popped) so cancel is O(1).
A client over its output budget (see outbox.py) has its sessions passed over
until it reads.
"""

from __future__ import annotations

import collections
from collections.abc import Container, Hashable, Iterator

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

    def push_front(self, record: TaskRecord) -> None:
        """A task that goes back (a retry, an unroutable assignment) goes ahead of its session."""
        self._fifo(record).appendleft(record)
        self.depth += 1

    def pop(self, blocked: Container[Hashable] = ()) -> TaskRecord | None:
        """The next task to run; a session whose next task's owner is in `blocked` (over
        its output budget, see outbox.py) is passed over, so it waits and others go ahead."""
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
                self.depth -= 1
                return record
        return None

    def discard(self, record: TaskRecord) -> None:
        """Called when a queued task is cancelled; pop() will skip it."""
        self.depth -= 1

    def queued(self) -> Iterator[TaskRecord]:
        for level in self._levels:
            for fifo in level.values():
                yield from (r for r in fifo if r.state == m.QUEUED)

    def drain(self) -> list[TaskRecord]:
        records = list(self.queued())
        for level in self._levels:
            level.clear()
        self.depth = 0
        return records
