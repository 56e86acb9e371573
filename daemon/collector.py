"""Python's cyclic garbage collector, set for processes that serve a loop for hours.

Everything parad or a worker builds before it serves (modules, pydantic
schemas, the config, pools) lives as long as the process, yet a full
collection walks all of it again: with the default thresholds that is every
~70,000 allocations, a few times a second under load. `gc.freeze()` moves
those objects out of the collector's sight (they are never garbage), and a
larger first threshold makes the young collections, which are per message
what most of the loop's allocations are, rarer. Objects are still freed by
reference counting at once; only cycles wait a little longer. In a worker,
frozen objects inherited from the fork server also stay untouched, so their
pages stay shared (the fork server freezes before it forks: a worker's own
call then collects only what it built since).
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000   # allocations between young collections (default 700)


def serve_long() -> None:
    """Freeze what exists now and collect less often; call once, just before the loop starts."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
