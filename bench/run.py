#!/usr/bin/env python3
"""para benchmarks: parad against its peers, measured in the same run.

    python bench/run.py [--quick] [--workers N] [--grep-root DIR] [--json [FILE]]

Starts its own parad (temporary config, runtime and state dirs), waits until
every pool is ready, then measures

  1. echo round-trip latency, p50/p99: client.run("echo", x=1) in a loop,
     against a raw 2-hop relay (the floor of parad's client -> daemon -> worker
     shape: the target's reference) and a raw pyzmq REQ/REP round trip;
  2. echo pipelined throughput: Client.map over many echo tasks, against raw
     pyzmq DEALER/ROUTER pipelining to the same child echo server;
  3. `bash -c true` throughput: Client.map on the bash pool (N workers),
     against `xargs -P N`, GNU parallel, `xargs -P N bwrap ... bash -c true`
     (each if present), and through a bare pyzmq relay in front of N bare
     Python spawners (bench/floor.py); para's own CPU per task against the
     floor's;
  4. grep: 8 patterns over a large tree through Client.map, against the same
     8 `rg --json` run at once (bench/grep_peer.py);
  5. Ray and Dask (if installed; not with --quick), each started for its own
     rounds: `bash -c true` tasks and no-op round trips (bench/frameworks.py);
  6. 64 concurrent `sleep 1` on a second parad with the default pool config:
     wall time and para's own PSS (bench/concurrency.py).

para and its peers alternate round by round (so a burst of load from elsewhere
hits both); each figure is the median over rounds and each ratio the median of
per-round ratios. The daemon is always stopped (SIGTERM, then SIGKILL after
30 s) and the temp dir removed, even on error or SIGTERM.
See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack
import zmq

from para.testing import Daemon, DaemonError

import concurrency
import grep_peer
from floor import SpawnFloor
from frameworks import FrameworkPeer
from meters import ChildCpu, CpuMeter, own_cpu, steal_and_busy
from raw import RawPeers, RawSocket
from report import report
from sandbox import minimal_per_command_argv, per_command_argv
from stats import percentile

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# Sizes per mode. Rounds are repeated and the median reported.
PARAMS = {
    "full": dict(rounds=5, lat_warmup=300, lat_calls=2000, raw_lat_calls=5000,
                 tput_tasks=50_000, tput_rounds=3, raw_tput_msgs=50_000,
                 bash_tasks=2000, bash_rounds=3, peer_tasks={"bwrap_per_command": 300, "bwrap_minimal": 1000}, grep_rounds=5, sleep_rounds=3,
                 frameworks=True, fw_lat_calls=300),
    # Ray and Dask take 5-10 s to start and minutes to measure: --quick skips them.
    "quick": dict(rounds=3, lat_warmup=100, lat_calls=1000, raw_lat_calls=2000,
                  tput_tasks=10_000, tput_rounds=3, raw_tput_msgs=20_000,
                  bash_tasks=500, bash_rounds=3, peer_tasks={"gnu_parallel": 200, "bwrap_per_command": 60, "bwrap_minimal": 250}, grep_rounds=3, sleep_rounds=1,
                  frameworks=False, fw_lat_calls=0),
}
READY_DEADLINE = 30.0      # seconds for parad to bring all pools up
STOP_DEADLINE = 30.0       # seconds for parad to exit after SIGTERM before it is killed

TARGETS = {
    "latency_vs_relay_max": 1.5,       # para echo run() p50 / raw 2-hop relay p50
    "echo_tput_min": 40_000.0,         # tasks/s through Client.map
    "bash_vs_xargs_min": 0.85,         # para bash tasks/s / xargs -P N tasks/s
    "bash_vs_parallel_min": 3.0,       # ... / GNU parallel -j N
    "bash_vs_bwrap_min": 3.0,          # ... / xargs -P N bwrap ... bash -c true
    "bash_cpu_vs_floor_max": 0.8,      # para's own CPU per bash task / the floor's
    "sleep64_wall_max_s": 1.3,         # 64 concurrent sleep 1 on the default config, all done
    "sleep64_pss_max_mb": 400.0,       # para's own processes' PSS while they run
    "grep_vs_rg_min": 0.8,             # para grep map() rate / 8 rg --json at once
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
        "grep": {},  # the default grep pool, for the grep row
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


# ---- measurements: one round each ---------------------------------------------------

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


# ---- phases ----------------------------------------------------------------------------

def measure_echo(res: dict, client: Any, daemon: Daemon, peers: RawPeers, p: dict) -> None:
    """echo run() round trips and echo map() throughput against the raw pyzmq peers."""
    f, r = res["figures"], res["ratios"]
    worker_list = client.workers()
    rep, relay = RawSocket(peers.rep_path, zmq.REQ), RawSocket(peers.relay_path, zmq.DEALER)
    pipe = RawSocket(peers.router_path, zmq.DEALER)
    try:
        log(f"echo round trips: para run() x {p['lat_calls']}, raw REQ/REP and relay x {p['raw_lat_calls']}, "
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

        log(f"echo throughput: para map() x {p['tput_tasks']:,}, raw pipelined x {p['raw_tput_msgs']:,}, "
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
    p50 = lambda rounds: [x[0] for x in rounds]  # noqa: E731
    r["echo_latency_p50_vs_raw"] = paired_ratio(p50(lat["para"]), p50(lat["rep"]))
    r["echo_latency_p99_vs_raw"] = paired_ratio([x[1] for x in lat["para"]], [x[1] for x in lat["rep"]])
    r["echo_latency_p50_vs_relay"] = paired_ratio(p50(lat["para"]), p50(lat["relay"]))
    r["echo_latency_relay_vs_raw"] = paired_ratio(p50(lat["relay"]), p50(lat["rep"]))
    r["echo_tput_vs_raw"] = paired_ratio(f["echo_tput_para"]["rounds_per_s"], f["echo_tput_raw_pipelined"]["rounds_per_s"])
    res["pass"]["echo_latency"] = r["echo_latency_p50_vs_relay"] <= TARGETS["latency_vs_relay_max"]
    res["pass"]["echo_tput"] = f["echo_tput_para"]["per_s"] >= TARGETS["echo_tput_min"]


def bash_peers(res: dict, workers: int) -> dict[str, list[str]]:
    """The external peers of the bash rounds that this host has, by name; a note for each one skipped."""
    peers = {"xargs": ["xargs", "-P", str(workers), "-I{}", "bash", "-c", "{}"]}
    parallel_prefix, parallel_note = gnu_parallel()
    res["meta"]["gnu_parallel"] = parallel_note
    if parallel_prefix:
        peers["gnu_parallel"] = parallel_prefix + ["-j", str(workers), "bash", "-c", "{}"]
    else:
        res["notes"].append(f"GNU parallel skipped: {parallel_note}")
    for name, argv in (("bwrap_minimal", minimal_per_command_argv), ("bwrap_per_command", per_command_argv)):
        bwrap, why = argv(["bash", "-c", "{}"])
        if bwrap:
            peers[name] = ["xargs", "-P", str(workers), "-I{}", *bwrap]
        else:
            res["notes"].append(f"per-command bubblewrap skipped: {why}")
    return peers


def measure_bash(res: dict, client: Any, daemon: Daemon, p: dict, workers: int) -> None:
    """`bash -c true` throughput against xargs, GNU parallel, per-command bubblewrap and the floor."""
    f, r, n = res["figures"], res["ratios"], p["bash_tasks"]
    peers = bash_peers(res, workers)
    log(f"bash -c true throughput: para map() vs {', '.join(peers)} and the relay + spawn floor, {n:,} tasks, "
        f"{p['bash_rounds']} rounds")
    para_map_round(client, "bash", {"command": "true"}, min(n, 50))
    cpu = CpuMeter(daemon.proc.pid, client.workers(), "bash")
    peer_cpu = {name: ChildCpu() for name in peers}
    # The slow peers (a bubblewrap per command costs ~0.1 s here, its mounts) may run fewer tasks: rates are compared.
    tasks = {name: min(n, p["peer_tasks"].get(name, n)) for name in peers}
    para_s: list[float] = []
    peer_s: dict[str, list[float]] = {name: [] for name in [*peers, "floor"]}
    floor = None
    try:
        floor = SpawnFloor(daemon.tmp, workers)
        floor.round(min(n, 50))
        for cmd in peers.values():   # warm: a first start reads from disk (parallel's perl, bwrap's mounts)
            external_round(cmd, 10, ChildCpu())
        for _ in range(p["bash_rounds"]):
            with cpu.timed(n):
                para_s.append(para_map_round(client, "bash", {"command": "true"}, n))
            for name, cmd in peers.items():
                peer_s[name].append(external_round(cmd, tasks[name], peer_cpu[name]))
            peer_s["floor"].append(floor.round(n))
    finally:
        if floor is not None:
            floor.stop()
    f["bash_tput_para"] = tput_figure(para_s, n, cpu)
    for name, cmd in peers.items():
        f[f"bash_tput_{name}"] = tput_figure(peer_s[name], tasks[name], peer_cpu[name],
                                             command=f"printf 'true\\n%.0s' $(seq {tasks[name]}) | "
                                             + shlex.join(cmd).replace("'{}'", "{}"))
        r[f"bash_tput_vs_{name}"] = paired_ratio([n / x for x in para_s], [tasks[name] / x for x in peer_s[name]])
    f["bash_tput_floor"] = tput_figure(peer_s["floor"], n, floor)
    r["bash_tput_vs_floor"] = paired_ratio(peer_s["floor"], para_s)
    r["bash_floor_vs_xargs"] = paired_ratio(peer_s["xargs"], peer_s["floor"])
    ours, theirs = f["bash_tput_para"]["cpu_us_per_task"], f["bash_tput_floor"]["cpu_us_per_task"]
    f["bash_cpu_own_us"] = {"para": round(ours["client"] + ours["parad"] + ours["workers"], 1),
                            "floor": round(theirs["client"] + theirs["relay"] + theirs["spawners"], 1)}
    r["bash_cpu_vs_floor"] = f["bash_cpu_own_us"]["para"] / f["bash_cpu_own_us"]["floor"]
    ok = res["pass"]
    ok["bash_vs_xargs"] = r["bash_tput_vs_xargs"] >= TARGETS["bash_vs_xargs_min"]
    if "gnu_parallel" in peers:
        ok["bash_vs_gnu_parallel"] = r["bash_tput_vs_gnu_parallel"] >= TARGETS["bash_vs_parallel_min"]
    if "bwrap_minimal" in peers:   # the lightest per-command sandbox: the fairest peer for the 3x target
        ok["bash_vs_bwrap"] = r["bash_tput_vs_bwrap_minimal"] >= TARGETS["bash_vs_bwrap_min"]
    ok["bash_cpu_vs_floor"] = r["bash_cpu_vs_floor"] <= TARGETS["bash_cpu_vs_floor_max"]


def measure_grep(res: dict, client: Any, root: Path, p: dict) -> None:
    """8 searches of `root` through para's grep pool against the same 8 rg run at once."""
    missing = grep_peer.missing_rg()
    if missing:
        res["notes"].append(f"grep row skipped: {missing}")
        return
    files, size = grep_peer.tree_size(root)
    patterns = grep_peer.PATTERNS
    log(f"grep: {len(patterns)} patterns over {root} ({files:,} files, {size / 1e6:,.0f} MB), para map() vs "
        f"{len(patterns)} rg --json at once, {p['grep_rounds']} rounds")
    grep_peer.para_round(client, root, patterns)  # warm: the pool grows to its workers, the tree into the page cache
    grep_peer.rg_round(root, patterns)
    para, rg = [], []
    for _ in range(p["grep_rounds"]):
        para.append(grep_peer.para_round(client, root, patterns))
        rg.append(grep_peer.rg_round(root, patterns))
    fig = {"root": str(root), "files": files, "bytes": size, "patterns": patterns}
    for name, rounds in (("para", para), ("rg", rg)):
        fig[name] = {"seconds": statistics.median(s for s, _ in rounds), "rounds_s": [round(s, 3) for s, _ in rounds],
                     "matches": sorted({m for _, m in rounds})}
    fig["rg"]["command"] = "cd ROOT && " + shlex.join(grep_peer.rg_argv("PATTERN")) + "  # x 8 at once"
    res["figures"]["grep"] = fig
    if fig["para"]["matches"] != fig["rg"]["matches"]:
        warning = (f"WARNING grep: para found {fig['para']['matches']} matching lines, rg {fig['rg']['matches']}: "
                   "the two sides did different work, the grep ratio is not a comparison")
        res["notes"].append(warning)
        print(f"bench: {warning}", file=sys.stderr)
    res["ratios"]["grep_vs_rg"] = paired_ratio([s for s, _ in rg], [s for s, _ in para])
    res["pass"]["grep_vs_rg"] = res["ratios"]["grep_vs_rg"] >= TARGETS["grep_vs_rg_min"]


def measure_frameworks(res: dict, client: Any, tmp: Path, p: dict, workers: int) -> None:
    """Ray and Dask, each up for its own rounds, alternating with para's bash map() and echo run()."""
    if not p["frameworks"]:
        res["notes"].append("Ray and Dask skipped: --quick (they take 5-10 s to start); run without --quick")
        return
    n, calls = p["bash_tasks"], p["fw_lat_calls"]
    for module, name in (("peers_ray", "ray"), ("peers_dask", "dask")):
        log(f"{name}: starting ({workers} CPUs)")
        fw = FrameworkPeer(module, workers, tmp)
        if fw.skipped:
            res["notes"].append(f"{name} skipped: {fw.skipped}")
            continue
        try:
            log(f"{name}: bash -c true x {n:,} and no-op round trips x {calls}, {p['bash_rounds']} rounds, "
                "alternating with para")
            para_s, fw_s, para_lat, fw_lat = [], [], [], []
            for _ in range(p["bash_rounds"]):
                para_s.append(para_map_round(client, "bash", {"command": "true"}, n))
                fw_s.append(fw.tput_round(n))
                para_lat.append(para_latency_round(client, calls))
                fw_lat.append(fw.latency_round(calls))
        finally:
            killed = fw.stop()
            if killed:
                res["notes"].append(f"{name}: left processes that had to be killed: {', '.join(killed)}")
        res["figures"][name] = {"version": fw.version, "bash_tput": tput_figure(fw_s, n),
                                "para_bash_tput": tput_figure(para_s, n), "noop_latency": latency_figure(fw_lat),
                                "para_echo_latency": latency_figure(para_lat)}
        res["ratios"][f"bash_tput_vs_{name}"] = paired_ratio(fw_s, para_s)
        res["ratios"][f"echo_latency_p50_vs_{name}_noop"] = paired_ratio([x[0] for x in para_lat],
                                                                         [x[0] for x in fw_lat])


def measure_sleep64(res: dict, tmp: Path, p: dict) -> None:
    """64 concurrent `sleep 1` on a second parad with the default pool config."""
    log(f"64 concurrent sleep 1: a second parad on the default config, {p['sleep_rounds']} round(s)")
    try:
        fig = concurrency.measure(tmp / "d", p["sleep_rounds"], READY_DEADLINE * 2)
    except DaemonError as exc:   # not the bench's own parad: say so, and keep the other rows
        res["notes"].append(f"64 concurrent sleep row failed: the default-config parad: {str(exc)[:2000]}")
        return
    if fig["parad_exit"] != 0:
        res["notes"].append(f"the default-config parad exited with {fig['parad_exit']}")
    res["figures"]["sleep64"] = fig
    res["pass"]["sleep64_wall"] = fig["wall_s"] <= TARGETS["sleep64_wall_max_s"]
    res["pass"]["sleep64_pss"] = fig["pss_mb"] < TARGETS["sleep64_pss_max_mb"]


def measure(res: dict, daemon: Daemon, peers: RawPeers, p: dict, workers: int, grep_root: Path) -> None:
    """Every phase, para and its peers alternating round by round within each."""
    from para.client import Client

    with Client(daemon.runtime_dir, timeout=60.0, name="bench") as client:
        measure_echo(res, client, daemon, peers, p)
        measure_bash(res, client, daemon, p, workers)
        measure_grep(res, client, grep_root, p)
        measure_frameworks(res, client, daemon.tmp, p, workers)
    measure_sleep64(res, daemon.tmp, p)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Benchmark parad against raw pyzmq, xargs and GNU parallel.")
    ap.add_argument("--quick", action="store_true", help="smaller sizes, under ~30 s")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="bash pool workers and xargs/parallel -P (default: os.cpu_count())")
    ap.add_argument("--grep-root", type=Path, default=grep_peer.default_root(),
                    help="tree the grep row searches (default: this Python's site-packages)")
    ap.add_argument("--json", nargs="?", const="-", metavar="FILE",
                    help="also dump figures as JSON, to FILE or (no FILE) to stdout after the table")
    args = ap.parse_args(argv)
    if args.workers < 1:
        ap.error("--workers must be at least 1")
    if not args.grep_root.is_dir():
        ap.error(f"--grep-root {args.grep_root} is not a directory")

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
            "grep_root": str(args.grep_root),
        },
        "targets": TARGETS,
        "figures": {},
        "ratios": {},
        "pass": {},
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
        measure(res, daemon, peers, p, args.workers, args.grep_root.resolve())
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
