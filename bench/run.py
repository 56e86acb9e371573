#!/usr/bin/env python3
"""para benchmarks: parad against its peers, measured in the same run.

    python bench/run.py [--quick] [--workers N] [--json [FILE]]

Starts its own parad (temporary config, runtime and state dirs), waits until
every pool is ready, then measures

  1. echo round-trip latency, p50/p99: client.run("echo", x=1) in a loop,
     against a raw pyzmq REQ/REP round trip over ipc:// to an echo server in
     a child process (the target's reference), and through a raw 2-hop relay
     (the floor of parad's client -> daemon -> worker shape);
  2. echo pipelined throughput: Client.map over many echo tasks, against raw
     pyzmq DEALER/ROUTER pipelining to the same child echo server;
  3. `bash -c true` throughput: Client.map on the bash pool (N workers),
     against `xargs -P N` and GNU parallel (if installed), and through a bare
     pyzmq relay in front of N bare Python spawners (bench/floor.py: the
     floor of parad's client -> daemon -> worker shape for commands).

para and its peers alternate round by round (so a burst of load from elsewhere
hits both); each figure is the median over rounds and each ratio the median of
per-round ratios. The daemon is always stopped (SIGTERM, then SIGKILL after
30 s) and the temp dir removed, even on error or SIGTERM.
See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import msgpack
import zmq

from para.testing import Daemon, DaemonError

from floor import SpawnFloor
from peers import Peers
from stats import percentile

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# Sizes per mode. Rounds are repeated and the median reported.
PARAMS = {
    "full": dict(rounds=5, lat_warmup=300, lat_calls=2000, raw_lat_calls=5000,
                 tput_tasks=50_000, tput_rounds=3, raw_tput_msgs=50_000,
                 bash_tasks=2000, bash_rounds=3),
    "quick": dict(rounds=3, lat_warmup=100, lat_calls=1000, raw_lat_calls=2000,
                  tput_tasks=10_000, tput_rounds=3, raw_tput_msgs=20_000,
                  bash_tasks=500, bash_rounds=3),
}
RAW_WINDOW = 2048          # messages in flight for the raw pipelined reference (= para's MAP_WINDOW)
READY_DEADLINE = 30.0      # seconds for parad to bring all pools up
STOP_DEADLINE = 30.0       # seconds for parad to exit after SIGTERM before it is killed

TARGETS = {
    "latency_ratio_max": 3.0,          # para echo p50 / raw pyzmq p50
    "echo_tput_min": 10_000.0,         # tasks/s through Client.map
    "bash_vs_xargs_min": 0.8,          # para bash tasks/s / xargs tasks/s
}

# ---- helpers -------------------------------------------------------------------

def log(msg: str) -> None:
    print(f"  .. {msg}", file=sys.stderr, flush=True)


def git_describe() -> str:
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return f"{head}{' (dirty)' if dirty else ''}" if head else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ---- the daemon ------------------------------------------------------------------

def start_daemon(tmp: Path, bash_workers: int) -> Daemon:
    """A parad of our own in `tmp` (sockets in tmp/r), every pool ok and at strength; python -P, as users run it."""
    config = {"daemon": {"log_level": "warning"}, "pools": {
        "echo": {"min_workers": 2, "max_workers": 2},
        # The default sandbox: bubblewrap per worker and, as root, commands as the workspace's owner
        # (root for the bench's own folder: no switch; see bench/README.md).
        "bash": {"min_workers": bash_workers, "max_workers": bash_workers},
    }}
    return Daemon(config, tmp, runtime_dir=tmp / "r", python_flags=("-P",), ready_timeout=READY_DEADLINE,
                  require_ok=True)


def stop_daemon(daemon: Daemon) -> str:
    """SIGTERM parad (SIGKILL after STOP_DEADLINE); a note if it did not exit 0, else ""."""
    try:
        rc = daemon.stop(STOP_DEADLINE)
    except DaemonError as exc:
        return str(exc)
    return f"parad exited with {rc}" if rc != 0 else ""


def log_tail(daemon: Daemon, n: int = 20) -> str:
    """The last `n` lines parad wrote."""
    return "\n".join(daemon.log().splitlines()[-n:])


class RawPeers:
    """The raw pyzmq peers of the echo rounds (bench/peers.py), each in a child process."""

    def __init__(self, tmp: Path) -> None:
        self.rep_path = str(tmp / "raw-rep.sock")
        self.router_path = str(tmp / "raw-router.sock")
        self.relay_path = str(tmp / "raw-relay.sock")
        backend_path = str(tmp / "raw-backend.sock")
        self.peers = Peers()
        try:
            self.peers.start("rep", self.rep_path)
            self.peers.start("router", self.router_path)
            relay = self.peers.start("relay", self.relay_path, backend_path, wait=False)
            self.peers.start("backend", backend_path)
            self.peers.ready(relay)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.peers.stop()


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


# ---- measurements: one round each ---------------------------------------------------

PAYLOAD = {"tool": "echo", "args": {"x": 1}}   # what the raw peers carry: about a TaskSpec's size


def para_latency_round(client: Any, n: int) -> tuple[float, float]:
    clock = time.perf_counter
    samples = []
    for _ in range(n):
        t = clock()
        r = client.run("echo", x=1)
        samples.append(clock() - t)
    if not r.ok or r.value != {"x": 1}:
        raise RuntimeError(f"echo returned {r!r}")
    samples.sort()
    return percentile(samples, 50), percentile(samples, 99)


def para_map_round(client: Any, pool: str, args: dict, n: int) -> float:
    t = time.perf_counter()
    ok = sum(1 for r in client.map(pool, (args for _ in range(n)), return_exceptions=True) if getattr(r, "ok", False))
    dt = time.perf_counter() - t
    if ok != n:
        raise RuntimeError(f"{pool}: only {ok} of {n} tasks succeeded")
    return dt


class RawSocket:
    """A client socket to one raw peer."""

    def __init__(self, path: str, kind: int) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(kind)
        for opt, value in ((zmq.LINGER, 0), (zmq.SNDHWM, 0), (zmq.RCVHWM, 0)):
            self.sock.setsockopt(opt, value)
        self.sock.connect("ipc://" + path)

    def latency_round(self, n: int) -> tuple[float, float]:
        sock, pack, unpack, clock = self.sock, msgpack.packb, msgpack.unpackb, time.perf_counter
        samples = []
        for _ in range(n):
            t = clock()
            sock.send(pack(PAYLOAD))
            unpack(sock.recv())
            samples.append(clock() - t)
        samples.sort()
        return percentile(samples, 50), percentile(samples, 99)

    def pipelined_round(self, n: int) -> float:
        """n messages with up to RAW_WINDOW in flight, one message per send (no batching)."""
        sock, pack, unpack = self.sock, msgpack.packb, msgpack.unpackb
        t = time.perf_counter()
        sent = received = 0
        while received < n:
            while sent < n and sent - received < RAW_WINDOW:
                sock.send(pack(PAYLOAD))
                sent += 1
            unpack(sock.recv())
            received += 1
        return time.perf_counter() - t

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


def external_round(cmd: list[str], n: int, cpu: ChildCpu) -> float:
    """Run `cmd` with n lines of `true` on stdin; seconds it took."""
    data = b"true\n" * n
    with cpu.timed(n):
        t = time.perf_counter()
        proc = subprocess.run(cmd, input=data, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        dt = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} exited {proc.returncode}: {proc.stderr.decode(errors='replace')[-500:]}")
    return dt


def gnu_parallel() -> tuple[list[str] | None, str]:
    """GNU parallel's command prefix, or None and why it is skipped."""
    exe = shutil.which("parallel")
    if exe is None:
        return None, "GNU parallel not installed"
    # moreutils ships a different `parallel`; GNU parallel names itself in --version.
    try:
        ver = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"{exe} --version failed: {exc}"
    if "GNU parallel" not in ver.stdout:
        return None, f"{exe} is not GNU parallel (moreutils?)"
    return [exe, "--will-cite"], ver.stdout.splitlines()[0]


# ---- summaries -------------------------------------------------------------------------

def latency_figure(rounds: list[tuple[float, float]], cpu: CpuMeter | None = None) -> dict:
    out = {
        "p50_us": statistics.median(r[0] for r in rounds) * 1e6,
        "p99_us": statistics.median(r[1] for r in rounds) * 1e6,
        "rounds_p50_us": [round(r[0] * 1e6, 1) for r in rounds],
        "rounds_p99_us": [round(r[1] * 1e6, 1) for r in rounds],
    }
    if cpu is not None:
        out["cpu_us_per_task"] = cpu.per_task_us()
    return out


def tput_figure(seconds: list[float], n: int, cpu: CpuMeter | ChildCpu | None = None, **extra: Any) -> dict:
    rates = [n / s for s in seconds]
    out = {"tasks": n, "per_s": statistics.median(rates), "rounds_per_s": [round(r) for r in rates]}
    if cpu is not None:
        out["cpu_us_per_task"] = cpu.per_task_us()
    out.update(extra)
    return out


def paired_ratio(ours: list[float], theirs: list[float]) -> float:
    """Median over rounds of ours/theirs, each pair measured back to back."""
    return statistics.median(a / b for a, b in zip(ours, theirs))


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


# ---- report ------------------------------------------------------------------------

def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def cpu_line(cpu: dict[str, float]) -> str:
    parts = [f"{k} {v:.0f}" for k, v in cpu.items() if k != "commands" or v >= 1]
    return ", ".join(parts) + f"; total {sum(cpu.values()):.0f}"


def table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for i, row in enumerate(rows):
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
        if i == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return out


def report(res: dict) -> str:
    m, f, r, t, ok = res["meta"], res["figures"], res["ratios"], TARGETS, res["pass"]
    n, nan = m["bash_workers"], float("nan")
    lat, raw, relay = f["echo_latency_para"], f["echo_latency_raw_reqrep"], f["echo_latency_raw_relay"]
    et, rt = f["echo_tput_para"], f["echo_tput_raw_pipelined"]
    bt, xt, gp, ft = f["bash_tput_para"], f["bash_tput_xargs"], f.get("bash_tput_gnu_parallel"), f["bash_tput_floor"]
    lines = [
        "## para bench",
        "",
        f"command:  {m['command']}",
        f"machine:  {m['cpu_count']} CPUs, {m['platform']}, Python {m['python']}",
        f"versions: pyzmq {m['pyzmq']}, libzmq {m['libzmq']}, msgpack {m['msgpack']}, para {m['para_commit']}",
        f"load:     load avg at start {m['loadavg']}; during the run the machine was "
        f"{m.get('machine_busy_pct', nan):.0f}% busy (this bench and its children "
        f"{m.get('bench_cpu_pct', nan):.0f}%), steal {m.get('steal_pct', nan):.0f}%",
        f"daemon:   echo pool 2 workers, bash pool {n} workers, ready in {m['ready_s']:.2f}s",
        f"mode:     {m['mode']}; para and its peers alternate round by round; figures are medians "
        f"over rounds, ratios medians of per-round ratios; wall {m['wall_s']:.1f}s",
        "",
    ]
    rows = [
        ("figure", "para", "peer / floor, same rounds", "ratio", "target"),
        ("echo run() round trip p50", f"{lat['p50_us']:.0f} us", f"raw REQ/REP {raw['p50_us']:.0f} us",
         f"{r['echo_latency_p50_vs_raw']:.2f}x", f"<= {t['latency_ratio_max']:g}x {verdict(ok['echo_latency'])}"),
        ("echo run() round trip p99", f"{lat['p99_us']:.0f} us", f"raw REQ/REP {raw['p99_us']:.0f} us",
         f"{r['echo_latency_p99_vs_raw']:.2f}x", ""),
        ("echo run() round trip p50", f"{lat['p50_us']:.0f} us", f"raw 2-hop relay {relay['p50_us']:.0f} us",
         f"{r['echo_latency_p50_vs_relay']:.2f}x", "(info)"),
        (f"echo map(), {et['tasks']:,} tasks", f"{et['per_s']:,.0f} /s", f"raw DEALER/ROUTER {rt['per_s']:,.0f} /s",
         f"{r['echo_tput_vs_raw']:.2f}x", f">= {t['echo_tput_min']:,.0f}/s {verdict(ok['echo_tput'])}"),
        (f"bash -c true map(), {bt['tasks']:,}", f"{bt['per_s']:,.0f} /s", f"xargs -P {n} {xt['per_s']:,.0f} /s",
         f"{r['bash_tput_vs_xargs']:.2f}x", f">= {t['bash_vs_xargs_min']:g}x {verdict(ok['bash_vs_xargs'])}"),
    ]
    if gp:
        rows.append((f"bash -c true map(), {bt['tasks']:,}", f"{bt['per_s']:,.0f} /s",
                     f"GNU parallel -j {n} {gp['per_s']:,.0f} /s", f"{r['bash_tput_vs_gnu_parallel']:.2f}x", "(info)"))
    rows.append((f"bash -c true map(), {bt['tasks']:,}", f"{bt['per_s']:,.0f} /s",
                 f"relay + spawn floor {ft['per_s']:,.0f} /s", f"{r['bash_tput_vs_floor']:.2f}x", "(info)"))
    lines += table(rows)
    lines += [
        "",
        "Floors of para's shape, with no para code (see bench/README.md). para's code only adds to",
        "them: a floor at or near a target leaves no room for any Python supervisor relaying to Python workers.",
        "",
    ]
    lines += table([
        ("floor", "measured", "peer, same rounds", "ratio", "target it bounds"),
        ("raw 2-hop relay round trip p50", f"{relay['p50_us']:.0f} us", f"raw REQ/REP {raw['p50_us']:.0f} us",
         f"{r['echo_latency_relay_vs_raw']:.2f}x", f"echo p50 <= {t['latency_ratio_max']:g}x"),
        (f"relay + spawn, {ft['tasks']:,} bash -c true", f"{ft['per_s']:,.0f} /s", f"xargs -P {n} {xt['per_s']:,.0f} /s",
         f"{r['bash_floor_vs_xargs']:.2f}x", f"bash >= {t['bash_vs_xargs_min']:g}x xargs"),
    ])
    lines += [
        "",
        "CPU per task, us (user+sys, all threads, timed rounds only):",
        f"  echo run():  {cpu_line(lat['cpu_us_per_task'])}",
        f"  echo map():  {cpu_line(et['cpu_us_per_task'])}",
        f"  bash map():  {cpu_line(bt['cpu_us_per_task'])}",
        f"  xargs:       xargs + bash {xt['cpu_us_per_task']['total']:.0f}",
    ]
    if gp:
        lines.append(f"  parallel:    parallel + bash {gp['cpu_us_per_task']['total']:.0f}")
    lines.append(f"  floor:       {cpu_line(ft['cpu_us_per_task'])}")
    lines += [
        "",
        "rounds:",
        f"  run() p50 para {lat['rounds_p50_us']} / REQ-REP {raw['rounds_p50_us']} / relay {relay['rounds_p50_us']} us",
        f"  run() p99 para {lat['rounds_p99_us']} / REQ-REP {raw['rounds_p99_us']} us",
        f"  echo map() {et['rounds_per_s']} / raw pipelined {rt['rounds_per_s']} per s",
        f"  bash map() {bt['rounds_per_s']} / xargs {xt['rounds_per_s']}"
        + (f" / parallel {gp['rounds_per_s']}" if gp else "") + f" / floor {ft['rounds_per_s']} per s",
        "",
        f"xargs:    {xt['command']}",
        f"parallel: {gp['command'] if gp else m['gnu_parallel'] + '; skipped'}",
    ]
    for note in res["notes"]:
        lines.append(f"note:     {note}")
    return "\n".join(lines)


# ---- main ----------------------------------------------------------------------------

def measure(res: dict, daemon: Daemon, peers: RawPeers, p: dict, workers: int) -> None:
    """Run the three measurements, para and its peers alternating round by round."""
    from para.client import Client

    f = res["figures"]
    with Client(daemon.runtime_dir, timeout=30.0, name="bench") as client:
        worker_list = client.workers()
        rep, relay = RawSocket(peers.rep_path, zmq.REQ), RawSocket(peers.relay_path, zmq.DEALER)
        pipe = RawSocket(peers.router_path, zmq.DEALER)
        try:
            log(f"1/3 echo round trips: para run() x {p['lat_calls']}, raw REQ/REP and relay x {p['raw_lat_calls']}, "
                f"{p['rounds']} rounds")
            para_latency_round(client, p["lat_warmup"])
            rep.latency_round(p["lat_warmup"])
            relay.latency_round(p["lat_warmup"])
            cpu = CpuMeter(daemon.proc.pid, worker_list, "echo")
            lat: dict[str, list] = {"para": [], "rep": [], "relay": []}
            for _ in range(p["rounds"]):
                with cpu.timed(p["lat_calls"]):
                    lat["para"].append(para_latency_round(client, p["lat_calls"]))
                lat["rep"].append(rep.latency_round(p["raw_lat_calls"]))
                lat["relay"].append(relay.latency_round(p["raw_lat_calls"]))
            f["echo_latency_para"] = latency_figure(lat["para"], cpu)
            f["echo_latency_raw_reqrep"] = latency_figure(lat["rep"])
            f["echo_latency_raw_relay"] = latency_figure(lat["relay"])

            log(f"2/3 echo throughput: para map() x {p['tput_tasks']:,}, raw pipelined x {p['raw_tput_msgs']:,}, "
                f"{p['tput_rounds']} rounds")
            para_map_round(client, "echo", {"x": 1}, min(p["tput_tasks"], 2000))
            pipe.pipelined_round(min(p["raw_tput_msgs"], 2000))
            cpu = CpuMeter(daemon.proc.pid, worker_list, "echo")
            para_s, raw_s = [], []
            for _ in range(p["tput_rounds"]):
                with cpu.timed(p["tput_tasks"]):
                    para_s.append(para_map_round(client, "echo", {"x": 1}, p["tput_tasks"]))
                raw_s.append(pipe.pipelined_round(p["raw_tput_msgs"]))
            f["echo_tput_para"] = tput_figure(para_s, p["tput_tasks"], cpu)
            f["echo_tput_raw_pipelined"] = tput_figure(raw_s, p["raw_tput_msgs"])
        finally:
            for sock in (rep, relay, pipe):
                sock.close()
            peers.stop()  # idle, but not in the way of the bash rounds

        n = p["bash_tasks"]
        xargs_cmd = ["xargs", "-P", str(workers), "-I{}", "bash", "-c", "{}"]
        parallel_prefix, parallel_note = gnu_parallel()
        res["meta"]["gnu_parallel"] = parallel_note
        parallel_cmd = parallel_prefix + ["-j", str(workers), "bash", "-c", "{}"] if parallel_prefix else None
        log(f"3/3 bash -c true throughput: para map() vs xargs -P {workers}"
            + (" vs GNU parallel" if parallel_cmd else "") + f" vs the relay + spawn floor, {n:,} tasks, "
            f"{p['bash_rounds']} rounds")
        para_map_round(client, "bash", {"command": "true"}, min(n, 50))
        floor = None
        try:
            floor = SpawnFloor(daemon.tmp, workers)
            floor.round(min(n, 50))
            cpu, xcpu, pcpu = CpuMeter(daemon.proc.pid, worker_list, "bash"), ChildCpu(), ChildCpu()
            para_s, xargs_s, par_s, floor_s = [], [], [], []
            for _ in range(p["bash_rounds"]):
                with cpu.timed(n):
                    para_s.append(para_map_round(client, "bash", {"command": "true"}, n))
                xargs_s.append(external_round(xargs_cmd, n, xcpu))
                if parallel_cmd:
                    par_s.append(external_round(parallel_cmd, n, pcpu))
                floor_s.append(floor.round(n))
        finally:
            if floor is not None:
                floor.stop()
    shell_cmd = f"printf 'true\\n%.0s' $(seq {n}) | "
    f["bash_tput_para"] = tput_figure(para_s, n, cpu)
    f["bash_tput_xargs"] = tput_figure(xargs_s, n, xcpu, command=shell_cmd + shlex.join(xargs_cmd))
    if parallel_cmd:
        f["bash_tput_gnu_parallel"] = tput_figure(par_s, n, pcpu, command=shell_cmd + shlex.join(parallel_cmd))
    f["bash_tput_floor"] = tput_figure(floor_s, n, floor)

    r = res["ratios"]
    r["echo_latency_p50_vs_raw"] = paired_ratio([x[0] for x in lat["para"]], [x[0] for x in lat["rep"]])
    r["echo_latency_p99_vs_raw"] = paired_ratio([x[1] for x in lat["para"]], [x[1] for x in lat["rep"]])
    r["echo_latency_p50_vs_relay"] = paired_ratio([x[0] for x in lat["para"]], [x[0] for x in lat["relay"]])
    r["echo_latency_relay_vs_raw"] = paired_ratio([x[0] for x in lat["relay"]], [x[0] for x in lat["rep"]])
    r["echo_tput_vs_raw"] = paired_ratio(f["echo_tput_para"]["rounds_per_s"], f["echo_tput_raw_pipelined"]["rounds_per_s"])
    r["bash_tput_vs_xargs"] = paired_ratio(xargs_s, para_s)  # seconds: theirs / ours = our rate / theirs
    if parallel_cmd:
        r["bash_tput_vs_gnu_parallel"] = paired_ratio(par_s, para_s)
    r["bash_tput_vs_floor"] = paired_ratio(floor_s, para_s)
    r["bash_floor_vs_xargs"] = paired_ratio(xargs_s, floor_s)
    res["pass"] = {
        "echo_latency": r["echo_latency_p50_vs_raw"] <= TARGETS["latency_ratio_max"],
        "echo_tput": f["echo_tput_para"]["per_s"] >= TARGETS["echo_tput_min"],
        "bash_vs_xargs": r["bash_tput_vs_xargs"] >= TARGETS["bash_vs_xargs_min"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Benchmark parad against raw pyzmq, xargs and GNU parallel.")
    ap.add_argument("--quick", action="store_true", help="smaller sizes, under ~30 s")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="bash pool workers and xargs/parallel -P (default: os.cpu_count())")
    ap.add_argument("--json", nargs="?", const="-", metavar="FILE",
                    help="also dump figures as JSON, to FILE or (no FILE) to stdout after the table")
    args = ap.parse_args(argv)
    if args.workers < 1:
        ap.error("--workers must be at least 1")

    # SIGTERM/SIGHUP become SystemExit, so the finally below still stops parad and the raw peers.
    def _terminated(signum: int, _frame: Any) -> None:
        raise SystemExit(f"bench: {signal.Signals(signum).name}, stopping")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminated)

    mode = "quick" if args.quick else "full"
    p = PARAMS[mode]
    wall0 = time.perf_counter()
    stat0 = steal_and_busy()
    own0 = own_cpu()
    res: dict[str, Any] = {
        "meta": {
            "command": shlex.join(["python", sys.argv[0]] + (argv if argv is not None else sys.argv[1:])),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "pyzmq": zmq.pyzmq_version(),
            "libzmq": zmq.zmq_version(),
            "msgpack": ".".join(map(str, msgpack.version)),
            "para_commit": git_describe(),
            "mode": mode,
            "bash_workers": args.workers,
            "params": p,
        },
        "targets": TARGETS,
        "figures": {},
        "ratios": {},
        "notes": [],
    }
    tmp = Path(tempfile.mkdtemp(prefix="pb", dir="/tmp"))
    daemon = peers = None
    ok = False
    exit_note = ""
    try:
        log(f"starting parad in {tmp}")
        daemon = start_daemon(tmp, args.workers)
        res["meta"]["ready_s"] = daemon.ready_s
        peers = RawPeers(tmp)
        measure(res, daemon, peers, p, args.workers)
        ok = True
    except DaemonError as exc:  # it did not come up: it is stopped already, and its log is in the message
        exit_note = f"parad did not start: {exc}"
        print(f"bench: {exit_note}", file=sys.stderr)
    finally:
        if peers is not None:
            peers.stop()
        if daemon is not None:
            log("stopping parad")
            exit_note = stop_daemon(daemon)
            if exit_note:
                res["notes"].append(exit_note)
                print(f"bench: {exit_note}\n{log_tail(daemon)}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)
    wall = time.perf_counter() - wall0
    res["meta"]["wall_s"] = wall
    stat1 = steal_and_busy()
    if stat0 and stat1:
        # Everything this bench started has been reaped by now, so RUSAGE_CHILDREN covers it.
        hz, capacity = os.sysconf("SC_CLK_TCK"), wall * (os.cpu_count() or 1)
        own = own_cpu() - own0
        res["meta"]["steal_pct"] = (stat1[0] - stat0[0]) / hz / capacity * 100
        res["meta"]["machine_busy_pct"] = (stat1[1] - stat0[1]) / hz / capacity * 100
        res["meta"]["bench_cpu_pct"] = own / capacity * 100
    if ok:
        print(report(res), flush=True)
        if args.json == "-":
            print()
            print(json.dumps(res, indent=2))
        elif args.json:
            Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
            print(f"\nJSON written to {args.json}")
    # Targets are reported, not enforced: exit 0 when the bench ran and parad stopped cleanly.
    return 0 if ok and not exit_note else 1


if __name__ == "__main__":
    sys.exit(main())
