"""The per-pool task queue: priority order, FIFO within a priority, bounded.

Cancelled tasks are removed lazily (skipped when popped) so cancel is O(1).
"""

from __future__ import annotations

import heapq
import itertools

from para.daemon.tasks import TaskRecord
from para.ipc import messages as m


class PoolQueue:
    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth
        self._heap: list[tuple[int, int, TaskRecord]] = []
        self._seq = itertools.count()
        self.depth = 0

    def full(self, adding: int = 1) -> bool:
        return self.depth + adding > self.max_depth

    def push(self, record: TaskRecord) -> None:
        heapq.heappush(self._heap, (record.spec.priority, next(self._seq), record))
        self.depth += 1

    def push_front(self, record: TaskRecord) -> None:
        """A retried task goes ahead of everything at its priority."""
        heapq.heappush(self._heap, (record.spec.priority, -next(self._seq), record))
        self.depth += 1

    def pop(self) -> TaskRecord | None:
        while self._heap:
            record = heapq.heappop(self._heap)[2]
            if record.state == m.QUEUED:
                self.depth -= 1
                return record
        return None

    def discard(self, record: TaskRecord) -> None:
        """Called when a queued task is cancelled; pop() will skip it."""
        self.depth -= 1

    def drain(self) -> list[TaskRecord]:
        records = [r for _, _, r in self._heap if r.state == m.QUEUED]
        self._heap.clear()
        self.depth = 0
        return records
