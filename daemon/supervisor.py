"""parad's supervisor: one process, one poll loop.

startup.py brings up what it needs (the runtime dir, isolation plans, the
fork server, the bound sockets); then each turn of the loop reads:

    poll every socket, the fork server and the signal pipe (timeout: the next timer)
    signals: a stop, or a check of the fork server
    fork server: workers started and exited (an exit settles the worker's tasks)
    worker channels (metrics, command, error, event, data), then clients:
        a bounded batch per socket, so a flood on one never starves another
    timers: heartbeat checks, respawns, retries, the shutdown deadline
    send clients what needs no commit (outbox.py), first: the rest is not on its way
    reconcile the pools the turn asked for (workforce.py)
    dispatch the pools the turn asked for (dispatch.py)
    commit the journal (commits.py: grouped while more messages wait)
    send clients what they take (outbox.py: bounded by bytes, with backpressure;
        what the journal records, only once committed)

Signals, worker exits and timers all arrive as loop events; there are no
threads of our own. Handlers change state and ask (core.py's want_maintain,
want_dispatch); only the end of the turn spawns workers or assigns tasks.
The supervisor is also the core's `Ports`: what the helpers send goes out on
its sockets.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import zmq

from para.daemon import collector, identities, isolation, notify
from para.daemon.batches import BatchRunner
from para.daemon.clients import ClientRequests
from para.daemon.commits import Commits
from para.daemon.config import Config
from para.daemon.core import Core
from para.daemon.dispatch import Dispatcher
from para.daemon.events import EventPublisher
from para.daemon.forkserver import ForkServer
from para.daemon.intake import Intake
from para.daemon.isolation import PoolIsolation
from para.daemon.journal import recovery
from para.daemon.journal.store import RETRY_EVERY, Journal
from para.daemon.journal.upkeep import Upkeep
from para.daemon.lifecycle import TaskLifecycle
from para.daemon.listeners import Listeners
from para.daemon.metrics import DaemonCollector, MetricsServer, exposition, make_registry
from para.daemon.outbox import Outbox
from para.daemon.pool import FAILED, Pool, WorkerHandle
from para.daemon.poller import Poller
from para.daemon.reports import WorkerReports
from para.daemon.signals import SignalPipe
from para.daemon.tasks import TaskStore
from para.daemon.workforce import Workforce
from para.daemon.workspaces import WorkspacePolicy
from para.ipc import channels
from para.ipc import messages as m
from para.ipc.endpoints import Endpoints
from para.ipc.sockets import has_message, recv_message
from para.sandbox.probe import HostSupport

log = logging.getLogger("parad")

BATCH = 256            # messages read from one socket per loop turn
DATA_BATCH = 16        # data frames (up to 1 MiB each) read per loop turn
EXIT_SETTLE = 0.25     # seconds to let a dead worker's last results arrive


class Supervisor:
    def __init__(self, config: Config, endpoints: Endpoints, state_dir: Path, config_source: str,
                 host: HostSupport, plans: Mapping[str, PoolIsolation], forkserver: ForkServer,
                 listeners: Listeners, workspaces: WorkspacePolicy, store: TaskStore | None = None) -> None:
        self.config = config
        self.endpoints = endpoints
        self.state_dir = state_dir
        self.config_source = config_source
        self.host = host
        self.plans = plans
        self.forkserver = forkserver
        self.listeners = listeners
        d = config.daemon
        self.core = core = Core(config, ports=self, workspaces=workspaces, store=store)
        self.store = core.tasks.store
        self.upkeep = Upkeep(self.store, core.timers) if isinstance(self.store, Journal) else None
        self.intake = Intake()
        self.events = EventPublisher(listeners.events, endpoints)
        self.outbox = Outbox(listeners.control, d.client_output_budget, self.to_worker, self._output_drained,
                             d.output_budget_total)
        for pool in core.pools.values():
            pool.queue.blocked = self.outbox.blocked  # their tasks wait (outbox.py)
            pool.identity = identities.rule_of(plans[pool.name], pool.options_model)
        self.dispatcher = Dispatcher(core)
        self.batches = BatchRunner(core)
        self.lifecycle = TaskLifecycle(core, self.batches)
        self.workforce = Workforce(core, forkserver.spawn, plans, endpoints.runtime_dir, self.lifecycle.fail_workspace)
        self.clients = ClientRequests(core, self.lifecycle, self.batches, self.outbox, self.intake, daemon=self)
        self.reports = WorkerReports(core, self.lifecycle, self.workforce, self.intake, self.outbox,
                                     self.clients.on_relayed, plans, self.clients.inputs)
        self.registry = make_registry(DaemonCollector(core, self.intake, self.outbox, plans, self.clients.inputs))
        # Each handler guarded: whatever one frame makes it raise costs that frame, not the loop.
        self.readers: list[tuple[zmq.Socket, Callable[[list[bytes]], None]]] = [
            (listeners.workers[name], self.intake.guard(f"worker_{name}", handler))
            for name, handler in self.reports.handlers.items()
        ] + [(listeners.control, self.intake.guard("control", self.clients.on_frames))]
        self.signals = SignalPipe()
        self.metrics_server = self._metrics_server()
        self.poller = self._poller()
        self._busy = (listeners.control, listeners.workers["data"])
        # ROUTER sockets: their messages start with the sender's identity (ipc/sockets.py recv_message).
        self._routed = {listeners.control, listeners.workers["command"]}
        self.commits = Commits(self.store, self.outbox, core.timers, self._requests_wait, RETRY_EVERY,
                               self._writable_again)

    # ---- the core's ports ------------------------------------------------------

    def to_client(self, identity: bytes, frame: bytes) -> None:
        self.outbox.send(identity, frame)

    def result_to_client(self, identity: bytes, task_id: str, frame: bytes, fenced: bool) -> None:
        self.outbox.result(identity, task_id, frame, fenced)

    def durable_to_client(self, identity: bytes, frame: bytes) -> None:
        self.outbox.send(identity, frame, self.store.durable)

    def to_worker(self, worker_id: str, *messages: Any) -> bool:
        command = self.listeners.workers["command"]
        self.poller.recheck(command)   # a send can quiet its descriptor (poller.py)
        return channels.send_to_worker(command, worker_id, messages)

    def watched(self, topic: bytes) -> bool:
        return self.events.wanted(topic)

    def publish(self, topic: bytes, make: Callable[[], Any]) -> None:
        if self.events.publish(topic, make):
            self.poller.recheck(self.events.sock)   # a send can quiet its descriptor (poller.py)

    def _output_drained(self) -> None:
        # A client is back under its output budget: its queued tasks may start (in workspaces that may need workers).
        for pool in self.core.pools.values():
            self.core.want_dispatch(pool)
            if pool.uses_workspace:
                self.core.want_maintain(pool)

    # ---- serving ---------------------------------------------------------------

    def _metrics_server(self) -> MetricsServer | None:
        listen = self.config.daemon.metrics_listen
        if not listen:
            return None
        try:
            server = MetricsServer(listen, self.registry)
        except OSError as exc:
            log.warning("metrics: cannot listen on %s (%s); /metrics is off, `paractl metrics` still works", listen, exc.strerror)
            return None
        log.info("metrics on http://%s:%d/metrics", *server.address[:2])
        return server

    def _poller(self) -> Poller:
        poller = Poller()
        for sock in (*(sock for sock, _ in self.readers), self.events.sock):
            poller.add_socket(sock)
        for fd in (self.forkserver.fileno(), self.signals.fileno()):
            poller.add_fd(fd)
        if self.metrics_server is not None:
            poller.add_fd(self.metrics_server.fileno())
        return poller

    def serve(self) -> None:
        """Run the loop until parad has stopped and its last worker is gone."""
        try:
            if self.upkeep is not None:
                recovery.recover(self.upkeep.journal, self.core, self.batches, self.lifecycle)
                self.upkeep.start()
            for pool in self.core.pools.values():
                self.core.want_maintain(pool)
                self.core.want_dispatch(pool)
            self._tick()
            self._watchdog()
            self._end_turn()
            collector.serve_long()
            notify.notify(f"READY=1\nSTATUS=serving on {self.endpoints.control_path}")
            log.info("parad %s serving on %s (pid %d, pools: %s)", self.core.version,
                     self.endpoints.control_path, os.getpid(), ", ".join(self.core.pools))
            self._loop()
        finally:
            self.poller.close()
            self.signals.close()
            if self.metrics_server is not None:
                self.metrics_server.close()

    def _loop(self) -> None:
        core = self.core
        while not (core.stopping and not any(True for _ in core.workers())):
            ready = self.poller.poll(core.timers.timeout_ms(self.outbox.wait_cap()))
            if self.signals.fileno() in ready:
                self._on_signals()
            if self.forkserver.fileno() in ready:
                self._on_forkserver()
            for sock, handler in self.readers:
                if sock in ready:
                    self._drain(sock, handler)
            if self.events.sock in ready:
                self.events.on_readable()
                self.poller.recheck(self.events.sock)   # it may have rebound (drop_watchers)
            if self.metrics_server is not None and self.metrics_server.fileno() in ready:
                self.metrics_server.on_readable()
            core.timers.run_due()
            self._end_turn()
        self._commit(force=True)
        self.outbox.drain(1.0)  # the last results, to clients that still read

    def _end_turn(self) -> None:
        """What the turn asked for, once each: send clients what needs no commit, reconcile pools, what
        waited for that, dispatch, commit the journal, send to clients (what the commit recorded too);
        again while sending drained a client whose queued tasks may now start."""
        if self.outbox.total:
            # What needs no commit (a quick run()'s Done) leaves first: nothing below is on its way.
            self._flush()
        for pool in self.core.take_maintain():
            self._guarded("maintain", self.workforce.maintain, pool)
        for callback in self.core.take_later():
            callback()
        while True:
            while pools := self.core.take_dispatch():   # an unroutable assignment asks again
                for pool in pools:
                    self._guarded("dispatch", self.dispatcher.run, pool)
            self._commit()
            self._flush()
            if not self.core.dispatch_wanted:
                return

    def _commit(self, force: bool = False) -> None:
        self.commits.turn(force)

    def _flush(self) -> None:
        if self.outbox.total:   # it has frames to send; a send can quiet the socket's descriptor (poller.py)
            self.poller.recheck(self.listeners.control)
        self.outbox.flush()

    def _requests_wait(self) -> bool:
        # Requests and results: what a grouped commit waits for. Asking two sockets is cheaper
        # than a poll, on the path of every run().
        return any(self.poller.readable(sock) for sock in self._busy)

    def _writable_again(self) -> None:
        # Dispatch stopped while the store could not keep starts.
        for pool in self.core.pools.values():
            self.core.want_dispatch(pool)

    @staticmethod
    def _guarded(what: str, step: Callable[[Pool], None], pool: Pool) -> None:
        # A bug in one pool's step costs that step, this turn; the loop and the other pools go on.
        try:
            step(pool)
        except Exception:
            log.exception("%s of pool %s failed; parad goes on", what, pool.name)

    def _drain(self, sock: zmq.Socket, handler: Callable[[list[bytes]], None], limit: int | None = 0) -> None:
        """Handle waiting messages: a bounded batch per turn (limit 0), or all of them (None)."""
        if limit == 0:
            limit = DATA_BATCH if sock is self.listeners.workers["data"] else BATCH
        count = 0
        while limit is None or count < limit:
            count += 1
            try:
                frames = recv_message(sock, sock in self._routed)
            except zmq.Again:
                return
            handler(frames)
            # Asking is cheaper than the zmq.Again a further recv would raise, and
            # most turns carry one message per socket.
            if not has_message(sock):
                return
        self.poller.recheck(sock)   # messages left for the next turn, which must not wait for them

    # ---- signals and shutdown ---------------------------------------------

    def _on_signals(self) -> None:
        for sig in self.signals.read():
            if sig in (signal.SIGTERM, signal.SIGINT):
                if self.core.stopping:
                    log.warning("%s again: killing worker trees now", sig.name)
                    self.workforce.kill_all("second stop signal")
                else:
                    log.info("%s: stopping", sig.name)
                    self.shutdown()
            elif sig == signal.SIGCHLD:
                self._check_forkserver()

    def shutdown(self) -> None:
        """Stop taking work; running tasks get shutdown_grace, then worker trees are killed."""
        if self.core.stopping:
            return
        self.core.stopping = True
        notify.notify("STOPPING=1")
        if not self.store.durable:   # else they wait in the journal for the next parad
            self.lifecycle.cancel_unstarted("parad shut down before the task started; submit it again")
        self.workforce.stop_all()
        grace = self.config.daemon.shutdown_grace
        self.core.timers.call_later(grace, lambda: self.workforce.kill_all(f"shutdown grace of {grace:g}s over"))

    def _check_forkserver(self) -> None:
        if self.forkserver.alive():
            return
        log.error("fork server exited (%s); starting a new one", self.forkserver.proc.returncode)
        for worker in list(self.core.workers()):
            self.workforce.kill(worker, "fork server died")
            self._worker_gone(worker, None, signal.SIGKILL)
        self.poller.remove_fd(self.forkserver.fileno())
        self.forkserver.restart()
        self.poller.add_fd(self.forkserver.fileno())

    # ---- worker processes: started, exited ------------------------------------

    def _on_forkserver(self) -> None:
        for packet in self.forkserver.read():
            report = self.intake.decode("forkserver", packet, (m.Spawned, m.Exited))
            worker = self.core.find_worker(report.worker) if report is not None else None
            if worker is None:
                continue
            if isinstance(report, m.Spawned):
                worker.spawned(report.pid)
            elif isinstance(report, m.Exited):
                self._on_exit(worker, report.exit_code, report.signal)

    def _on_exit(self, worker: WorkerHandle, code: int | None, sig: int | None) -> None:
        worker.exited()
        if not (self.core.stopping or worker.planned):
            # Count the crash now, before a replacement can say Ready: the
            # other order would leave the pool failed with healthy workers.
            pool = self.core.pools[worker.pool]
            pool.record_crash(worker, worker.exit_reason(code, sig))
            if pool.state == FAILED:
                log.error("%s", pool.failure_message())
                self.lifecycle.fail_queued(pool)
        if worker.tasks:
            # Results it sent just before exiting may still be in flight on the data channel.
            self.core.timers.call_later(EXIT_SETTLE, lambda: self._worker_gone(worker, code, sig))
        else:
            self._worker_gone(worker, code, sig)

    def _worker_gone(self, worker: WorkerHandle, code: int | None, sig: int | None) -> None:
        # Every result the worker sent before dying must be read before its tasks are called lost.
        data = self.listeners.workers["data"]
        self._drain(data, self.intake.guard("worker_data", self.reports.on_data), limit=None)
        pool = self.core.pools[worker.pool]
        if worker.id not in pool.workers:
            return
        reason = worker.exit_reason(code, sig)
        if not (self.core.stopping or worker.planned):
            log.warning("%s", reason)
        for record in list(worker.tasks.values()):
            self.lifecycle.lost(pool, record, reason)
        self.workforce.forget(worker)

    # ---- timers ----------------------------------------------------------------

    def _tick(self) -> None:
        """Heartbeat deadlines and pool sizing, every fraction of the detection timeout."""
        self.workforce.check()
        d = self.config.daemon
        self.core.timers.call_later(min(1.0, d.failure_detection_timeout / 4, d.heartbeat_interval), self._tick)

    def _watchdog(self) -> None:
        interval = notify.watchdog_interval()
        if interval:
            notify.notify("WATCHDOG=1")
            self.core.timers.call_later(interval, self._watchdog)

    # ---- what clients may ask of the daemon (clients.Daemon) -------------------

    def status(self) -> dict[str, Any]:
        core = self.core
        return {
            "daemon": {
                "pid": os.getpid(), "version": core.version, "uptime": round(time.monotonic() - core.started, 3),
                "runtime_dir": str(self.endpoints.runtime_dir), "state_dir": str(self.state_dir),
                "config": self.config_source, "stopping": core.stopping,
                "isolation": isolation.effective_label(dict(self.plans)), "watchers": self.events.watchers,
                "events_refused": self.events.refused,
            },
            "sandbox": {"host": self.host.summary(),
                        "pools": {name: p.summary() for name, p in self.plans.items()}},
            "pools": [pool.summary() for pool in core.pools.values()],
            "workspaces": self._workspaces(),
            "tasks": {"live": len(core.tasks.live), **dict(core.tasks.counts)},
            "retained": core.tasks.retained(), "output": self.outbox.summary(),
            "journal": self.store.summary(),
        }

    def _workspaces(self) -> list[dict[str, Any]]:
        """The workspaces that have workers or queued tasks, and their writable roots."""
        found: dict[str, dict[str, Any]] = {}
        for pool in self.core.pools.values():
            if not pool.uses_workspace:
                continue
            queued = pool.queue.by_workspace
            for ws in sorted({w.workspace for w in pool.workers.values()} | set(queued)):
                entry = found.setdefault(ws, {"workspace": ws, "writable": isolation.writable_in(pool.options_model, ws),
                                              "runs_as": identities.describe(pool.identity, ws), "pools": {}})
                workers = sum(1 for w in pool.workers.values() if w.workspace == ws)
                entry["pools"][pool.name] = {"workers": workers, "queued": queued.get(ws, 0)}
        return list(found.values())

    def workers(self) -> list[dict[str, Any]]:
        return [w.summary() for w in self.core.workers()]

    def metrics_text(self) -> str:
        return exposition(self.registry)
