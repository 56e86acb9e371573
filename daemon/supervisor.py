"""parad's supervisor: one process, one poll loop.

    run()
      acquire the runtime dir, start the fork server (before any ZeroMQ state),
      bind the client and worker sockets, spawn min_workers per pool, notify READY
      loop:
        poll every socket, the fork server and the signal pipe (timeout: next timer)
        worker channels first (metrics, command, error, event, data), then clients,
        a bounded batch per socket so a flood on one never starves another
        fire due timers (heartbeat checks, respawns, scaling, shutdown deadline)
        send clients what they take (outbox.py: bounded by bytes, with backpressure)
        hand queued tasks to workers with credit
      remove sockets, stop the fork server, release the runtime dir

Signals, worker exits and timers all arrive as loop events; there are no
threads of our own. What happens to a task once the loop has its news lives
beside this module: handing it to a worker in dispatch.py, its end (result,
retry, loss, cancel) in lifecycle.py.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psutil
import zmq

from para.daemon import dedup, isolation, notify, outbox
from para.daemon.batches import BatchRunner
from para.daemon.clients import ClientRequests
from para.daemon.config import Config
from para.daemon.dispatch import Dispatcher
from para.daemon.events import EventPublisher
from para.daemon.frame_limits import worker_frame_limits
from para.daemon.forkserver import ForkServer
from para.daemon.intake import Intake
from para.daemon.lifecycle import TaskLifecycle
from para.daemon.metrics import MetricsServer, make_registry
from para.daemon.pool import BACKOFF, FAILED, OK, READY, SPAWNING, STOPPING, Pool, WorkerHandle
from para.daemon.runtime_dir import RuntimeDir, RuntimeDirError
from para.daemon.signals import SignalPipe
from para.daemon.tasks import TaskTable
from para.daemon.timers import Timers
from para.daemon.tools import TOOLS
from para.ipc import channels
from para.ipc import messages as m
from para.ipc.endpoints import Endpoints
from para.sandbox import cgroup, namespaces, prctl, probe, tree

log = logging.getLogger("parad")

BATCH = 256            # messages read from one socket per loop turn
DATA_BATCH = 16        # data frames (up to 1 MiB each) read per loop turn
EXIT_SETTLE = 0.25     # seconds to let a dead worker's last results arrive
SPAWN_TIMEOUT = 10.0   # seconds a new worker has to say Ready


class Supervisor:
    def __init__(self, config: Config, endpoints: Endpoints, state_dir: Path, config_source: str) -> None:
        self.config = config
        self.endpoints = endpoints
        self.state_dir = state_dir
        self.config_source = config_source
        self.version = version("para")
        self.started = time.monotonic()
        self.timers = Timers()
        self.tasks = TaskTable(config.daemon.finished_task_retention, config.daemon.finished_task_bytes)
        self.pools = {
            name: Pool(name, TOOLS[section.tool], section, config.pool_options(name))
            for name, section in config.pools.items()
        }
        self.stopping = False
        self.runtime = RuntimeDir(endpoints)

    # ---- lifecycle -----------------------------------------------------------

    def run(self) -> int:
        # Commands run as parad's own user where there is no sandbox: they must
        # not read parad's memory, environment or descriptors through /proc.
        prctl.set_not_dumpable()
        self.runtime.acquire()
        try:
            self._plan_isolation()
            self.forkserver = ForkServer()
            try:
                self._serve()
            finally:
                self.forkserver.close()
        finally:
            self.runtime.release()
        log.info("parad stopped")
        return 0

    def _plan_isolation(self) -> None:
        self.host = probe.probe()
        hide = [str(self.endpoints.runtime_dir), str(self.state_dir)]
        self.isolation = isolation.plan({name: p.options_model for name, p in self.pools.items()}, self.host, hide)
        isolation.log_plans(self.isolation)

    def _serve(self) -> None:
        self.ctx = zmq.Context()
        self.signals = SignalPipe()
        self.metrics_server, self.sockets = None, []   # what cleanup closes, even when _bind fails half-way
        try:
            try:
                self._bind()
            except zmq.ZMQError as exc:
                raise RuntimeDirError(f"cannot listen in the runtime dir {self.endpoints.runtime_dir}: {exc}; "
                                      f"pick another with --runtime-dir DIR") from None
            self.intake = Intake()
            self.metrics = make_registry(self)
            self.metrics_server = self._metrics_server()
            self.dispatcher = Dispatcher(self)
            self.lifecycle = TaskLifecycle(self)
            self.clients = ClientRequests(self)
            for pool in self.pools.values():
                pool.queue.blocked = self.clients.outbox.blocked  # their tasks wait (outbox.py)
            self.batches = BatchRunner(self)
            self.dedup = dedup.Deduplicator(self.config.daemon.idempotency_window)
            for pool in self.pools.values():
                self.maintain(pool)
            self._tick()
            self._watchdog()
            notify.notify(f"READY=1\nSTATUS=serving on {self.endpoints.control_path}")
            log.info("parad %s serving on %s (pid %d, pools: %s)", self.version,
                     self.endpoints.control_path, os.getpid(), ", ".join(self.pools))
            self._loop()
        finally:
            self.signals.close()
            if self.metrics_server is not None:
                self.metrics_server.close()
            for sock in self.sockets:
                # The control socket may still hold the last results for clients.
                sock.close(linger=1000 if sock is self.control else 0)
            self.ctx.destroy(linger=0)   # and any socket a failed _bind made but did not list

    def _bind(self) -> None:
        d = self.config.daemon
        # The daemon answers oversized requests itself; the hard cap (4x) only stops abuse.
        # A short queue per client: what a client does not read waits, counted, in outbox.py.
        self.control = channels.bind_control(self.ctx, self.endpoints, 4 * d.max_message_size, outbox.SNDHWM)
        self.sockets.append(self.control)
        self.events = EventPublisher(channels.bind_events(self.ctx, self.endpoints), self.endpoints)
        self.sockets.append(self.events.sock)
        self.worker_socks = channels.bind_worker_channels(self.ctx, self.endpoints, worker_frame_limits(self.config))
        self.sockets.extend(self.worker_socks.values())
        for path in self.endpoints.socket_paths():
            os.chmod(path, 0o600)

    def _metrics_server(self) -> MetricsServer | None:
        listen = self.config.daemon.metrics_listen
        if not listen:
            return None
        try:
            server = MetricsServer(listen, self.metrics)
        except OSError as exc:
            log.warning("metrics: cannot listen on %s (%s); /metrics is off, `paractl metrics` still works", listen, exc.strerror)
            return None
        log.info("metrics on http://%s:%d/metrics", *server.address[:2])
        return server

    def _loop(self) -> None:
        w = self.worker_socks
        # Each handler guarded: whatever one frame makes it raise costs that frame, not the loop.
        handlers = [(sock, self.intake.guard(name, handler)) for sock, name, handler in (
            (w["metrics"], "worker_metrics", self._on_metrics),
            (w["command"], "worker_command", self._on_worker_command),
            (w["error"], "worker_error", self._on_error), (w["event"], "worker_event", self._on_event),
            (w["data"], "worker_data", self._on_data), (self.control, "control", self.clients.on_frames),
        )]
        self.poller = poller = zmq.Poller()
        for sock, _ in handlers:
            poller.register(sock, zmq.POLLIN)
        poller.register(self.events.sock, zmq.POLLIN)
        poller.register(self.forkserver.fileno(), zmq.POLLIN)
        poller.register(self.signals.fileno(), zmq.POLLIN)
        if self.metrics_server is not None:
            poller.register(self.metrics_server.fileno(), zmq.POLLIN)
        while not (self.stopping and not self._all_workers()):
            ready = dict(poller.poll(self.timers.timeout_ms(self.clients.outbox.wait_cap())))
            if self.signals.fileno() in ready:
                self._on_signals()
            if self.forkserver.fileno() in ready:
                self._on_forkserver()
            for sock, handler in handlers:
                if sock in ready:
                    self._drain(sock, handler)
            if self.events.sock in ready:
                self.events.on_readable()
            if self.metrics_server is not None and self.metrics_server.fileno() in ready:
                self.metrics_server.on_readable()
            self.timers.run_due()
            self.clients.flush()  # first: a client it drains may free queued tasks to dispatch
            self.dispatcher.run_pending()
        self.clients.outbox.drain(1.0)  # the last results, to clients that still read

    def _drain(self, sock: zmq.Socket, handler: Any, limit: int | None = 0) -> None:
        """Handle waiting messages: a bounded batch per turn (limit 0), or all of them (None)."""
        if limit == 0:
            limit = DATA_BATCH if sock is self.worker_socks["data"] else BATCH
        count = 0
        while limit is None or count < limit:
            count += 1
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return
            handler(frames)
            # Asking is cheaper than the zmq.Again a further recv would raise, and
            # most turns carry one message per socket.
            if not sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                return

    def _all_workers(self) -> list[WorkerHandle]:
        return [w for pool in self.pools.values() for w in pool.workers.values()]

    # ---- signals and shutdown ---------------------------------------------

    def _on_signals(self) -> None:
        for sig in self.signals.read():
            if sig in (signal.SIGTERM, signal.SIGINT):
                if self.stopping:
                    log.warning("%s again: killing worker trees now", sig.name)
                    self._kill_all("second stop signal")
                else:
                    log.info("%s: stopping", sig.name)
                    self.shutdown()
            elif sig == signal.SIGCHLD:
                self._check_forkserver()

    def shutdown(self) -> None:
        """Stop taking work; running tasks get shutdown_grace, then worker trees are killed."""
        if self.stopping:
            return
        self.stopping = True
        for pool in self.pools.values():
            if pool.respawn_timer is not None:
                self.timers.cancel(pool.respawn_timer)
        notify.notify("STOPPING=1")
        waiting = [r for r in self.tasks.live.values() if r.state in (m.RETRY_WAIT, m.PENDING)]
        for pool in self.pools.values():
            for record in pool.queue.drain() + [r for r in waiting if r.pool == pool.name]:
                self.lifecycle.complete(record, m.TaskResult(
                    record.spec.id, record.spec.tool, m.CANCELLED,
                    error="parad shut down before the task started; submit it again",
                    error_code=m.E_SHUTTING_DOWN))
            for worker in list(pool.workers.values()):
                self._stop_worker(worker, "shutdown")
        grace = self.config.daemon.shutdown_grace
        self.timers.call_later(grace, lambda: self._kill_all(f"shutdown grace of {grace:g}s over"))

    def _kill_all(self, reason: str) -> None:
        for worker in self._all_workers():
            self._kill_worker(worker, reason)

    def _check_forkserver(self) -> None:
        if self.forkserver.proc.poll() is None:
            return
        log.error("fork server exited (%s); starting a new one", self.forkserver.proc.returncode)
        for worker in self._all_workers():
            self._kill_worker(worker, "fork server died")
            self._worker_gone(worker, None, signal.SIGKILL)
        self.poller.unregister(self.forkserver.fileno())
        self.forkserver.close()
        self.forkserver = ForkServer()
        self.poller.register(self.forkserver.fileno(), zmq.POLLIN)

    # ---- fork server reports -------------------------------------------------

    def _on_forkserver(self) -> None:
        for packet in self.forkserver.read():
            report = self.intake.decode("forkserver", packet, (m.Spawned, m.Exited))
            worker = self._find_worker(report.worker) if report is not None else None
            if worker is None:
                continue
            if isinstance(report, m.Spawned):
                worker.pid = worker.root_pid = report.pid
            elif isinstance(report, m.Exited):
                self._on_exit(worker, report.exit_code, report.signal)

    def _on_exit(self, worker: WorkerHandle, code: int | None, sig: int | None) -> None:
        worker.state = STOPPING
        planned = self.stopping or worker.planned
        if not planned:
            # Count the crash now, before a replacement can say Ready: the
            # other order would leave the pool failed with healthy workers.
            pool = self.pools[worker.pool]
            pool.record_crash(worker, self._exit_reason(worker, code, sig))
            if pool.state == FAILED:
                log.error("%s", pool.failure_message())
                self.lifecycle.fail_queued(pool)
        if worker.tasks:
            # Results it sent just before exiting may still be in flight on the data channel.
            self.timers.call_later(EXIT_SETTLE, lambda: self._worker_gone(worker, code, sig))
        else:
            self._worker_gone(worker, code, sig)

    @staticmethod
    def _exit_reason(worker: WorkerHandle, code: int | None, sig: int | None) -> str:
        how = f"killed by {signal.Signals(sig).name}" if sig else f"exited with code {code}"
        reason = f"worker {worker.id} (pid {worker.pid}) {how}"
        return f"{reason} ({worker.kill_reason})" if worker.kill_reason else reason

    def _worker_gone(self, worker: WorkerHandle, code: int | None, sig: int | None) -> None:
        # Every result the worker sent before dying must be read before its tasks are called lost.
        self._drain(self.worker_socks["data"], self.intake.guard("worker_data", self._on_data), limit=None)
        pool = self.pools[worker.pool]
        if worker.id not in pool.workers:
            return
        reason = self._exit_reason(worker, code, sig)
        if not (self.stopping or worker.planned):
            log.warning("%s", reason)
        for record in list(worker.tasks.values()):
            self.lifecycle.lost(pool, record, reason)
        pool.workers.pop(worker.id, None)
        if self.isolation[pool.name].cgroup is not None:
            cgroup.remove(self.isolation[pool.name].cgroup / worker.id)
        self.maintain(pool)

    # ---- worker channels -----------------------------------------------------

    def _on_worker_command(self, frames: list[bytes]) -> None:
        msg = self.intake.decode("worker_command", frames[-1], channels.COMMAND.up)
        if msg is not None and frames[0] != msg.worker.encode():
            self.intake.drop("worker_command", f"a {type(msg).__name__} for worker {msg.worker!r} from another peer")
            return
        worker = self._find_worker(msg.worker) if msg is not None else None
        if worker is None:
            return
        if isinstance(msg, m.Relayed):
            self.clients.on_relayed(worker.id, msg)
            return
        if self.isolation[worker.pool].launch and worker.root_pid:
            # A sandboxed worker's own pid means something only inside its pid namespace.
            worker.pid = namespaces.host_pid(worker.root_pid, msg.pid) or worker.root_pid
        worker.last_seen = worker.idle_since = time.monotonic()
        if worker.state == STOPPING:  # asked to stop while it was starting
            self.dispatcher.send(worker.id, m.Stop(self.config.daemon.shutdown_grace))
            return
        worker.credit, worker.state = msg.credit, READY
        pool = self.pools[worker.pool]
        pool.record_ready()
        self.dispatcher.dispatch(pool)

    def _on_metrics(self, frames: list[bytes]) -> None:
        beat = self.intake.decode("worker_metrics", frames[0], channels.METRICS.up)
        worker = self._find_worker(beat.worker) if beat is not None else None
        if worker is None:
            return
        worker.last_seen = time.monotonic()
        cap = self.pools[worker.pool].config.recycle_rss
        if cap and beat.rss > cap and worker.state == READY:
            self._stop_worker(worker, f"recycled: resident memory {beat.rss} bytes passed recycle_rss ({cap})")
            self.maintain(self.pools[worker.pool])
        worker.rss, worker.cpu_seconds = beat.rss, beat.cpu_seconds
        worker.heartbeats += 1
        self.events.publish(b"metrics", lambda: beat)

    def _on_event(self, frames: list[bytes]) -> None:
        # Workers send events only while someone watches, so decoding each costs nothing otherwise.
        for part in self.intake.split("worker_event", frames[0]):
            event = self.intake.decode("worker_event", part, channels.EVENT.up)
            if event is not None:
                self.events.publish(b"progress", lambda: event)

    def _on_error(self, frames: list[bytes]) -> None:
        report = self.intake.decode("worker_error", frames[0], channels.ERROR.up)
        if report is None:
            return
        log.warning("worker %s, task %s: %s: %s", report.worker, report.task_id, report.kind, report.message)
        if report.detail:
            log.debug("%s", report.detail)
        self.events.publish(b"errors", lambda: report)

    def _on_data(self, frames: list[bytes]) -> None:
        for part in self.intake.split("worker_data", frames[0]):
            msg = self.intake.decode("worker_data", part, channels.DATA.up)
            if msg is None:
                continue
            if isinstance(msg, m.Chunk):
                record = self.tasks.live.get(msg.task_id)
                if record is not None and record.owner is not None:
                    self.clients.outbox.chunk(record.owner, msg.task_id, record.worker, part)
            else:
                self._on_result(msg.result, part)

    def _on_result(self, result: m.TaskResult, wire: bytes) -> None:
        record = self.tasks.live.get(result.id)
        if record is None or record.worker != result.worker:
            return  # a late answer from an attempt already given up on
        pool = self.pools[record.pool]
        worker = pool.workers.get(result.worker)
        if worker is not None:
            worker.tasks.pop(result.id, None)
            worker.completed += 1
            recycle = pool.config.recycle_after
            if recycle and worker.completed >= recycle and worker.state == READY:
                self._stop_worker(worker, f"recycled after {worker.completed} tasks")
                self.maintain(pool)
            if worker.state == READY:
                worker.credit += 1
            if not worker.tasks:
                worker.idle_since = time.monotonic()
        self.lifecycle.settle(pool, record, result, wire)
        self.dispatcher.dispatch(pool)

    # ---- workers: spawning, stopping, killing --------------------------------

    def maintain(self, pool: Pool) -> None:
        """Grow the pool toward what it wants, honouring crash backoff; shrink idle surplus."""
        if self.stopping or pool.respawn_timer is not None:
            return
        for worker in pool.surplus_to_stop():
            self._stop_worker(worker, f"scaled to {pool.pinned} by an operator")
        deficit = pool.wanted() - pool.live_count()
        if deficit <= 0:
            if pool.state != OK and any(w.state == READY for w in pool.workers.values()):
                pool.record_ready()  # a healthy worker is serving: close the circuit
            for worker in pool.idle_surplus(time.monotonic()):
                self._stop_worker(worker, "idle")
            return
        if pool.state in (BACKOFF, FAILED):
            spawning = sum(1 for w in pool.workers.values() if w.state == SPAWNING)
            if spawning:
                return
            delay = pool.config.respawn_backoff_max if pool.state == FAILED else pool.respawn_delay()
            pool.respawn_timer = self.timers.call_later(delay, lambda: self._respawn(pool))
            return
        for _ in range(deficit):
            self._spawn(pool)

    def _respawn(self, pool: Pool) -> None:
        pool.respawn_timer = None
        if not self.stopping and pool.live_count() < pool.wanted():
            self._spawn(pool)  # one at a time until a worker proves healthy

    def _spawn(self, pool: Pool) -> None:
        worker = pool.new_worker()
        settings = isolation.worker_settings(
            self.isolation[pool.name], worker.id, runtime_dir=self.endpoints.runtime_dir,
            heartbeat_interval=self.config.daemon.heartbeat_interval, credit=pool.credit, options=pool.options,
            max_message_size=self.config.daemon.max_message_size)
        self.forkserver.spawn(m.Spawn(worker.id, pool.name, pool.tool.name, settings))

    def _stop_worker(self, worker: WorkerHandle, reason: str) -> None:
        """Ask a worker to finish what it holds and exit; a replacement follows if the pool wants one."""
        if reason != "shutdown":
            log.info("stopping worker %s: %s", worker.id, reason)
        worker.kill_reason = reason
        worker.planned = True
        worker.credit = 0
        if worker.state == READY:
            self.dispatcher.send(worker.id, m.Stop(self.config.daemon.shutdown_grace))
        worker.state = STOPPING

    def _kill_worker(self, worker: WorkerHandle, reason: str) -> None:
        worker.kill_reason = reason
        worker.credit = 0
        if worker.root_pid:
            # One pass, never a wait: the loop must keep serving. What a
            # forking tree adds afterwards is orphaned to the fork server, which ends it.
            tree.kill_tree(worker.root_pid, deadline=0)

    def _find_worker(self, worker_id: str) -> WorkerHandle | None:
        pool = self.pools.get(worker_id.rsplit("-", 1)[0])
        return pool.workers.get(worker_id) if pool else None

    # ---- periodic ------------------------------------------------------------

    def _tick(self) -> None:
        """Heartbeat deadlines and pool sizing, every fraction of the detection timeout."""
        d = self.config.daemon
        now = time.monotonic()
        for worker in self._all_workers():
            silent = now - worker.last_seen
            limit = d.failure_detection_timeout if worker.state != SPAWNING else max(d.failure_detection_timeout, SPAWN_TIMEOUT)
            if silent > limit and worker.pid and worker.kill_reason is None:
                log.warning("worker %s (pid %d) sent no heartbeat for %.1fs: killing its process tree",
                            worker.id, worker.pid, silent)
                self._kill_worker(worker, f"hung: no heartbeat for {silent:.1f}s")
        cpu, memory = psutil.cpu_percent(None), psutil.virtual_memory().percent
        pressed = cpu > d.scale_cpu_percent or memory > d.scale_memory_percent
        for pool in self.pools.values():
            if pressed and not pool.pressure:
                log.info("host CPU %.0f%%, memory %.0f%%: pools hold their size", cpu, memory)
            pool.pressure = pressed
            self.maintain(pool)
        interval = min(1.0, d.failure_detection_timeout / 4, d.heartbeat_interval)
        self.timers.call_later(interval, self._tick)

    def _watchdog(self) -> None:
        interval = notify.watchdog_interval()
        if interval:
            notify.notify("WATCHDOG=1")
            self.timers.call_later(interval, self._watchdog)

    # ---- status --------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "daemon": {
                "pid": os.getpid(), "version": self.version, "uptime": round(time.monotonic() - self.started, 3),
                "runtime_dir": str(self.endpoints.runtime_dir), "state_dir": str(self.state_dir),
                "config": self.config_source, "stopping": self.stopping,
                "isolation": isolation.effective_label(self.isolation), "watchers": self.events.watchers,
                "events_refused": self.events.refused,
            },
            "sandbox": {"host": self.host.summary(),
                        "pools": {name: p.summary() for name, p in self.isolation.items()}},
            "pools": [pool.summary() for pool in self.pools.values()],
            "tasks": {"live": len(self.tasks.live), **dict(self.tasks.counts)},
            "retained": self.tasks.retained(), "output": self.clients.outbox.summary(),
        }

    def worker_list(self) -> list[dict[str, Any]]:
        return [w.summary() for w in self._all_workers()]
