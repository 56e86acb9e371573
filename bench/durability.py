#!/usr/bin/env python3
"""What the journal costs, and how soon a SIGKILLed parad serves again.

    python bench/durability.py [--tasks N] [--rounds R] [--queued Q] [--modes off,batched,sync] [--json]

Throughput: one parad per durability mode (`daemon.journal.durability`), alike
but for it, each with an echo pool of 2 workers; `Client.map("echo", ...)` of N
tasks, rounds alternating between the modes, so load on the machine falls on
all of them. Figures are medians; a ratio is the median of per-round ratios
against the `off` round just before. Target (issue 12): batched >= 0.8x off.

Restart: a parad (the first journaling mode given, else off) whose one bash
worker is kept busy by a `sleep`, with Q `true` tasks queued behind it, is
SIGKILLed; a new one starts on the same dirs. Timed from starting it: its
first answer to status, every pool ready, and the first queued task's result
(recovered from the journal; with durability off the queued tasks are gone).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import local_parad

from para.client import Client, ParaError
from para.daemon.config import DaemonSection
from para.testing import Daemon, wait_until

TARGET_BATCHED = 0.8
MODES = ("off", "batched", "sync")


def journal_config(mode: str) -> dict[str, Any]:
    """The daemon section for `mode`; none at all where this para has no journal (then only off runs)."""
    return {"journal": {"durability": mode}} if has_journal() else {}


def has_journal() -> bool:
    return "journal" in DaemonSection.model_fields


def filesystem_of(path: Path) -> str:
    """The type of the filesystem `path` is on (tmpfs makes every fsync free: sync then costs nothing)."""
    best, kind = "", "unknown"
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            where = fields[1].replace("\\040", " ")
            if str(path).startswith(where.rstrip("/") + "/") and len(where) > len(best):
                best, kind = where, fields[2]
    return kind


def map_round(client: Client, n: int) -> float:
    t = time.perf_counter()
    results = list(client.map("echo", ({"i": i} for i in range(n)), return_exceptions=True))
    dt = time.perf_counter() - t
    bad = [r for r in results if not getattr(r, "ok", False)]
    if bad:
        raise SystemExit(f"{len(bad)} of {n} echo tasks failed: {bad[0]}")
    return dt


def throughput(base: Path, modes: list[str], tasks: int, rounds: int) -> dict[str, Any]:
    daemons: dict[str, Daemon] = {}
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    try:
        for mode in modes:
            daemons[mode] = local_parad.start(base / f"tput-{mode}", {
                "daemon": {"log_level": "warning", **journal_config(mode)},
                "pools": {"echo": {"min_workers": 2, "max_workers": 2}}})
        clients = {mode: d.client(timeout=60) for mode, d in daemons.items()}
        try:
            for mode, c in clients.items():
                map_round(c, min(tasks, 2000))   # warm up: imports, caches, the journal's first pages
            for i in range(rounds):
                for mode, c in clients.items():
                    times[mode].append(map_round(c, tasks))
                print(f"round {i + 1}/{rounds}: " + ", ".join(
                    f"{mode} {tasks / t[-1]:,.0f}/s" for mode, t in times.items()), file=sys.stderr)
        finally:
            for c in clients.values():
                c.close()
    finally:
        for d in daemons.values():
            local_parad.stop(d, 30)
    rate = {mode: tasks / statistics.median(t) for mode, t in times.items()}
    ratios = {f"{mode}_vs_off": statistics.median(o / m for o, m in zip(times["off"], times[mode]))
              for mode in modes if mode != "off" and "off" in times}
    return {"tasks": tasks, "rounds": rounds, "tasks_per_s": rate, "ratios": ratios,
            "rounds_per_s": {mode: [round(tasks / x) for x in t] for mode, t in times.items()}}


def first_result(client: Client, task_id: str, timeout: float) -> dict[str, Any]:
    """Wait until task `task_id` has a result; its state then."""
    def done() -> dict[str, Any] | None:
        try:
            body = client.task(task_id)
        except ParaError:   # not known (yet, or at all)
            return None
        return body if body.get("result") is not None else None
    return wait_until(done, timeout, f"a result for task {task_id}")


def restart(base: Path, mode: str, queued: int) -> dict[str, Any]:
    d = local_parad.start(base / "restart", {
        "daemon": {"log_level": "warning", **journal_config(mode)},
        "pools": {"bash": {"min_workers": 1, "max_workers": 1, "max_queue": queued + 10,
                           "options": {"sandbox": {"run_as": None, "filesystem": {"writable": []}}}}}})
    try:
        with d.client(timeout=60) as c:
            c.submit("bash", command="sleep 3600")
            wait_until(lambda: any(t["state"] == "running" for t in c.ps()), 30, "the sleep to run")
            t = time.perf_counter()
            ids = [c.submit("bash", argv=["true"]).id for _ in range(queued)]
            submit_s = time.perf_counter() - t
        d.kill()
        t0 = time.perf_counter()
        d.restart()
        out: dict[str, Any] = {"mode": mode, "queued": queued, "submit_s": submit_s,
                               "to_status_s": d.answered_s, "to_ready_s": d.ready_s}
        with d.client(timeout=60) as c:
            try:
                c.task(ids[-1])
                out["last_known"] = True
            except ParaError:
                out["last_known"] = False
            if mode == "off":
                out["to_first_result_s"] = None
            else:
                body = first_result(c, ids[0], 120)
                out["to_first_result_s"] = time.perf_counter() - t0
                out["first_result_status"] = body["result"].status
        return out
    finally:
        local_parad.stop(d, 30)


def report(tput: dict[str, Any], rst: dict[str, Any]) -> str:
    rate, lines = tput["tasks_per_s"], []
    lines.append(f"echo map(), {tput['tasks']:,} tasks x {tput['rounds']} rounds, 2 workers (medians); "
                 f"journals on {tput['filesystem']}")
    for mode, r in rate.items():
        ratio = tput["ratios"].get(f"{mode}_vs_off")
        note = "" if ratio is None else f"   {ratio:.2f}x off"
        if mode == "batched" and ratio is not None:
            note += f" (target >= {TARGET_BATCHED:g}x: {'PASS' if ratio >= TARGET_BATCHED else 'MISS'})"
        lines.append(f"  durability {mode:<8} {r:8,.0f} /s{note}")
    lines.append(f"restart with {rst['queued']:,} queued bash tasks, durability {rst['mode']} "
                 f"(submitted in {rst['submit_s']:.1f} s), SIGKILL, then from starting the new parad:")
    lines.append(f"  first answer to status  {rst['to_status_s']:8.3f} s")
    lines.append(f"  every pool ready        {rst['to_ready_s']:8.3f} s")
    if rst["to_first_result_s"] is None:
        lines.append("  first queued result     n/a: durability off keeps no queued task across a crash "
                     f"(last queued task known after restart: {rst['last_known']})")
    else:
        lines.append(f"  first queued result     {rst['to_first_result_s']:8.3f} s ({rst['first_result_status']}; "
                     f"last queued task known: {rst['last_known']})")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=10000, help="echo tasks per map() round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--queued", type=int, default=10000, help="bash tasks queued when parad is killed")
    ap.add_argument("--modes", default=",".join(MODES), help="durability modes to compare, off first")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON instead")
    args = ap.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if modes[:1] != ["off"] or not set(modes) <= set(MODES):
        ap.error(f"--modes: start with off, then any of {', '.join(MODES[1:])}")
    if not has_journal() and modes != ["off"]:
        ap.error("this para has no journal (no daemon.journal in its config): run with --modes off")
    base = Path(tempfile.mkdtemp(prefix="pbd", dir="/tmp"))   # short: Unix socket paths are limited
    try:
        tput = throughput(base, modes, args.tasks, args.rounds)
        tput["filesystem"] = filesystem_of(base)
        rst = restart(base, next((m for m in modes if m != "off"), "off"), args.queued)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps({"throughput": tput, "restart": rst}, indent=2) if args.json else report(tput, rst))
    return 0


if __name__ == "__main__":
    sys.exit(main())
