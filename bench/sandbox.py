"""What isolation costs: `bash -c true` throughput with and without the sandbox.

    python bench/sandbox.py [--tasks N] [--rounds R] [--workers W] [--json]

One parad with two bash pools of W workers each, alike but for isolation
(`none`, and `namespaces`: each worker inside one long-lived bubblewrap
sandbox), against `xargs -P W bwrap ... bash -c true`, the per-command
sandbox with the same namespaces and mounts. Rounds alternate between the
three so that load on the machine hits all of them alike; ratios are of
medians. Targets (issue 3): isolated >= 0.8x unisolated, >= 3x per-command.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import local_parad

from para.client import Client
from para.sandbox import namespaces
from para.sandbox.policy import SandboxPolicy
from para.sandbox.probe import probe
from para.testing import Daemon

TARGET_VS_NONE, TARGET_VS_PER_COMMAND = 0.8, 3.0


# Commands run as parad's own user in every column: under run_as, the
# unisolated pool pays a fork per command (its worker may not lend the
# user its ids, see sandbox/spawn.py), which would flatter the ratio.
POLICY = {"run_as": None, "filesystem": {"writable": []}}


def per_command_argv(command: list[str]) -> tuple[list[str] | None, str]:
    """`command` inside a bubblewrap of its own, with the namespaces and mounts of an
    isolated pool's worker (bench/run.py reuses it); None and why when this host has none."""
    host = probe()
    if not host.namespaces:
        return None, f"bubblewrap namespaces unavailable: {host.namespaces_error}"
    return [*namespaces.worker_argv(host.bwrap, SandboxPolicy.model_validate(POLICY), host.unshare_user, [],
                                    command)], ""


def minimal_per_command_argv(command: list[str]) -> tuple[list[str] | None, str]:
    """`command` in the lightest bubblewrap an agent's sandbox would use: the host read-only, its own
    /dev, /proc and /tmp, every namespace bwrap can unshare; None and why when this host has none."""
    host = probe()
    if not host.namespaces:
        return None, f"bubblewrap namespaces unavailable: {host.namespaces_error}"
    unshare = ["--unshare-all"] if host.unshare_user else ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net"]
    return [host.bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
            *unshare, "--die-with-parent", "--new-session", *command], ""


def start_parad(tmp: Path, workers: int, policy: dict) -> Daemon:
    pool = {"tool": "bash", "min_workers": workers, "max_workers": workers}
    daemon = local_parad.start(tmp, {"daemon": {"log_level": "warning"}, "pools": {
        "plain": {**pool, "options": {"sandbox": {**policy, "isolation": "none"}}},
        "isolated": {**pool, "options": {"sandbox": {**policy, "isolation": "namespaces"}}},
    }})
    effective = daemon.status["sandbox"]["pools"]["isolated"]["effective"]
    if effective != "namespaces":
        local_parad.stop(daemon, 30)
        raise SystemExit(f"the isolated pool runs with isolation {effective}, not namespaces")
    return daemon


def para_round(client: Client, pool: str, n: int) -> float:
    t = time.perf_counter()
    results = list(client.map(pool, ({"command": "true"} for _ in range(n))))
    dt = time.perf_counter() - t
    bad = [r for r in results if not r.ok]
    if bad:
        raise SystemExit(f"{len(bad)} of {n} tasks failed in pool {pool}: {bad[0]}")
    return dt


def xargs_round(argv: list[str], n: int) -> float:
    t = time.perf_counter()
    subprocess.run(argv, input=b"true\n" * n, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    per_command, why = per_command_argv(["bash", "-c", "{}"])
    if per_command is None:
        raise SystemExit(f"bench/sandbox.py needs bubblewrap namespaces here: {why}")
    policy = POLICY
    xargs = ["xargs", "-P", str(args.workers), "-I{}", *per_command]
    tmp = Path(tempfile.mkdtemp(prefix="pbs", dir="/tmp"))
    daemon = start_parad(tmp, args.workers, policy)
    times: dict[str, list[float]] = {"none": [], "namespaces": [], "per_command": []}
    try:
        with Client(tmp / "r", timeout=60) as c:
            para_round(c, "plain", 100), para_round(c, "isolated", 100), xargs_round(xargs, 50)  # warm up
            for i in range(args.rounds):
                times["none"].append(para_round(c, "plain", args.tasks))
                times["namespaces"].append(para_round(c, "isolated", args.tasks))
                times["per_command"].append(xargs_round(xargs, args.tasks))
                print(f"round {i + 1}/{args.rounds}: " + ", ".join(
                    f"{k} {args.tasks / v[-1]:,.0f}/s" for k, v in times.items()), file=sys.stderr)
    finally:
        local_parad.stop(daemon, 30)
        shutil.rmtree(tmp, ignore_errors=True)
    rate = {k: args.tasks / statistics.median(v) for k, v in times.items()}
    vs_none, vs_per_command = rate["namespaces"] / rate["none"], rate["namespaces"] / rate["per_command"]
    figures = {"tasks_per_s": rate, "isolated_vs_none": vs_none, "isolated_vs_per_command": vs_per_command,
               "workers": args.workers, "tasks": args.tasks, "rounds": args.rounds,
               "per_command": shlex.join(xargs).replace("'{}'", "{}")}
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"bash -c true, {args.tasks:,} tasks x {args.rounds} rounds, {args.workers} workers (medians)")
    print(f"  para, isolation none        {rate['none']:8,.0f} /s")
    print(f"  para, isolation namespaces  {rate['namespaces']:8,.0f} /s   {vs_none:.2f}x none "
          f"(target >= {TARGET_VS_NONE:g}x: {'PASS' if vs_none >= TARGET_VS_NONE else 'MISS'})")
    print(f"  xargs -P {args.workers} bwrap per command {rate['per_command']:6,.0f} /s   "
          f"namespaces is {vs_per_command:.2f}x (target >= {TARGET_VS_PER_COMMAND:g}x: "
          f"{'PASS' if vs_per_command >= TARGET_VS_PER_COMMAND else 'MISS'})")
    print(f"  per-command peer: {figures['per_command']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
