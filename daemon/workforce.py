"""The worker processes: start, stop, kill, and keep each pool the size it wants.

A `WorkerHandle` (pool.py) owns its state changes; this module owns the
verbs that reach a process (a Spawn to the fork server, a Stop on the command
channel, a kill of the process tree) and reconciles every pool the core asks
for, once per loop turn: grow toward what it wants, honouring crash backoff,
and shrink idle or pinned surplus. The heartbeat check, run by a timer, kills
what fell silent; the pool is told of the exit by the fork server's report.
"""

from __future__ import annotations

import collections
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Protocol

import psutil

from para.daemon import isolation
from para.daemon.config import Config
from para.daemon.core import Ports
from para.daemon.isolation import PoolIsolation
from para.daemon.pool import BACKOFF, FAILED, OK, READY, SPAWNING, STOPPING, Pool, WorkerHandle
from para.daemon.timers import Timers
from para.daemon.workspaces import WorkspaceError, WorkspacePolicy
from para.ipc import messages as m
from para.sandbox import cgroup, tree

log = logging.getLogger("parad")

SPAWN_TIMEOUT = 10.0   # seconds a new worker has to say Ready


class WorkforceCore(Protocol):
    config: Config
    pools: dict[str, Pool]
    workspaces: WorkspacePolicy
    timers: Timers
    ports: Ports
    stopping: bool

    def want_maintain(self, pool: Pool) -> None: ...

    def workers(self) -> Iterator[WorkerHandle]: ...


class Workforce:
    def __init__(self, core: WorkforceCore, spawn: Callable[[m.Spawn], None], plans: Mapping[str, PoolIsolation],
                 runtime_dir: Path, fail_workspace: Callable[[Pool, str | None, str], None]) -> None:
        self.core = core
        self._spawn_request = spawn   # to the fork server
        self._fail_workspace = fail_workspace   # end a workspace's queued tasks, saying why (lifecycle.py)
        self.plans = plans
        self.runtime_dir = runtime_dir

    def maintain(self, pool: Pool) -> None:
        """Grow the pool toward what it wants, honouring crash backoff; shrink idle surplus;
        give workspaces short of workers their share."""
        if self.core.stopping or pool.respawn_timer is not None or pool.unavailable:
            return
        for worker in pool.surplus_to_stop():
            self.stop(worker, f"scaled to {pool.pinned} by an operator")
        deficit = pool.wanted() - pool.live_count()
        if deficit <= 0:
            if pool.state != OK and any(w.state == READY for w in pool.workers.values()):
                pool.record_ready()  # a healthy worker is serving: close the circuit
            for worker in pool.idle_surplus(time.monotonic()):
                self.stop(worker, "idle")
            if pool.uses_workspace and pool.state == OK:
                self._rebalance(pool)
            return
        if pool.state in (BACKOFF, FAILED):
            if any(w.state == SPAWNING for w in pool.workers.values()):
                return
            delay = pool.config.respawn_backoff_max if pool.state == FAILED else pool.respawn_delay()
            pool.respawn_timer = self.core.timers.call_later(delay, lambda: self._respawn(pool))
            return
        for workspace in self._spawn_order(pool, deficit):
            self._spawn(pool, workspace)

    @staticmethod
    def _spawn_order(pool: Pool, deficit: int) -> list[str | None]:
        """The workspaces the next `deficit` workers are for: those short of workers first, then the default."""
        if not pool.uses_workspace:
            return [None] * deficit
        live = collections.Counter(w.workspace for w in pool.workers.values() if w.state != STOPPING)
        order = [ws for ws, n in pool.demand().items() for _ in range(max(0, n - live[ws]))]
        return (order + [pool.default_workspace] * deficit)[:deficit]

    def _rebalance(self, pool: Pool) -> None:
        """Workspaces short of workers in a pool at its size: a new worker while there is room
        (max_workers, or the pinned size, and no host pressure), else an idle worker gives way."""
        cap = pool.pinned if pool.pinned is not None else pool.config.max_workers
        for workspace in pool.short():
            if pool.live_count() < cap and not pool.pressure:
                self._spawn(pool, workspace)
                continue
            idle = pool.evictable(workspace)
            if idle is None:
                return   # every worker is busy: maintain runs again when one has finished
            self.stop(idle, f"gives way to workspace {workspace}")
            self._spawn(pool, workspace)

    def _respawn(self, pool: Pool) -> None:
        pool.respawn_timer = None
        if not self.core.stopping and pool.live_count() < pool.wanted():
            self._spawn(pool, self._spawn_order(pool, 1)[0])  # one at a time until a worker proves healthy

    def _spawn(self, pool: Pool, workspace: str | None) -> None:
        """Ask the fork server for a worker (for `workspace`). A workspace that can no longer be one
        (deleted, made a symlink, made unreadable since its tasks were admitted) gets no worker: its
        queued tasks fail, saying why, instead of crashing workers and opening the pool's circuit."""
        problem = self._unusable(pool, workspace)
        if problem is not None:
            log.warning("pool %s: %s", pool.name, problem)
            self._fail_workspace(pool, workspace, problem)
            return
        worker_id = pool.next_worker_id()
        d = self.core.config.daemon
        ids, error, caps = None, None, None
        if pool.identity is not None:   # parad is root: the worker acts as its workspace's identity (identities.py)
            ids, error = pool.identity.for_worker(workspace)
            caps = pool.identity.worker_caps(ids)
        try:
            settings = isolation.worker_settings(
                self.plans[pool.name], worker_id, runtime_dir=self.runtime_dir, heartbeat_interval=d.heartbeat_interval,
                credit=pool.credit, options=pool.options, max_message_size=d.max_message_size, workspace=workspace,
                ids=ids, identity_error=error, keep_caps=caps, caller_path=_caller_path(pool, workspace))
            self._spawn_request(m.Spawn(worker_id, pool.name, pool.ref, settings))
        except OSError as exc:
            log.error("pool %s: cannot start a worker for %s: %s", pool.name, workspace or "it", exc)
            self._fail_workspace(pool, workspace, f"parad cannot start a worker for it: {exc}")
            return
        pool.new_worker(workspace, worker_id)

    def _unusable(self, pool: Pool, workspace: str | None) -> str | None:
        """Why a worker cannot be made for `workspace` now, or None."""
        if workspace is None:
            return None
        if workspace == pool.default_workspace:
            return None if os.path.isdir(workspace) else f"parad's working directory {workspace} is gone"
        try:
            now = self.core.workspaces.check(workspace, fresh=True)
        except WorkspaceError as exc:
            return str(exc)
        return None if now == workspace else f"workspace {workspace!r} now leads to {now!r}; submit the task again"

    def stop(self, worker: WorkerHandle, reason: str) -> None:
        """Ask a worker to finish what it holds and exit (a replacement is maintain's to start)."""
        if reason != "shutdown":
            log.info("stopping worker %s: %s", worker.id, reason)
        if worker.stop(reason):
            self.tell_stop(worker)

    def tell_stop(self, worker: WorkerHandle) -> None:
        self.core.ports.to_worker(worker.id, m.Stop(self.core.config.daemon.shutdown_grace))

    def kill(self, worker: WorkerHandle, reason: str) -> None:
        worker.killed(reason)
        if worker.root_pid:
            # One pass, never a wait: the loop must keep serving. What a
            # forking tree adds afterwards is orphaned to the fork server, which ends it.
            tree.kill_tree(worker.root_pid, deadline=0)

    def kill_all(self, reason: str) -> None:
        for worker in list(self.core.workers()):
            self.kill(worker, reason)

    def stop_all(self) -> None:
        """parad is stopping: no respawn, and every worker finishes what it holds."""
        for pool in self.core.pools.values():
            if pool.respawn_timer is not None:
                self.core.timers.cancel(pool.respawn_timer)
                pool.respawn_timer = None
            for worker in list(pool.workers.values()):
                self.stop(worker, "shutdown")

    def forget(self, worker: WorkerHandle) -> None:
        """Its process is gone and its tasks settled: drop it; the pool may want a replacement."""
        pool = self.core.pools[worker.pool]
        pool.workers.pop(worker.id, None)
        if self.plans[pool.name].cgroup is not None:
            cgroup.remove(self.plans[pool.name].cgroup / worker.id)
        self.core.want_maintain(pool)

    def check(self) -> None:
        """Heartbeat deadlines and pool sizing: kill the silent, and size every pool for the host's load."""
        d = self.core.config.daemon
        now = time.monotonic()
        for worker in list(self.core.workers()):
            silent = now - worker.last_seen
            limit = d.failure_detection_timeout if worker.state != SPAWNING else max(d.failure_detection_timeout, SPAWN_TIMEOUT)
            if silent > limit and worker.pid and worker.kill_reason is None:
                log.warning("worker %s (pid %d) sent no heartbeat for %.1fs: killing its process tree",
                            worker.id, worker.pid, silent)
                self.kill(worker, f"hung: no heartbeat for {silent:.1f}s")
        cpu, memory = psutil.cpu_percent(None), psutil.virtual_memory().percent
        pressed = cpu > d.scale_cpu_percent or memory > d.scale_memory_percent
        for pool in self.core.pools.values():
            if pressed and not pool.pressure:
                log.info("host CPU %.0f%%, memory %.0f%%: pools hold their size", cpu, memory)
            pool.pressure = pressed
            self.core.want_maintain(pool)


def _caller_path(pool: Pool, workspace: str | None) -> str | None:
    """The PATH a new worker of `workspace` must find its tools on: that of the first queued task
    of the workspace that sent its caller's, else parad's own (a pool's first workers)."""
    if not pool.uses_workspace:
        return None
    for record in pool.queue.queued():
        env = record.spec.args.get("caller_env") if record.spec.workspace == workspace else None
        if isinstance(env, dict) and isinstance(env.get("PATH"), str):
            return env["PATH"]
    return os.environ.get("PATH")
