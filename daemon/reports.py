"""What workers say on their five channels, and what follows for workers, tasks and watchers.

`handlers` maps each channel to its handler; the supervisor reads the
sockets and calls them. Every frame enters through intake.py (decode or
count); a frame naming a worker that is not there is dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from para.daemon.core import Ports
from para.daemon.intake import Intake
from para.daemon.isolation import PoolIsolation
from para.daemon.lifecycle import TaskLifecycle
from para.daemon.outbox import Outbox
from para.daemon.pool import READY, Pool, WorkerHandle
from para.daemon.task_input import InputRouter
from para.daemon.tasks import TaskTable
from para.daemon.workforce import Workforce
from para.ipc import channels
from para.ipc import messages as m
from para.sandbox import namespaces

log = logging.getLogger("parad")


class ReportsCore(Protocol):
    tasks: TaskTable
    pools: dict[str, Pool]
    ports: Ports

    def want_dispatch(self, pool: Pool) -> None: ...

    def want_maintain(self, pool: Pool) -> None: ...

    def find_worker(self, worker_id: str) -> WorkerHandle | None: ...


class WorkerReports:
    def __init__(self, core: ReportsCore, lifecycle: TaskLifecycle, workforce: Workforce, intake: Intake,
                 outbox: Outbox, relayed: Callable[[str, m.Relayed], None], plans: Mapping[str, PoolIsolation],
                 inputs: InputRouter) -> None:
        self.core = core
        self.lifecycle = lifecycle
        self.workforce = workforce
        self.intake = intake
        self.outbox = outbox
        self.relayed = relayed      # a nested client's request, to clients.py
        self.plans = plans
        self.inputs = inputs
        # Channel -> handler, in the order the supervisor reads them: heartbeats first.
        self.handlers: dict[str, Callable[[list[bytes]], None]] = {
            "metrics": self.on_metrics, "command": self.on_command, "error": self.on_error,
            "event": self.on_event, "data": self.on_data,
        }

    def on_command(self, frames: list[bytes]) -> None:
        """Ready (a worker is up, with its credit), or a nested client's request it relays."""
        msg = self.intake.decode("worker_command", frames[-1], channels.COMMAND.up)
        if msg is not None and frames[0] != msg.worker.encode():
            self.intake.drop("worker_command", f"a {type(msg).__name__} for worker {msg.worker!r} from another peer")
            return
        worker = self.core.find_worker(msg.worker) if msg is not None else None
        if worker is None:
            return
        if isinstance(msg, m.Relayed):
            self.relayed(worker.id, msg)
            return
        pid = None
        if self.plans[worker.pool].launch and worker.root_pid:
            # A sandboxed worker's own pid means something only inside its pid namespace.
            pid = namespaces.host_pid(worker.root_pid, msg.pid) or worker.root_pid
        if not worker.ready(msg.credit, time.monotonic(), pid):   # asked to stop while it was starting
            self.workforce.tell_stop(worker)
            return
        pool = self.core.pools[worker.pool]
        pool.record_ready()
        self.core.want_dispatch(pool)

    def on_metrics(self, frames: list[bytes]) -> None:
        beat = self.intake.decode("worker_metrics", frames[0], channels.METRICS.up)
        worker = self.core.find_worker(beat.worker) if beat is not None else None
        if worker is None:
            return
        worker.heard(time.monotonic())
        cap = self.core.pools[worker.pool].config.recycle_rss
        if cap and beat.rss > cap and worker.state == READY:
            self._recycle(worker, f"recycled: resident memory {beat.rss} bytes passed recycle_rss ({cap})")
        worker.rss, worker.cpu_seconds = beat.rss, beat.cpu_seconds
        worker.heartbeats += 1
        self.core.ports.publish(b"metrics", lambda: beat)

    def on_event(self, frames: list[bytes]) -> None:
        # Workers send events only while someone watches, so decoding each costs nothing otherwise.
        for part in self.intake.split("worker_event", frames[0]):
            event = self.intake.decode("worker_event", part, channels.EVENT.up)
            if event is not None:
                self.core.ports.publish(b"progress", lambda: event)

    def on_error(self, frames: list[bytes]) -> None:
        report = self.intake.decode("worker_error", frames[0], channels.ERROR.up)
        if report is None:
            return
        log.warning("worker %s, task %s: %s: %s", report.worker, report.task_id, report.kind, report.message)
        if report.detail:
            log.debug("%s", report.detail)
        if report.kind == "unkillable":
            self._retire(report)
        self.core.ports.publish(b"errors", lambda: report)

    def _retire(self, report: m.ErrorReport) -> None:
        # Its commands' limits would count what it could not kill: it gets no
        # new task, ends those it drives, and exits on the Stop (after every
        # Assign already sent to it, so none is lost on the way).
        worker = self.core.find_worker(report.worker)
        if worker is not None and worker.state == READY:
            self._recycle(worker, f"retired: {report.message}")

    def on_data(self, frames: list[bytes]) -> None:
        """Streamed output (Chunk), input written (InputAck) and results (Done), many to a frame."""
        for part in self.intake.split("worker_data", frames[0]):
            msg = self.intake.decode("worker_data", part, channels.DATA.up)
            if msg is None:
                continue
            if isinstance(msg, m.Chunk):
                record = self.core.tasks.live.get(msg.task_id)
                if record is not None and record.owner is not None:
                    self.outbox.chunk(record.owner, msg.task_id, record.worker, part)
            elif isinstance(msg, m.InputAck):
                self.inputs.on_ack(msg, part)
            else:
                self._on_result(msg.result, part)

    def _on_result(self, result: m.TaskResult, wire: bytes) -> None:
        record = self.core.tasks.live.get(result.id)
        if record is None or record.worker != result.worker:
            return  # a late answer from an attempt already given up on
        pool = self.core.pools[record.pool]
        worker = pool.workers.get(result.worker)
        if worker is not None:
            worker.finished(result.id, time.monotonic())
            recycle = pool.config.recycle_after
            if recycle and worker.completed >= recycle and worker.state == READY:
                self._recycle(worker, f"recycled after {worker.completed} tasks")
        self.lifecycle.settle(pool, record, result, wire)
        self.core.want_dispatch(pool)
        if pool.uses_workspace and pool.queue.depth:
            self.core.want_maintain(pool)   # an idle worker may give way to a workspace that has none

    def _recycle(self, worker: WorkerHandle, reason: str) -> None:
        self.workforce.stop(worker, reason)
        self.core.want_maintain(self.core.pools[worker.pool])
