"""A response cache bounded by bytes (least recently used out first), and HTTP freshness.

The cache is shared by every task of a worker, so it is a *shared* cache in
RFC 9111's sense: `private`, `no-store` and `no-cache` responses are not kept,
`s-maxage` wins over `max-age`, and a response to a request that carried
credentials is kept only when it says `public` or `s-maxage`. A response that
says nothing about its freshness is not kept (no heuristic freshness: an agent
asking again should see the page as it is now). Every lifetime is capped by the
pool's `cache_ttl_max`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

# Statuses a shared cache may store when the response gives an explicit lifetime.
CACHEABLE_STATUS = frozenset({200, 203, 204, 300, 301, 302, 303, 307, 308, 404, 405, 410, 414, 501})


@dataclass(slots=True)
class _Entry:
    value: Any
    size: int
    expires: float


class ByteLRU:
    """Values kept until they expire, at most `max_bytes` of them (as their producer sized them)."""

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = self.misses = 0
        self._clock = clock
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> tuple[Any, float] | None:
        """(value, seconds it stays fresh) or None if absent or stale."""
        entry = self._entries.get(key)
        left = entry.expires - self._clock() if entry else 0.0
        if entry is None or left <= 0:
            if entry is not None:
                self._drop(key)
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry.value, left

    def put(self, key: Hashable, value: Any, size: int, ttl: float) -> bool:
        """Keep `value` for `ttl` seconds; False if it is not kept (no lifetime, or larger than a
        quarter of the cache, which would flush everything else for one page)."""
        if key in self._entries:
            self._drop(key)
        if ttl <= 0 or size > self.max_bytes // 4:
            return False
        while self._entries and self.bytes + size > self.max_bytes:
            self._drop(next(iter(self._entries)))
        self._entries[key] = _Entry(value, size, self._clock() + ttl)
        self.bytes += size
        return True

    def _drop(self, key: Hashable) -> None:
        self.bytes -= self._entries.pop(key).size


def cache_control(value: str) -> dict[str, str | None]:
    """`Cache-Control` directives by lower-case name (value None for a bare directive)."""
    out: dict[str, str | None] = {}
    for part in value.split(","):
        name, eq, arg = part.strip().partition("=")
        if name:
            out.setdefault(name.strip().lower(), arg.strip().strip('"') if eq else None)
    return out


def shared_ttl(status: int, headers: Mapping[str, str], ttl_max: float,
               credentials: bool = False, now: float | None = None) -> float:
    """Seconds a shared cache may serve this response without asking again (0: do not keep it)."""
    if status not in CACHEABLE_STATUS or headers.get("Vary", "").strip() == "*":
        return 0.0
    cc = cache_control(headers.get("Cache-Control", ""))
    if {"no-store", "no-cache", "private"} & cc.keys():
        return 0.0
    if credentials and not ({"public", "s-maxage"} & cc.keys()):
        return 0.0
    lifetime = _lifetime(cc, headers, time.time() if now is None else now)
    age = _seconds(headers.get("Age")) or 0
    return max(0.0, min(lifetime - age, ttl_max))


def _lifetime(cc: dict[str, str | None], headers: Mapping[str, str], now: float) -> float:
    for directive in ("s-maxage", "max-age"):
        if directive in cc:
            return _seconds(cc[directive]) or 0
    expires = _http_date(headers.get("Expires"))
    if expires is None:
        return 0     # no Expires, or an invalid one (which means "already expired")
    date = _http_date(headers.get("Date"))
    return expires - (date if date is not None else now)


def _seconds(text: str | None) -> int | None:
    try:
        return max(0, int(text)) if text is not None else None
    except ValueError:
        return None


def _http_date(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
