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
from para.daemon.tasks import TaskRecord
from para.ipc import codec
from para.ipc import messages as m


class DispatchCore(Protocol):
    ports: Ports
    stopping: bool

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
        if self.core.stopping or not pool.queue.depth:
            return
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
        for worker_id, records in batches.items():
            self._assign(pool, pool.workers[worker_id], records)

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
                    record.state, record.worker = m.QUEUED, None
                    pool.queue.push_front(record)
                worker.unroutable()
                self.core.want_dispatch(pool)
                return

    def _assign_chunk(self, worker: WorkerHandle, records: list[TaskRecord], events: bool) -> bool:
        assigns = []
        for record in records:
            record.attempts += 1
            assigns.append(m.Assign(record.spec, record.attempts, events))
        if not self.core.ports.to_worker(worker.id, *assigns):
            for record in records:
                record.attempts -= 1
            return False
        now = time.monotonic()
        for record in records:
            record.state, record.worker, record.started = m.RUNNING, worker.id, now
        worker.took(records)
        return True
