"""Tasks as the supervisor tracks them, and the table that holds them.

The table is in memory; it is the seam where the SQLite journal (durability)
attaches: every state change goes through `TaskTable` methods. Finished
results are retained up to a count and a total size in bytes (their encoded
size), oldest dropped first (`_retain`/`_evict`: where the journal will take them).
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field

from para.ipc import messages as m


@dataclass(slots=True)
class InputFlow:
    """A running task's streamed stdin as parad sees it (task_input.py): bytes passed on and acknowledged."""
    sent: int = 0           # bytes of Input forwarded to the worker
    acked: int = 0          # bytes the worker says are in the command's stdin
    eof: bool = False       # the owner sent EOF
    closed: bool = False    # the worker takes no more (EOF written, or the command closed its stdin)


@dataclass(slots=True)
class TaskRecord:
    spec: m.TaskSpec
    pool: str
    owner: bytes | None            # ZeroMQ identity of the submitting client
    max_attempts: int
    state: str = m.QUEUED
    attempts: int = 0
    worker: str | None = None
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    result: m.TaskResult | None = None
    cancel_requested: bool = False
    retry_on: frozenset[str] = frozenset({m.LOST})
    worker_deaths: int = 0         # in a row: a poison task kills every worker it reaches
    batch: str | None = None
    followers: list[tuple[bytes, str]] = field(default_factory=list)  # repeats of it: (client, their task id)
    session: object = None         # the scheduler's session, when not the spec's or the owner's (a child's)
    parent: str | None = None      # nested tasks: the task whose command submitted this one
    depth: int = 0
    children: set[str] = field(default_factory=set)  # live children
    size: int = 0                  # bytes of its encoded result, once finished
    arg_bytes: int = 0             # its share of the request it came in: what it holds queued (max_queue_bytes)
    stdin: InputFlow | None = None  # its streamed stdin, once its command started with one open

    def summary(self) -> dict:
        now = time.monotonic()
        return {
            "id": self.spec.id, "tool": self.spec.tool, "pool": self.pool, "state": self.state,
            "attempts": self.attempts, "worker": self.worker, "session": self.spec.session,
            "priority": self.spec.priority, "batch": self.batch, "parent": self.parent,
            "age": round(now - self.submitted, 3),
            "running_for": round(now - self.started, 3) if self.started and self.state == m.RUNNING else None,
        }


# A task to end, with its result and, when that result is a worker's Done as sent, its encoded frame.
Ending = tuple[TaskRecord, m.TaskResult, "bytes | None"]


class TaskTable:
    """Live tasks by id, plus the last finished ones: at most `retention` of them and `max_bytes` of results."""

    def __init__(self, retention: int, max_bytes: int) -> None:
        self.live: dict[str, TaskRecord] = {}
        self.finished: collections.OrderedDict[str, TaskRecord] = collections.OrderedDict()
        self.retention = retention
        self.max_bytes = max_bytes
        self.finished_bytes = 0
        self.counts: collections.Counter[str] = collections.Counter()
        self.by_pool: collections.Counter[tuple[str, str]] = collections.Counter()
        self.limits: collections.Counter[tuple[str, str]] = collections.Counter()  # (pool, limit) that ended commands

    def get(self, task_id: str) -> TaskRecord | None:
        return self.live.get(task_id) or self.finished.get(task_id)

    def add(self, record: TaskRecord) -> None:
        self.live[record.spec.id] = record

    def finish(self, record: TaskRecord, result: m.TaskResult, size: int) -> None:
        """`record` ended with `result`, whose encoded size is `size` bytes."""
        record.state = result.status
        record.result = result
        record.size = size
        self.live.pop(record.spec.id, None)
        self.counts[result.status] += 1
        self.by_pool[record.pool, result.status] += 1
        if result.limit:
            self.limits[record.pool, result.limit] += 1
        self._retain(record)

    def _retain(self, record: TaskRecord) -> None:
        if not self.retention or not self.max_bytes:
            return
        self.finished[record.spec.id] = record
        self.finished_bytes += record.size
        while self.finished and (len(self.finished) > self.retention or self.finished_bytes > self.max_bytes):
            self._evict()

    def _evict(self) -> None:
        _, oldest = self.finished.popitem(last=False)
        self.finished_bytes -= oldest.size

    def retained(self) -> dict[str, int]:
        return {"results": len(self.finished), "bytes": self.finished_bytes}
