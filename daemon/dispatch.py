"""Handing queued tasks to the workers of a pool, by credit; and messages to one worker.

Dispatch waits for the end of the supervisor's loop turn, so every credit
returned during the turn (a frame of many results) goes out as one batch of
assignments per worker.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import zmq

from para.daemon.pool import Pool, WorkerHandle
from para.daemon.tasks import TaskRecord
from para.ipc import channels, codec
from para.ipc import messages as m

if TYPE_CHECKING:
    from para.daemon.supervisor import Supervisor


class Dispatcher:
    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor
        self.sock: zmq.Socket = supervisor.worker_socks["command"]
        self._pending: set[Pool] = set()

    def dispatch(self, pool: Pool) -> None:
        """Ask for `pool` to be dispatched at the end of this loop turn."""
        self._pending.add(pool)

    def run_pending(self) -> None:
        while self._pending:
            self._dispatch_now(self._pending.pop())

    def _dispatch_now(self, pool: Pool) -> None:
        """Hand queued tasks out one at a time to the least-loaded worker with credit.

        Idle workers fill first, so a task never waits at a busy worker while
        another could run it; each worker's share then goes out as one frame.
        """
        if self.sup.stopping or not pool.queue.depth:
            return
        load = {w.id: len(w.tasks) for w in pool.with_credit()}
        if not load:
            return
        batches: dict[str, list[TaskRecord]] = {}
        while load and pool.queue.depth:
            worker_id = min(load, key=load.__getitem__)
            record = pool.queue.pop()
            if record is None:
                break
            batches.setdefault(worker_id, []).append(record)
            load[worker_id] += 1
            if len(batches[worker_id]) >= pool.workers[worker_id].credit:
                del load[worker_id]
        for worker_id, records in batches.items():
            self._assign(pool, pool.workers[worker_id], records)

    def _assign(self, pool: Pool, worker: WorkerHandle, records: list[TaskRecord]) -> None:
        """Send `records` to `worker`, BATCH_FRAMES to a frame: a worker's credit may be larger."""
        events = self.sup.events.wanted(b"progress")
        chunks = codec.chunks(records)
        for i, chunk in enumerate(chunks):
            if not self._assign_chunk(worker, chunk, events):
                # Unroutable: the worker is going away. Its exit report would count
                # these as attempts; they never ran, so put them back instead.
                for record in reversed([r for rest in chunks[i:] for r in rest]):
                    record.state, record.worker = m.QUEUED, None
                    pool.queue.push_front(record)
                worker.credit = 0
                self.dispatch(pool)
                return

    def _assign_chunk(self, worker: WorkerHandle, records: list[TaskRecord], events: bool) -> bool:
        now = time.monotonic()
        assigns = []
        for record in records:
            record.attempts += 1
            assigns.append(m.Assign(record.spec, record.attempts, events))
        if not channels.send_to_worker(self.sock, worker.id, assigns):
            for record in records:
                record.attempts -= 1
            return False
        for record in records:
            record.state, record.worker, record.started = m.RUNNING, worker.id, now
            worker.tasks[record.spec.id] = record
        worker.credit -= len(records)
        return True

    def send(self, worker_id: str, msg: Any) -> bool:
        """Send one message to a worker on its command channel; False if it cannot be routed."""
        return channels.send_to_worker(self.sock, worker_id, [msg])
