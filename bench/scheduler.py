"""What the scheduler costs and how it treats an urgent call during a big batch.

    python bench/scheduler.py [--tasks 10000] [--root DIR] [--json]

One parad (echo, grep and bash pools of the machine's CPU count), measured in one run:

1. A batch of N `echo` tasks with no dependencies, and the same N through
   `Client.map` (the plain pipeline): tasks/s of each, and the scheduler's
   overhead per task as the difference of their per-task times. Then a
   chained batch (each task after the previous one), the worst case for
   dependency tracking.
2. A batch of N `grep` tasks over a real source tree (--root, default this
   checkout): tasks/s.
3. The latency of one `echo` call at priority 0 while a 10,000-task bash
   batch (`true`) fills the queue, against the same call on an idle daemon:
   p50 and p99 of each, and their ratio. Target (issue 4): p99 under load
   within 5x the idle p99.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import local_parad

from para.client import Client
from para.testing import Daemon

ROOT = Path(__file__).resolve().parent.parent
LATENCY_TARGET = 5.0


def start_parad(tmp: Path, workers: int) -> Daemon:
    pool = {"min_workers": workers, "max_workers": workers}
    return local_parad.start(tmp, {"daemon": {"log_level": "warning"}, "pools": {
        "echo": dict(pool), "grep": dict(pool),
        "bash": {**pool, "max_queue": 20000, "options": {"sandbox": {"run_as": None, "isolation": "none"}}},
    }})


def timed_batch(c: Client, tasks: list[dict]) -> float:
    t = time.perf_counter()
    handle = c.batch({"tasks": tasks})
    results = handle.results(timeout=600)
    dt = time.perf_counter() - t
    bad = [r for r in results.values() if not r.ok]
    if bad:
        raise SystemExit(f"{len(bad)} batch tasks failed: {bad[0]}")
    handle.close()
    return dt


def timed_map(c: Client, tool: str, args: list[dict]) -> float:
    t = time.perf_counter()
    results = list(c.map(tool, args))
    dt = time.perf_counter() - t
    if not all(r.ok for r in results):
        raise SystemExit(f"a {tool} task failed")
    return dt


def latencies(c: Client, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        c.run("echo", ping=1, priority=0)
        out.append(time.perf_counter() - t)
    return sorted(out)


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=10000)
    ap.add_argument("--root", default=str(ROOT), help="source tree for the grep batch")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    n = args.tasks
    tmp = Path(tempfile.mkdtemp(prefix="pbq", dir="/tmp"))
    daemon = start_parad(tmp, args.workers)
    f: dict = {"tasks": n, "workers": args.workers}
    try:
        with Client(tmp / "r", timeout=60) as c, Client(tmp / "r", timeout=60) as urgent:
            echo = [{"id": f"e{i}", "tool": "echo", "args": {"i": i}} for i in range(n)]
            timed_batch(c, echo[:500]), timed_map(c, "echo", [{"i": i} for i in range(500)])  # warm up
            batch_s = statistics.median(timed_batch(c, echo) for _ in range(3))
            map_s = statistics.median(timed_map(c, "echo", [{"i": i} for i in range(n)]) for _ in range(3))
            chain = [{**t, "after": [f"e{i - 1}"]} if i else t for i, t in enumerate(echo[:2000])]
            chain_s = timed_batch(c, chain)
            f["echo_batch_per_s"], f["echo_map_per_s"] = n / batch_s, n / map_s
            f["scheduler_overhead_us_per_task"] = (batch_s - map_s) / n * 1e6
            f["echo_chain_2000_per_s"] = 2000 / chain_s
            patterns = ["def ", "class ", "import ", "return", "self", "TODO", "raise", "async", "yield", "lambda"]
            grep = [{"id": f"g{i}", "tool": "grep", "args": {"pattern": patterns[i % len(patterns)] + str(i % 7),
                                                              "path": args.root, "max_results": 10}} for i in range(n)]
            f["grep_batch_per_s"] = n / timed_batch(c, grep)

            idle = latencies(urgent, 300)
            handle = c.batch({"tasks": [{"id": f"b{i}", "tool": "bash", "args": {"command": "true"}} for i in range(10000)]})
            time.sleep(0.5)  # let the queue fill and the workers get busy
            busy = latencies(urgent, 300)
            left = handle.progress()
            handle.cancel()
            handle.results(timeout=600)
            f["urgent_idle_p50_ms"], f["urgent_idle_p99_ms"] = pct(idle, 0.5) * 1e3, pct(idle, 0.99) * 1e3
            f["urgent_busy_p50_ms"], f["urgent_busy_p99_ms"] = pct(busy, 0.5) * 1e3, pct(busy, 0.99) * 1e3
            f["urgent_p99_ratio"] = pct(busy, 0.99) / pct(idle, 0.99)
            f["bash_batch_done_when_measured"] = left["done"]
    finally:
        local_parad.stop(daemon, 60)
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(f, indent=2))
        return 0
    ok = f["urgent_p99_ratio"] <= LATENCY_TARGET
    print(f"scheduler, {n:,} tasks, {args.workers} workers per pool")
    print(f"  echo batch (no deps)   {f['echo_batch_per_s']:9,.0f} tasks/s   map() {f['echo_map_per_s']:,.0f} tasks/s"
          f"   batch overhead {f['scheduler_overhead_us_per_task']:.0f} us/task")
    print(f"  echo chain of 2,000    {f['echo_chain_2000_per_s']:9,.0f} tasks/s")
    print(f"  grep batch over {args.root}: {f['grep_batch_per_s']:,.0f} tasks/s")
    print(f"  urgent echo (priority 0): idle p50 {f['urgent_idle_p50_ms']:.2f} ms p99 {f['urgent_idle_p99_ms']:.2f} ms; "
          f"during a 10,000-task bash batch p50 {f['urgent_busy_p50_ms']:.2f} ms p99 {f['urgent_busy_p99_ms']:.2f} ms")
    print(f"  p99 under load / idle: {f['urgent_p99_ratio']:.2f}x (target <= {LATENCY_TARGET:g}x: {'PASS' if ok else 'MISS'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
