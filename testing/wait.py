"""Waiting for a condition with a deadline: the one wait of tests and benchmarks (never a bare sleep)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

POLL = 0.02  # seconds between checks: quick to notice, cheap on a loaded 2-core machine


class WaitTimeout(AssertionError):
    """A condition did not come true in time: the expectation behind the wait failed."""


def wait_until(condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll `condition` until it returns something truthy and return that; raise WaitTimeout after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout}s waiting for {what}")
        time.sleep(POLL)


def running(client: Any, task_id: str | None = None, **fields: Any) -> list[dict[str, Any]]:
    """Tasks `client.ps()` shows running, only `task_id` if given, and only those whose `fields` match."""
    return [t for t in client.ps() if t["state"] == "running" and (task_id is None or t["id"] == task_id)
            and all(t.get(key) == value for key, value in fields.items())]


def wait_running(client: Any, task_id: str | None = None, *, count: int = 1, timeout: float = 20.0,
                 what: str | None = None, **fields: Any) -> list[dict[str, Any]]:
    """Wait until at least `count` tasks match `running(client, task_id, **fields)`; return them."""
    if what is None:
        what = f"task {task_id} to run" if task_id else f"{count} task{'s' if count > 1 else ''} to run"
    def enough() -> list[dict[str, Any]] | None:
        found = running(client, task_id, **fields)
        return found if len(found) >= count else None
    return wait_until(enough, timeout, what)
