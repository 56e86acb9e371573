"""The concurrency row: 64 `sleep 1` at once on a parad with the default pool config.

A second parad, started for this row with no pool overrides (only its log level,
and the bench's temporary runtime and state dirs), so the bash pool is what a
user gets: its min and max workers, its scaling, its sandbox. Each round submits
64 `sleep 1` through one `Client.map` and times until the last result is in.

While a round runs, a thread samples the memory of para's own processes every
SAMPLE_EVERY s: parad and every process under it that is Python or bubblewrap
(fork server, workers, their sandboxes), not the commands (`sleep`). The figure
is the largest sum of their PSS (psutil's memory_full_info().pss: a page shared
by k processes counts 1/k in each, so shared pages count once in the sum).
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from para.testing import Daemon

TASKS, SECONDS = 64, 1
SAMPLE_EVERY = 0.1   # seconds between memory samples; one costs about 1 ms of CPU per process
OWN = ("python", "bwrap")   # process names that are para's own; the rest under parad are commands


def start_default(tmp: Path, deadline: float) -> Daemon:
    """A parad on the built-in pools, untouched; python -P, as the bench's other parad."""
    return Daemon({"daemon": {"log_level": "warning"}}, tmp, runtime_dir=tmp / "r", python_flags=("-P",),
                  ready_timeout=deadline, builtin_pools=True)


class PssSampler:
    """The largest PSS sum of parad's own processes seen while running (a thread)."""

    def __init__(self, parad_pid: int) -> None:
        self.parad = psutil.Process(parad_pid)
        self.peak_bytes = 0
        self.peak_procs = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pss-sampler", daemon=True)

    def __enter__(self) -> PssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            total, procs = self.sample()
            self.samples += 1
            if total > self.peak_bytes:
                self.peak_bytes, self.peak_procs = total, procs

    def sample(self) -> tuple[int, int]:
        """(PSS bytes, processes) of para's own processes now."""
        total = procs = 0
        try:
            tree = [self.parad, *self.parad.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0, 0
        for p in tree:
            try:
                if p is self.parad or p.name().startswith(OWN):
                    total += p.memory_full_info().pss
                    procs += 1
            except psutil.Error:   # it ended between the listing and the read
                pass
        return total, procs


def one_round(client: Any, parad_pid: int) -> dict[str, float]:
    """Seconds for TASKS `sleep SECONDS` at once, and the PSS peak while they ran."""
    with PssSampler(parad_pid) as pss:
        t = time.perf_counter()
        results = list(client.map("bash", ({"command": f"sleep {SECONDS}"} for _ in range(TASKS)),
                                  return_exceptions=True))
        wall = time.perf_counter() - t
    bad = [r for r in results if not getattr(r, "ok", False)]
    if bad:
        raise RuntimeError(f"{len(bad)} of {TASKS} sleep tasks failed: {bad[0]}")
    workers = sum(1 for w in client.workers() if w["pool"] == "bash")
    # Host pressure (CPU or memory past the pool's thresholds) stops a pool growing: on a loaded
    # machine that, not the design, may be what held the round back.
    pressure = next(p for p in client.status()["pools"] if p["name"] == "bash")["pressure"]
    return {"wall_s": wall, "pss_mb": pss.peak_bytes / 1e6, "processes": pss.peak_procs, "workers": workers,
            "samples": pss.samples, "pressure_after": pressure}


def measure(tmp: Path, rounds: int, deadline: float) -> dict[str, Any]:
    """The row's figure: medians over `rounds` on a fresh default parad, which is stopped after."""
    from para.client import Client

    daemon = start_default(tmp, deadline)
    try:
        with Client(daemon.runtime_dir, timeout=60.0, name="bench-concurrency") as client:
            bash = next(p for p in client.status()["pools"] if p["name"] == "bash")
            per = [one_round(client, daemon.proc.pid) for _ in range(rounds)]
    finally:
        rc = daemon.stop(30.0)
    return {
        "tasks": TASKS, "command": f"sleep {SECONDS}",
        "pool": {"min_workers": bash["min_workers"], "max_workers": bash["max_workers"]},
        "wall_s": statistics.median(r["wall_s"] for r in per),
        "pss_mb": statistics.median(r["pss_mb"] for r in per),
        "workers": max(r["workers"] for r in per),
        "pressure": any(r["pressure_after"] for r in per),
        "rounds": [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in per],
        "parad_exit": rc,
    }
