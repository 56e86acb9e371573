"""Every timer of the supervisor loop, in one heap."""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable


class Timers:
    """One-shot callbacks at monotonic deadlines; `run_due` fires the ripe ones."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cancelled: set[int] = set()

    def call_at(self, when: float, callback: Callable[[], None]) -> int:
        handle = next(self._seq)
        heapq.heappush(self._heap, (when, handle, callback))
        return handle

    def call_later(self, delay: float, callback: Callable[[], None]) -> int:
        return self.call_at(time.monotonic() + delay, callback)

    def cancel(self, handle: int) -> None:
        self._cancelled.add(handle)

    def timeout_ms(self, cap: float = 1.0) -> int:
        """Milliseconds until the next timer, at most `cap` seconds."""
        while self._heap and self._heap[0][1] in self._cancelled:
            self._cancelled.discard(heapq.heappop(self._heap)[1])
        if not self._heap:
            return int(cap * 1000)
        delay = self._heap[0][0] - time.monotonic()
        return max(0, min(int(delay * 1000) + 1, int(cap * 1000)))

    def run_due(self) -> None:
        now = time.monotonic()
        while self._heap and self._heap[0][0] <= now:
            _, handle, callback = heapq.heappop(self._heap)
            if handle in self._cancelled:
                self._cancelled.discard(handle)
                continue
            callback()
