"""One upstream request for identical requests: answers from the cache, or shared while in flight.

`Memo.get(key, produce)` returns a fresh cached value for `key`; else, if a
task is already producing it, waits for that one; else produces it itself.
The production runs as a task of its own, so a waiter that is cancelled (its
task cancelled, or its timeout) cancels nothing for the others; it runs on to
its own end (bounded by the HTTP client's total timeout) and fills the cache.
Fetch and search use the same class, with keys that cannot collide.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from para.web.cache import ByteLRU

T = TypeVar("T")


@dataclass(slots=True)
class Produced(Generic[T]):
    """What a producer made: the value, how many bytes it holds, and how long it may be reused."""
    value: T
    size: int
    ttl: float


@dataclass(slots=True)
class Got(Generic[T]):
    value: T
    ttl: float          # seconds it stays fresh (0: not cached)
    how: str            # "cache", "shared" (joined a request in flight) or "fetched"


class Memo:
    """Cache plus in-flight deduplication over one ByteLRU."""

    def __init__(self, cache: ByteLRU) -> None:
        self.cache = cache
        self._flying: dict[Hashable, asyncio.Task[Produced[Any]]] = {}
        self.waiters: dict[Hashable, int] = {}   # tasks waiting on each production (tests, stats)
        self.produced = 0

    async def get(self, key: Hashable, produce: Callable[[], Awaitable[Produced[T]]]) -> Got[T]:
        hit = self.cache.get(key)
        if hit is not None:
            return Got(hit[0], hit[1], "cache")
        task = self._flying.get(key)
        how = "shared"
        if task is None:
            task = asyncio.get_running_loop().create_task(self._produce(key, produce))
            task.add_done_callback(_retrieved)
            self._flying[key] = task
            how = "fetched"
        self.waiters[key] = self.waiters.get(key, 0) + 1
        try:
            made = await asyncio.shield(task)
        finally:
            self.waiters[key] -= 1
            if not self.waiters[key]:
                del self.waiters[key]
        return Got(made.value, made.ttl, how)

    async def _produce(self, key: Hashable, produce: Callable[[], Awaitable[Produced[T]]]) -> Produced[T]:
        try:
            made = await produce()
            self.produced += 1
            self.cache.put(key, made.value, made.size, made.ttl)
            return made
        finally:
            self._flying.pop(key, None)

    async def close(self) -> None:
        """Cancel productions nobody waits for any more (at worker stop)."""
        for task in list(self._flying.values()):
            task.cancel()
        await asyncio.gather(*self._flying.values(), return_exceptions=True)


def _retrieved(task: asyncio.Task[Any]) -> None:
    # A failure every waiter gave up on is still looked at, so asyncio does not log it as lost.
    if not task.cancelled():
        task.exception()
