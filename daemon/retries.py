"""When a task runs again, and how soon: attempts, backoff with jitter, poison tasks.

A task may run up to 1 + `retries` times. By default only a lost attempt
(its worker died) is retried; a task may add `failed` and `timed_out` to its
`retry_on`. Each retry waits `retry_backoff * 2^(attempt-1)` seconds, capped
by the pool's `retry_backoff_max`, times a random factor in [0.5, 1.5) so
that tasks that failed together do not all come back together. A task whose
workers died `poison_after` times in a row is a poison task: it fails
instead of killing workers forever.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from para.daemon.tasks import TaskRecord
from para.ipc import messages as m

RETRYABLE = frozenset({m.LOST, m.FAILED, m.TIMED_OUT})
DEFAULT_RETRY_ON = frozenset({m.LOST})
RETRY_SAFE_DEFAULT_RETRIES = 2   # extra attempts on worker loss for retry-safe tools when a task names none


def policy_for(spec: m.TaskSpec, retry_safe: bool) -> tuple[int, frozenset[str]]:
    """(most attempts, statuses that earn a retry) for a task as submitted."""
    retries = spec.retries if spec.retries is not None else (RETRY_SAFE_DEFAULT_RETRIES if retry_safe else 0)
    retry_on = frozenset(spec.retry_on) if spec.retry_on is not None else DEFAULT_RETRY_ON
    return 1 + retries, retry_on


def backoff(attempt: int, base: float, cap: float, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait after attempt number `attempt` (1 for the first) before the next."""
    return min(cap, base * 2 ** max(0, attempt - 1)) * (0.5 + rng())


def first_start_kept(record: TaskRecord) -> bool:
    """Whether a lost first attempt of `record` would not run again: the store then keeps its start
    before it leaves (journal/store.py record_starts)."""
    return m.LOST not in record.retry_on or record.max_attempts <= 1


def should_retry(record: TaskRecord, status: str) -> bool:
    return (status in record.retry_on and record.attempts < record.max_attempts
            and not record.cancel_requested)


def poisoned(record: TaskRecord, poison_after: int) -> bool:
    return record.worker_deaths >= poison_after
