"""Prometheus metrics, computed from the daemon's state when scraped.

Nothing is counted on the hot path: a custom collector reads pools, workers
and task counts at scrape time. The HTTP endpoint is served from the
supervisor's own poll loop (see `MetricsServer`), not from a thread, so a
scrape never races the loop's data.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from para.daemon.intake import Intake
from para.daemon.isolation import PoolIsolation
from para.daemon.outbox import Outbox
from para.daemon.pool import Pool, WorkerHandle
from para.daemon.task_input import InputRouter
from para.daemon.tasks import TaskTable


class MetricsCore(Protocol):
    started: float
    tasks: TaskTable
    pools: dict[str, Pool]

    def workers(self) -> Iterator[WorkerHandle]: ...


class DaemonCollector:
    """Reads the daemon's state at scrape time: the core, bad frames, client outboxes, isolation plans."""

    def __init__(self, core: MetricsCore, intake: Intake, outbox: Outbox, plans: Mapping[str, PoolIsolation],
                 inputs: InputRouter | None = None) -> None:
        self.core = core
        self.inputs = inputs
        self.intake = intake
        self.outbox = outbox
        self.plans = plans

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("para_uptime_seconds", "Seconds since parad started", value=time.monotonic() - self.core.started)
        tasks = CounterMetricFamily("para_tasks", "Finished tasks by pool and final status", labels=["pool", "status"])
        for (pool, status), n in sorted(self.core.tasks.by_pool.items()):
            tasks.add_metric([pool, status], n)
        yield tasks
        yield from self._output()
        bad = CounterMetricFamily("para_bad_frames", "Frames refused or dropped (malformed, unexpected, wrong shape) "
                                  "by the socket they came in on", labels=["socket"])
        for socket_name, n in sorted(self.intake.bad.items()):
            bad.add_metric([socket_name], n)
        yield bad
        yield from self._input()
        yield from self._journal()
        yield from self._pools()
        yield from self._workers()
        yield from self._sandbox()

    def _input(self) -> Iterator[Metric]:
        if self.inputs is None:
            return
        yield CounterMetricFamily("para_input_bytes", "Bytes of streamed stdin passed on to workers", value=self.inputs.forwarded)
        refused = CounterMetricFamily("para_input_refused", "Input messages refused (dropped) by reason: the task "
                                      "is not running, not the sender's, not streaming stdin, not started, closed, "
                                      "past the window, or its worker is gone", labels=["reason"])
        for reason, n in sorted(self.inputs.refused.items()):
            refused.add_metric([reason], n)
        yield refused

    def _journal(self) -> Iterator[Metric]:
        j = self.core.tasks.store.summary()
        if j["durability"] == "off":   # no journal
            return
        # Families of one unlabelled sample each: `value=` is prometheus_client's way to say so.
        yield CounterMetricFamily("para_journal_commits", "Journal commits (each groups a loop turn's changes, or more)",
                                  value=j["commits"])
        yield CounterMetricFamily("para_journal_rows_written", "Task rows inserted or updated in the journal",
                                  value=j["rows_written"])
        yield CounterMetricFamily("para_journal_commit_failures", "Journal commits that failed (a full disk)",
                                  value=j["failures"])
        yield GaugeMetricFamily("para_journal_unwritable", "1 while the journal cannot write: new tasks are refused",
                                value=1 if j["trouble"] else 0)

    def _output(self) -> Iterator[Metric]:
        out = self.outbox.summary()
        yield GaugeMetricFamily("para_client_backlog_bytes", "Bytes of results and output held for clients that have "
                                "not read them", value=out["backlog_bytes"])
        yield GaugeMetricFamily("para_clients_over_budget", "Clients past client_output_budget: their tasks wait",
                                value=out["clients_over_budget"])
        yield GaugeMetricFamily("para_tasks_paused", "Commands whose output is not read until their client reads",
                                value=out["paused_tasks"])
        yield GaugeMetricFamily("para_finished_retained_bytes", "Bytes of finished results kept for queries",
                                value=self.core.tasks.retained()["bytes"])
        yield CounterMetricFamily("para_client_requests_dropped", "Requests not answered: their client held more "
                                  "than twice its output budget unread", value=self.outbox.dropped)

    def _sandbox(self) -> Iterator[Metric]:
        mode = GaugeMetricFamily("para_sandbox_isolation", "1 for the isolation each pool runs under", labels=["pool", "isolation"])
        degraded = GaugeMetricFamily("para_sandbox_degraded", "1 when a pool runs with less isolation than its policy asks", labels=["pool"])
        for name, plan in self.plans.items():
            mode.add_metric([name, plan.effective], 1)
            degraded.add_metric([name], 1 if plan.degraded else 0)
        limits = CounterMetricFamily("para_command_limits", "Commands ended by a sandbox limit", labels=["pool", "limit"])
        for (pool, limit), n in sorted(self.core.tasks.limits.items()):
            limits.add_metric([pool, limit], n)
        yield from (mode, degraded, limits)

    def _pools(self) -> Iterator[Metric]:
        queued = GaugeMetricFamily("para_queue_depth", "Tasks waiting for a worker", labels=["pool"])
        running = GaugeMetricFamily("para_tasks_running", "Tasks held by workers", labels=["pool"])
        workers = GaugeMetricFamily("para_workers", "Workers by state", labels=["pool", "state"])
        failed = GaugeMetricFamily("para_pool_failed", "1 when the pool's circuit is open", labels=["pool"])
        crashes = GaugeMetricFamily("para_pool_crashes", "Worker crashes in a row", labels=["pool"])
        spawned = CounterMetricFamily("para_worker_spawns", "Workers started", labels=["pool"])
        for pool in self.core.pools.values():
            summary = pool.summary()
            queued.add_metric([pool.name], summary["queued"])
            running.add_metric([pool.name], summary["running"])
            for state in ("spawning", "ready", "stopping"):
                workers.add_metric([pool.name, state], sum(1 for w in pool.workers.values() if w.state == state))
            failed.add_metric([pool.name], 1 if pool.state == "failed" else 0)
            crashes.add_metric([pool.name], pool.crashes)
            spawned.add_metric([pool.name], pool.spawned)
        yield from (queued, running, workers, failed, crashes, spawned)

    def _workers(self) -> Iterator[Metric]:
        labels = ["pool", "worker"]
        rss = GaugeMetricFamily("para_worker_rss_bytes", "Resident memory of a worker (last heartbeat)", labels=labels)
        cpu = CounterMetricFamily("para_worker_cpu_seconds", "CPU time of a worker (last heartbeat)", labels=labels)
        age = GaugeMetricFamily("para_worker_heartbeat_age_seconds", "Seconds since a worker's last heartbeat", labels=labels)
        now = time.monotonic()
        for w in self.core.workers():
            rss.add_metric([w.pool, w.id], w.rss)
            cpu.add_metric([w.pool, w.id], w.cpu_seconds)
            age.add_metric([w.pool, w.id], now - w.last_seen)
        yield from (rss, cpu, age)


def make_registry(collector: DaemonCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def exposition(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


class MetricsServer:
    """A minimal HTTP/1.0 responder for GET /metrics, driven by the supervisor's poll loop."""

    def __init__(self, listen: str, registry: CollectorRegistry) -> None:
        host, _, port = listen.rpartition(":")
        self.registry = registry
        self.sock = socket.create_server((host or "127.0.0.1", int(port)), reuse_port=False)
        self.sock.setblocking(False)
        self.address = self.sock.getsockname()

    def fileno(self) -> int:
        return self.sock.fileno()

    def on_readable(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return
        with conn:
            # Bounded: a scraper that stalls costs the loop at most this long.
            conn.settimeout(0.5)
            try:
                request = conn.recv(8192)
                path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
                if path.split(b"?")[0] in (b"/metrics", b"/"):
                    body, status, ctype = generate_latest(self.registry), b"200 OK", CONTENT_TYPE_LATEST.encode()
                else:
                    body, status, ctype = b"see /metrics\n", b"404 Not Found", b"text/plain"
                conn.sendall(b"HTTP/1.0 " + status + b"\r\nContent-Type: " + ctype
                             + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()
