#!/usr/bin/env python3
"""A command in a new workspace, in a warm one, and `bash -c true` run directly.

    python bench/workspaces.py [--rounds N]

Starts its own parad (bash pool, sandboxed as the host allows, commands
writable in their workspace alone), then alternates, round by round:

  direct   `bash -c true` started by this process (subprocess.run), the floor;
  warm     client.run("bash", argv=["true"]) in a workspace that has a worker;
  new      the same in a workspace never seen before: parad starts a worker
           for it (a fork from the fork server, a bubblewrap sandbox, the
           worker's Ready) before the command runs.

Prints each one's median and p90 over the rounds and the ratios of their
medians to `direct`. Nothing here is a pass/fail target: the first command in
a project pays once what every later one saves.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from para.testing import Daemon


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="para-bench-ws-", dir="/var/tmp"))
    daemon = None
    try:
        warm = base / "warm"
        warm.mkdir()
        config = {"daemon": {"log_level": "warning"}, "pools": {"bash": {
            "min_workers": 1, "max_workers": args.rounds + 2, "idle_timeout": 600,
            "options": {"sandbox": {"run_as": None, "filesystem": {"writable": ["."]}}}}}}
        daemon = Daemon(config, base / "parad", python_flags=["-P"], require_ok=True)
        figures: dict[str, list[float]] = {"direct": [], "warm": [], "new": []}
        with daemon.client() as c:
            def run_in(folder: Path) -> None:
                result = c.run("bash", argv=["true"], workspace=str(folder), cwd=str(folder), caller_env=None)
                assert result.ok, result
            run_in(warm)   # its worker starts here, outside the rounds
            isolation = c.status()["daemon"]["isolation"]
            for n in range(args.rounds):
                fresh = base / f"new-{n}"
                fresh.mkdir()
                figures["direct"].append(timed(lambda: subprocess.run(["bash", "-c", "true"], check=True)))
                figures["warm"].append(timed(lambda: run_in(warm)))
                figures["new"].append(timed(lambda: run_in(fresh)))
        print(f"{args.rounds} rounds, isolation {isolation}, alternating direct / warm / new")
        direct = statistics.median(figures["direct"])
        for name, values in figures.items():
            values.sort()
            p50, p90 = statistics.median(values), values[int(0.9 * (len(values) - 1))]
            print(f"  {name:<7} p50 {p50 * 1e3:8.2f} ms   p90 {p90 * 1e3:8.2f} ms   {p50 / direct:6.1f}x direct")
        return 0
    finally:
        if daemon is not None:
            daemon.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
