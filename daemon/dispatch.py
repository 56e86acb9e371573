"""Handing queued tasks to the workers of a pool, by credit.

The supervisor runs dispatch once per pool at the end of its loop turn (the
pools named by `Core.want_dispatch`), so every credit returned during the turn
(a frame of many results) goes out as one batch of assignments per worker.
"""

from __future__ import annotations

import time
from typing import Protocol

from para.daemon.core import Ports
from para.daemon.pool import Pool, WorkerHandle
from para.daemon.tasks import TaskRecord, TaskTable
from para.ipc import codec
from para.ipc import messages as m


class DispatchCore(Protocol):
    ports: Ports
    stopping: bool
    tasks: TaskTable

    def want_dispatch(self, pool: Pool) -> None: ...


class Dispatcher:
    def __init__(self, core: DispatchCore) -> None:
        self.core = core

    def run(self, pool: Pool) -> None:
        """Hand queued tasks out one at a time to the least-loaded worker with credit.

        Idle workers fill first, so a task never waits at a busy worker while
        another could run it; each worker's share then goes out as one frame.
        A task of a workspace goes only to a worker made for that workspace.
        """
        if self.core.stopping or not pool.queue.depth or self.core.tasks.store.trouble is not None:
            return   # (the supervisor dispatches every pool again once the store can write)
        loads, left = self._loads(pool)
        only = loads.keys() if left is not None else None
        batches: dict[str, list[TaskRecord]] = {}
        while loads and pool.queue.depth:
            record = pool.queue.pop(only)
            if record is None:
                break
            # A read-only tool's task has a workspace too (whose permissions it reads with); any worker serves it.
            workspace = record.spec.workspace if left is not None else None
            load = loads[workspace]
            if left is not None:
                left[workspace] -= 1
                if not left[workspace]:
                    del loads[workspace]
            worker_id = min(load, key=load.__getitem__)
            batches.setdefault(worker_id, []).append(record)
            load[worker_id] += 1
            if len(batches[worker_id]) >= pool.workers[worker_id].credit:
                del load[worker_id]
                if not load:
                    loads.pop(workspace, None)
        if batches and self._starting(pool, batches):
            for worker_id, records in batches.items():
                self._assign(pool, pool.workers[worker_id], records)

    def _starting(self, pool: Pool, batches: dict[str, list[TaskRecord]]) -> bool:
        """Mark the tasks running, as their next attempt, and have the task store keep that before any
        assignment leaves: so a task that a restarted parad does not find running never started.
        False, with the tasks back at the head of the queue, if the store cannot keep it (a full disk)."""
        now = time.monotonic()
        records: list[TaskRecord] = []
        for worker_id, assigned in batches.items():
            for record in assigned:
                record.attempts += 1
                record.state, record.worker, record.started = m.RUNNING, worker_id, now
            records += assigned
        if self.core.tasks.store.record_starts(records):
            return True
        for record in reversed(records):
            self._unstart(pool, record)
        return False

    def _unstart(self, pool: Pool, record: TaskRecord) -> None:
        """An assignment that did not leave: the task goes back to the head of its queue, its attempt not counted."""
        record.attempts -= 1
        record.state, record.worker = m.QUEUED, None
        pool.queue.push_front(record)
        self.core.tasks.store.changed(record, spec=True)   # its row may have been written without caller_env

    @staticmethod
    def _loads(pool: Pool) -> tuple[dict[str | None, dict[str, int]], dict[str | None, int] | None]:
        """Workspace -> worker with credit -> tasks it holds; and, for a pool with workspaces, the
        runnable tasks of each (only workspaces with both are kept, so pop() never scans in vain)."""
        loads: dict[str | None, dict[str, int]] = {}
        for w in pool.with_credit():
            loads.setdefault(w.workspace, {})[w.id] = len(w.tasks)
        if not pool.uses_workspace:
            return loads, None
        left = {ws: n for ws, n in pool.queue.runnable_by_workspace().items() if ws in loads}
        return {ws: load for ws, load in loads.items() if ws in left}, left

    def _assign(self, pool: Pool, worker: WorkerHandle, records: list[TaskRecord]) -> None:
        """Send `records` to `worker`, BATCH_FRAMES to a frame: a worker's credit may be larger."""
        events = self.core.ports.watched(b"progress")
        chunks = codec.chunks(records)
        for i, chunk in enumerate(chunks):
            if not self._assign_chunk(worker, chunk, events):
                # Unroutable: the worker is going away. Its exit report would count
                # these as attempts; they never ran, so put them back instead.
                for record in reversed([r for rest in chunks[i:] for r in rest]):
                    self._unstart(pool, record)
                worker.unroutable()
                self.core.want_dispatch(pool)
                return

    def _assign_chunk(self, worker: WorkerHandle, records: list[TaskRecord], events: bool) -> bool:
        assigns = [m.Assign(record.spec, record.attempts, events) for record in records]
        if not self.core.ports.to_worker(worker.id, *assigns):
            return False
        worker.took(records)
        return True
