"""Batches from the client's side: a plan of tasks with dependencies, and a handle on it.

A batch spec (a dict, as read from YAML or JSON):

    on_failure: fail_fast          # or: continue
    tasks:
      - id: find                   # names the task within the batch
        tool: glob
        args: {patterns: ["*.py"], root: .}
      - id: count
        tool: bash
        after: [find]              # runs when `find` has succeeded
        args: {command: "echo ${find.value.count} files"}
        timeout: 30                # task options: timeout, priority, retries, retry_on, retry_backoff

A bash task that names no `cwd` runs in the directory the batch was sent
from. It gets the pool's environment (plus the `env` it names): a batch
sends no caller environment, which each of its thousands of tasks would repeat.

References in string arguments: `${NAME.stdout}`, `${NAME.stderr}`,
`${NAME.exit_code}`, `${NAME.value.KEY}` (NAME must be in the task's `after`),
and `${cwd}`, the directory the batch was sent from. See para.daemon.batch_plan.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable
from typing import Any, Protocol, TypeVar

from para.client.context import caller_cwd, with_caller_context
from para.client.errors import InvalidRequest
from para.client.result import Result
from para.ipc import messages as m
from para.ipc.options import options_except

T = TypeVar("T")

# A batch task has no stream (its output reaches the client as its result), no session (the
# batch is one: its tasks take turns with other sessions as one) and no idempotency_key.
BATCH_TASK_OPTIONS = options_except("stream", "session", "idempotency_key")
TASK_KEYS = {"id", "tool", "args", "after", *BATCH_TASK_OPTIONS}


def batch_message(req: int, batch_id: str, spec: dict[str, Any], context_tools: Collection[str] = ()) -> m.SubmitBatch:
    """The SubmitBatch for `spec`; InvalidRequest naming what is malformed. Tasks of pools in
    `context_tools` run in the sender's workspace and cwd unless they name theirs (client/context.py)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("tasks"), list):
        raise InvalidRequest("a batch is a mapping with a 'tasks' list (and optionally 'on_failure')")
    extra = set(spec) - {"tasks", "on_failure"}
    if extra:
        raise InvalidRequest(f"unknown batch key(s): {', '.join(sorted(extra))}; use tasks and on_failure")
    tasks, after = [], {}
    cwd = caller_cwd()
    for n, task in enumerate(spec["tasks"]):
        where = f"tasks[{n}]"
        if not isinstance(task, dict) or not isinstance(task.get("id"), str) or not isinstance(task.get("tool"), str):
            raise InvalidRequest(f"{where}: each task needs a string 'id' and a string 'tool'")
        unknown = set(task) - TASK_KEYS
        if unknown:
            raise InvalidRequest(f"{where} ({task['id']}): unknown key(s) {', '.join(sorted(unknown))}; "
                                 f"a task has {', '.join(sorted(TASK_KEYS))}")
        deps = task.get("after", [])
        if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
            raise InvalidRequest(f"{where} ({task['id']}): 'after' must be a list of task ids")
        task_id = f"{batch_id}:{task['id']}"
        options = {k: task[k] for k in BATCH_TASK_OPTIONS if k in task}
        args = task.get("args") or {}
        if isinstance(args, dict):
            args, options = with_caller_context(task["tool"], dict(args), options, context_tools, env=False)
        tasks.append(m.TaskSpec(task_id, task["tool"], args, **options))
        if deps:
            after[task_id] = [f"{batch_id}:{d}" for d in deps]
    return m.SubmitBatch(req, batch_id, tasks, after, spec.get("on_failure", "fail_fast"), cwd)


def track_tasks(msg: m.SubmitBatch, make: Callable[[m.TaskSpec], T], registry: dict[str, T]) -> dict[str, T]:
    """A handle per task of `msg`, put in the client's `registry` by task id; returned by their names in the batch."""
    handles = {}
    for spec in msg.tasks:
        handle = registry[spec.id] = make(spec)
        handle.batch = msg.batch   # a lost batch task is not submitted again alone (client/resume.py)
        handles[spec.id.split(":", 1)[1]] = handle
    return handles


class TaskFuture(Protocol):
    def done(self) -> bool: ...

    def outcome(self) -> Result: ...


class BatchClient(Protocol):
    """What a BatchHandle asks of its Client."""

    def _query(self, what: str, arg: Any = None) -> Any: ...

    def _wait_for(self, condition: Callable[[], bool], timeout: float | None, what: str) -> None: ...

    def cancel(self, *tasks: Any, session: str | None = None) -> dict[str, list[str]]: ...

    def _forget(self, futures: Iterable[Any]) -> None: ...


class BatchHandle:
    """A running batch: its tasks' futures by name, its progress, its results."""

    def __init__(self, client: BatchClient, batch_id: str, futures: dict[str, TaskFuture]) -> None:
        self.id = batch_id
        self._client = client
        self.futures = futures

    def progress(self) -> dict[str, Any]:
        """Totals by state, done, failed, skipped, throughput (tasks/s), error_rate, eta (s), complete."""
        return self._client._query("batch", self.id)

    def done(self) -> bool:
        return all(f.done() for f in self.futures.values())

    def wait(self, timeout: float | None = None) -> None:
        self._client._wait_for(self.done, timeout, f"batch {self.id}")

    def results(self, timeout: float | None = None) -> dict[str, Result]:
        """Wait for every task; each one's Result by name (failed and skipped ones too, never raised)."""
        self.wait(timeout)
        return {name: f.outcome() for name, f in self.futures.items()}

    def as_completed(self, timeout: float | None = None):
        """Yield (name, Result) as tasks finish."""
        deadline = None if timeout is None else time.monotonic() + timeout
        left = dict(self.futures)
        while left:
            finished = [n for n, f in left.items() if f.done()]
            if not finished:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                self._client._wait_for(lambda: any(f.done() for f in left.values()), remaining, f"batch {self.id}")
                continue
            for name in finished:
                yield name, left.pop(name).outcome()

    @property
    def ok(self) -> bool:
        return self.done() and all(f.outcome().ok for f in self.futures.values())

    def cancel(self) -> dict[str, list[str]]:
        """Cancel every task of the batch that has not finished."""
        return self._client.cancel(session=self.id)

    def close(self) -> None:
        self._client._forget(self.futures.values())
