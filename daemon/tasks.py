"""Tasks as the supervisor tracks them, and the table that holds them.

Live tasks are in memory. A finished task leaves the table for its
`ResultStore`: the journal (daemon/journal/), which keeps it on disk under its
retention limits, or, with `durability: off`, `MemoryResults`, which keeps
the last ones up to a count and a total size in bytes, oldest dropped first.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from para.ipc import codec

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
    ended: float | None = None     # time.time() it ended
    accepted: float = field(default_factory=time.time)   # wall clock, for the journal and retention

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


class TaskStore(Protocol):
    """Where tasks are kept beyond memory: the journal (daemon/journal/), or MemoryResults with durability off.

    Helpers say what changed; the supervisor commits once per loop turn (commits.py) and holds
    what reports a commit's contents (an Accepted, a Done) until it went through."""
    durable: bool    # whether it survives parad
    trouble: str | None   # why it cannot write now (new tasks are refused), else None
    pending: bool    # whether changes wait for a commit

    def changed(self, record: TaskRecord, spec: bool = False) -> None:
        """`record` was accepted or changed state (and its spec, if `spec`)."""

    def keep(self, record: TaskRecord, wire: bytes) -> bool:
        """`record` ended; `wire` is its encoded Done. Whether telling of its end must wait for the
        commit that keeps it: not for a task nobody was told of (`untold`), nor without a journal."""

    def batch(self, batch_id: str, on_failure: str, after: dict[str, list[str]], first_failure: str | None,
              accepted: float, ended: float | None) -> None:
        """A batch was accepted, failed first, or ended."""

    def untold(self, record: TaskRecord) -> None:
        """`record` was just accepted without telling its client: keeping it may wait for its start
        or its end (journal/store.py)."""

    def record_starts(self, records: list[TaskRecord]) -> bool:
        """`records` are about to start: keep that first; False if it cannot be kept (they must not start)."""

    def due_in(self) -> float | None:
        """Seconds until what changed must be committed (<= 0: now); None if nothing waits."""

    def commit(self) -> bool:
        """Keep what changed; False if it could not be (`trouble` says why)."""

    def due(self) -> bool:
        """Whether the oldest change has waited long enough that it must be committed now."""

    def lookup(self, task_id: str) -> dict[str, Any] | None:
        """A finished task's {"task": summary, "result": TaskResult}, if it is kept."""

    def done_frame(self, task_id: str) -> bytes | None:
        """A finished task's encoded Done, if it is kept."""

    def prune(self, older_than: float | None) -> dict[str, int]:
        """Drop finished tasks older than `older_than` seconds, and past the retention limits; what went."""

    def retained(self) -> dict[str, int]:
        """How many finished tasks are kept, and their bytes."""

    def retention_hint(self) -> str:
        """Why a task may be missing: how long finished tasks are kept."""

    def summary(self) -> dict[str, Any]:
        """For status and metrics: its durability and, for the journal, its commits, rows and trouble."""


class MemoryResults:
    """With durability off: nothing on disk, and the last finished tasks in memory, at most
    `retention` of them and `max_bytes` of results."""
    durable = False
    trouble = None
    pending = False

    def __init__(self, retention: int, max_bytes: int) -> None:
        self.finished: collections.OrderedDict[str, TaskRecord] = collections.OrderedDict()
        self.retention = retention
        self.max_bytes = max_bytes
        self.finished_bytes = 0

    def changed(self, record: TaskRecord, spec: bool = False) -> None:
        pass

    def batch(self, batch_id: str, on_failure: str, after: dict[str, list[str]], first_failure: str | None,
              accepted: float, ended: float | None) -> None:
        pass

    def untold(self, record: TaskRecord) -> None:
        pass

    def record_starts(self, records: list[TaskRecord]) -> bool:
        return True

    def due_in(self) -> float | None:
        return None

    def commit(self) -> bool:
        return True

    def due(self) -> bool:
        return False

    def keep(self, record: TaskRecord, wire: bytes) -> bool:
        if self.retention and self.max_bytes:
            self.finished[record.spec.id] = record
            self.finished_bytes += record.size
            self._trim()
        return False

    def _trim(self, before: float = 0.0) -> int:
        gone = 0
        while self.finished and (len(self.finished) > self.retention or self.finished_bytes > self.max_bytes
                                 or (next(iter(self.finished.values())).ended or 0.0) < before):
            _, oldest = self.finished.popitem(last=False)
            self.finished_bytes -= oldest.size
            gone += 1
        return gone

    def lookup(self, task_id: str) -> dict[str, Any] | None:
        record = self.finished.get(task_id)
        return None if record is None else {"task": record.summary(), "result": record.result}

    def done_frame(self, task_id: str) -> bytes | None:
        record = self.finished.get(task_id)
        return None if record is None else codec.encode(m.Done(record.result))

    def prune(self, older_than: float | None) -> dict[str, int]:
        held = self.finished_bytes
        gone = self._trim(time.time() - older_than if older_than is not None else 0.0)
        return {"tasks": gone, "bytes": held - self.finished_bytes, "files": 0}

    def retained(self) -> dict[str, int]:
        return {"results": len(self.finished), "bytes": self.finished_bytes}

    def summary(self) -> dict[str, Any]:
        return {"durability": "off"}

    def retention_hint(self) -> str:
        return ("with durability off, finished results are kept in memory up to daemon.finished_task_retention "
                "results and daemon.finished_task_bytes bytes, oldest dropped first, and not across restarts")


class TaskTable:
    """Live tasks by id; their changes, and finished tasks, go to `store`."""

    def __init__(self, store: TaskStore) -> None:
        self.live: dict[str, TaskRecord] = {}
        self.store = store
        self.counts: collections.Counter[str] = collections.Counter()
        self.by_pool: collections.Counter[tuple[str, str]] = collections.Counter()
        self.limits: collections.Counter[tuple[str, str]] = collections.Counter()  # (pool, limit) that ended commands

    def lookup(self, task_id: str) -> dict[str, Any] | None:
        """{"task": summary, "result": TaskResult or None} of a live or kept finished task."""
        record = self.live.get(task_id)
        if record is not None:
            return {"task": record.summary(), "result": record.result}
        return self.store.lookup(task_id)

    def done_frame(self, task_id: str) -> bytes | None:
        return self.store.done_frame(task_id)

    def prune(self, older_than: float | None) -> dict[str, int]:
        return self.store.prune(older_than)

    def add(self, record: TaskRecord) -> None:
        self.live[record.spec.id] = record

    def finish(self, record: TaskRecord, result: m.TaskResult, wire: bytes) -> bool:
        """`record` ended with `result`, whose encoded Done is `wire`; whether telling its owner must
        wait for the commit that keeps it (TaskStore.keep)."""
        record.state = result.status
        record.result = result
        record.size = len(wire)
        record.ended = time.time()
        self.live.pop(record.spec.id, None)
        self.counts[result.status] += 1
        self.by_pool[record.pool, result.status] += 1
        if result.limit:
            self.limits[record.pool, result.limit] += 1
        return self.store.keep(record, wire)

    def retained(self) -> dict[str, int]:
        return self.store.retained()

    def retention_hint(self) -> str:
        return self.store.retention_hint()
