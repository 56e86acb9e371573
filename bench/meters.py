"""CPU meters of the benches: per party of a para measurement, of reaped children, of the machine."""

from __future__ import annotations

import contextlib
import resource
from collections.abc import Iterator


class CpuMeter:
    """CPU seconds (user + system, all threads) of each party of a para measurement,
    summed over the timed rounds only."""

    def __init__(self, daemon_pid: int, workers: list[dict], pool: str) -> None:
        import psutil
        self.procs = {"client": [psutil.Process()], "parad": [psutil.Process(daemon_pid)],
                      "workers": [psutil.Process(w["pid"]) for w in workers if w["pool"] == pool and w.get("pid")]}
        self.total = {"client": 0.0, "parad": 0.0, "workers": 0.0, "commands": 0.0}
        self.tasks = 0

    def _snapshot(self) -> dict[str, float]:
        out = {}
        for name, procs in self.procs.items():
            times = [p.cpu_times() for p in procs]
            out[name] = sum(t.user + t.system for t in times)
            if name == "workers":  # the commands they ran and reaped (bash)
                out["commands"] = sum(t.children_user + t.children_system for t in times)
        return out

    @contextlib.contextmanager
    def timed(self, tasks: int) -> Iterator[None]:
        before = self._snapshot()
        yield
        after = self._snapshot()
        for k in self.total:
            self.total[k] += after[k] - before[k]
        self.tasks += tasks

    def per_task_us(self) -> dict[str, float]:
        return {k: round(v / max(self.tasks, 1) * 1e6, 1) for k, v in self.total.items()}


class ChildCpu:
    """CPU of reaped children (an external tool and everything it ran), summed over timed rounds."""

    def __init__(self) -> None:
        self.total = 0.0
        self.tasks = 0

    @contextlib.contextmanager
    def timed(self, tasks: int) -> Iterator[None]:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        yield
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.total += (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        self.tasks += tasks

    def per_task_us(self) -> dict[str, float]:
        return {"total": round(self.total / max(self.tasks, 1) * 1e6, 1)}


def own_cpu() -> float:
    """CPU seconds of this process and of every child it has reaped (and theirs, transitively)."""
    return sum(getattr(resource.getrusage(who), field) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for field in ("ru_utime", "ru_stime"))


def steal_and_busy() -> tuple[float, float] | None:
    """(steal, busy) jiffies from /proc/stat, to tell how contended the machine was."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    steal = v[7] if len(v) > 7 else 0
    return steal, sum(v[:8]) - idle - steal
