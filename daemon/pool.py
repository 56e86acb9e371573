"""A pool of workers for one tool: who is alive, how many are wanted, crash policy.

No sockets here: the supervisor sends and receives; the pool decides.
"""

from __future__ import annotations

import collections
import itertools
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from para.daemon.config import PoolSection
from para.daemon.identities import IdentityRule
from para.daemon.scheduler import PoolQueue
from para.daemon.tasks import TaskRecord
from para.daemon.tools.base import Tool

SPAWNING, READY, STOPPING = "spawning", "ready", "stopping"
OK, BACKOFF, FAILED = "ok", "backoff", "failed"
# A worker that lived this long before dying was not crash-looping.
STABLE_AFTER = 10.0


@dataclass(slots=True)
class WorkerHandle:
    id: str
    pool: str
    pid: int | None = None         # the worker process
    root_pid: int | None = None    # what the fork server started: the worker, or its sandbox
    state: str = SPAWNING
    credit: int = 0
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    spawned_at: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    idle_since: float = field(default_factory=time.monotonic)
    rss: int = 0
    cpu_seconds: float = 0.0
    heartbeats: int = 0
    completed: int = 0
    kill_reason: str | None = None   # set when the supervisor killed or stopped it on purpose
    planned: bool = False            # stopped on purpose (idle, recycled, scaled down): not a crash
    workspace: str | None = None     # the workspace its sandbox is made for (pools that run commands)

    # ---- its state changes, each in one place -----------------------------

    def spawned(self, pid: int) -> None:
        """The fork server started it (or its sandbox) as `pid`."""
        self.pid = self.root_pid = pid

    def heard(self, now: float) -> None:
        """A heartbeat or any message: it is alive."""
        self.last_seen = now

    def ready(self, credit: int, now: float, pid: int | None = None) -> bool:
        """It said Ready with `credit` (and its `pid` as the host sees it, if known);
        False if it was asked to stop while starting (tell it again)."""
        self.pid = pid or self.pid
        self.last_seen = self.idle_since = now
        if self.state == STOPPING:
            return False
        self.credit, self.state = credit, READY
        return True

    def took(self, records: list[TaskRecord]) -> None:
        """It was sent `records`: each uses a unit of its credit until its result comes."""
        for record in records:
            self.tasks[record.spec.id] = record
        self.credit -= len(records)

    def finished(self, task_id: str, now: float) -> None:
        """A task's result came: the credit it used is back, unless the worker is stopping."""
        self.tasks.pop(task_id, None)
        self.completed += 1
        if self.state == READY:
            self.credit += 1
        if not self.tasks:
            self.idle_since = now

    def stop(self, reason: str) -> bool:
        """Stopped on purpose (idle, recycled, scaled, shutdown): no more tasks.
        True if it must be told (it is serving; a starting one is told when it says Ready)."""
        self.kill_reason = reason
        self.planned = True
        self.credit = 0
        tell = self.state == READY
        self.state = STOPPING
        return tell

    def killed(self, reason: str) -> None:
        """Its process tree is being killed: no more tasks, and its exit says why."""
        self.kill_reason = reason
        self.credit = 0

    def exited(self) -> None:
        self.state = STOPPING

    def exit_reason(self, code: int | None, sig: int | None) -> str:
        how = f"killed by {signal.Signals(sig).name}" if sig else f"exited with code {code}"
        reason = f"worker {self.id} (pid {self.pid}) {how}"
        return f"{reason} ({self.kill_reason})" if self.kill_reason else reason

    def unroutable(self) -> None:
        """An assignment could not reach it: it is going away; give it nothing more."""
        self.credit = 0

    def summary(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "id": self.id, "pool": self.pool, "pid": self.pid, "state": self.state, "workspace": self.workspace,
            "tasks": list(self.tasks), "completed": self.completed, "rss": self.rss,
            "cpu_seconds": round(self.cpu_seconds, 3), "heartbeats": self.heartbeats,
            "last_heartbeat_age": round(now - self.last_seen, 3),
            "uptime": round(now - self.spawned_at, 3),
        }


class Pool:
    def __init__(self, name: str, tool: type[Tool], config: PoolSection, options: BaseModel,
                 unavailable: str | None = None) -> None:
        self.name = name
        self.tool = tool
        self.ref = config.tool or tool.name   # what a worker resolves its tool from (tools/registry.py)
        # Why its (plugin) tool cannot be loaded: the pool is failed for good and starts no worker.
        self.unavailable = unavailable
        self.checker = tool()  # admission-time checks of the tool's arguments against its options
        self.config = config
        self.options_model = options
        self.options = options.model_dump(mode="json")
        self.credit = config.credit or tool.default_credit
        self.queue = PoolQueue(config.max_queue, config.max_queue_bytes, workspaces=tool.runs_commands)
        self.workers: dict[str, WorkerHandle] = {}
        self.state = FAILED if unavailable else OK
        self.crashes = 0
        self.last_crash: str | None = None
        self.respawn_timer: int | None = None
        self.spawned = 0
        self.pinned: int | None = None   # workers an operator asked for (paractl scale/drain); None: automatic
        self.pressure = False            # the host is past its CPU or memory threshold: do not grow
        # A tool that runs commands runs each in its task's workspace, with workers per workspace
        # (workspaces.py); a task that names none runs in parad's working directory.
        self.uses_workspace = self.queue.workspaces
        # parad's working directory: where a task that names no workspace runs, and whose owner it runs as.
        self.default_workspace = os.path.realpath(os.getcwd())
        self.identity: IdentityRule | None = None   # whose ids its tasks run with, when parad is root (identities.py)
        self._ids = itertools.count(1)

    @property
    def reads_as_owner(self) -> bool:
        """Its tasks run with the ids of their workspace's owner, switched per task (a read-only tool, parad root)."""
        return self.identity is not None and self.identity.per_task and self.identity.by_owner

    # ---- sizing ------------------------------------------------------------

    def in_flight(self) -> int:
        return sum(len(w.tasks) for w in self.workers.values())

    def wanted(self) -> int:
        """Workers this pool should have now: what an operator pinned, else enough
        credit for its work within bounds, but no growth while the host is pressed."""
        if self.pinned is not None:
            return self.pinned
        if self.uses_workspace:
            needed = sum(self.demand().values())
        else:
            needed = -(-(self.in_flight() + self.queue.runnable) // self.credit)
        # A worker whose task waits on child tasks does not count: its children
        # may need this very pool, and waiting for a worker it holds would deadlock.
        waiting = sum(1 for w in self.workers.values() if any(r.children for r in w.tasks.values()))
        target = max(self.config.min_workers, min(self.config.max_workers + waiting, needed))
        if self.pressure:
            target = min(target, max(self.config.min_workers, self.live_count()))
        return target

    def demand(self) -> dict[str | None, int]:
        """Workers each workspace's work (running and queued) needs, by credit; workspaces with none left out."""
        work: collections.Counter[str | None] = collections.Counter(self.queue.runnable_by_workspace())
        for w in self.workers.values():
            work[w.workspace] += len(w.tasks)
        return {ws: -(-n // self.credit) for ws, n in work.items() if n > 0}

    def short(self) -> list[str | None]:
        """Workspaces whose work needs more workers than they have: those with none first, then the most short."""
        live = collections.Counter(w.workspace for w in self.workers.values() if w.state != STOPPING)
        lack = {ws: need - live[ws] for ws, need in self.demand().items() if need > live[ws]}
        return sorted(lack, key=lambda ws: (live[ws] > 0, -lack[ws]))

    def evictable(self, workspace: str | None) -> WorkerHandle | None:
        """An idle worker that may give way to a worker for `workspace`, the longest idle first: one of a
        workspace with nothing to run; else, for a workspace with no worker at all, one that served a task
        since it started (so two workspaces sharing one worker take turns, each making progress)."""
        runnable = self.queue.runnable_by_workspace()
        starved = not any(w.workspace == workspace and w.state != STOPPING for w in self.workers.values())
        idle = [w for w in self.workers.values()
                if w.state == READY and not w.tasks and w.workspace != workspace
                and (not runnable.get(w.workspace) or (starved and w.completed))]
        return min(idle, key=lambda w: (bool(runnable.get(w.workspace)), w.idle_since), default=None)

    def live_count(self) -> int:
        return sum(1 for w in self.workers.values() if w.state != STOPPING)

    def next_worker_id(self) -> str:
        return f"{self.name}-{next(self._ids)}"

    def new_worker(self, workspace: str | None = None, worker_id: str | None = None) -> WorkerHandle:
        handle = WorkerHandle(worker_id or self.next_worker_id(), self.name, workspace=workspace)
        self.spawned += 1
        self.workers[handle.id] = handle
        return handle

    def idle_surplus(self, now: float) -> list[WorkerHandle]:
        """Ready workers above min_workers that sat idle past idle_timeout."""
        surplus = self.live_count() - max(self.config.min_workers, self.wanted())
        idle = [
            w for w in self.workers.values()
            if w.state == READY and not w.tasks and now - w.idle_since >= self.config.idle_timeout
        ]
        return idle[: max(0, surplus)]

    def surplus_to_stop(self) -> list[WorkerHandle]:
        """Workers above a pinned size, idle ones first (the busy finish their tasks, then stop)."""
        if self.pinned is None:
            return []
        live = [w for w in self.workers.values() if w.state != STOPPING]
        live.sort(key=lambda w: len(w.tasks))
        return live[: max(0, len(live) - self.pinned)]

    def with_credit(self) -> list[WorkerHandle]:
        return [w for w in self.workers.values() if w.state == READY and w.credit > 0]

    # ---- crash policy ------------------------------------------------------

    def record_crash(self, handle: WorkerHandle, reason: str) -> None:
        """Count an unplanned exit; a run of them opens the circuit."""
        lived = time.monotonic() - handle.spawned_at
        if lived >= STABLE_AFTER or handle.completed:
            self.crashes = 1
        else:
            self.crashes += 1
        self.last_crash = reason
        if self.crashes >= self.config.crash_limit:
            self.state = FAILED
        else:
            self.state = BACKOFF

    def respawn_delay(self) -> float:
        if self.crashes == 0:
            return 0.0
        return min(self.config.respawn_backoff * 2 ** (self.crashes - 1), self.config.respawn_backoff_max)

    def record_ready(self) -> None:
        """A worker came up: the pool may leave the failed state (half-open circuit)."""
        if self.state != OK:
            self.state = OK

    def failure_message(self) -> str:
        if self.unavailable:
            return f"pool {self.name!r} is failed: its tool cannot be loaded: {self.unavailable}; then restart parad"
        return (
            f"pool {self.name!r} is failed: its workers crashed {self.crashes} times in a row "
            f"(last: {self.last_crash}); it retries every {self.config.respawn_backoff_max:g}s. "
            f"See parad's log and `paractl status`."
        )

    def summary(self) -> dict[str, Any]:
        states = [w.state for w in self.workers.values()]
        return {
            "name": self.name, "tool": self.tool.name, "state": self.state,
            "workers": len(states), "ready": states.count(READY), "spawning": states.count(SPAWNING),
            "min_workers": self.config.min_workers, "max_workers": self.config.max_workers,
            "queued": self.queue.depth, "running": self.in_flight(), "crashes": self.crashes,
            "last_crash": self.last_crash, "pinned": self.pinned, "pressure": self.pressure,
            "error": self.unavailable,
        }
