#!/usr/bin/env python3
"""100 tool calls through para's MCP server against a reference MCP shell server.

    python bench/mcp_calls.py [--calls 100] [--rounds 3] [--shell-server CMD] [--json]

One MCP client session (the official SDK's, over stdio) sends the same calls to
both servers, which it starts itself:

- para: `para-mcp` in front of a parad of the bench's own; the calls are issued
  at once, as an agent that fans out does;
- the reference: `mcp-shell-server` from PyPI, whose calls run one at a time,
  as an agent with such a server does today. For context, the same servers
  are also measured the other way round (para one at a time, the reference
  with every call issued at once).

Two workloads: `wc -l FILE` over this checkout's files (short calls: the
per-call cost shows) and `sleep 0.1` (calls that wait, as tests and builds
do: the concurrency shows). Rounds alternate between the servers; each figure
is the median over rounds, each ratio the median of per-round ratios.

mcp-shell-server needs the 1.x SDK and para the 2.x, so it lives in an
environment of its own (bench/README.md); without it, its rows are skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from mcp import Client
from mcp.client.stdio import StdioServerParameters

from para.testing import Daemon

REPO = Path(__file__).resolve().parent.parent
CallFn = Callable[[int], Awaitable[bool]]


def workload_files(n: int) -> list[str]:
    """`n` files of this checkout to count lines of (cycled if it has fewer)."""
    files = sorted(str(p) for p in REPO.rglob("*.py") if ".git" not in p.parts)[:n]
    return [files[i % len(files)] for i in range(n)]


def para_server(runtime_dir: Path) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "para.mcp_server.main", "--no-autostart", "--runtime-dir", str(runtime_dir)],
                                 cwd=str(REPO))


def shell_server(command: str) -> StdioServerParameters:
    # It logs every call at INFO on stderr, which the SDK's stdio client passes through: silenced.
    return StdioServerParameters(command="sh", args=["-c", 'exec "$0" 2>/dev/null', command],
                                 env={"ALLOW_COMMANDS": "wc,sleep"}, cwd=str(REPO))


def para_argv(argv: list[str]) -> tuple[str, dict[str, Any]]:
    return "bash", {"argv": argv}


def shell_argv(argv: list[str]) -> tuple[str, dict[str, Any]]:
    return "shell_execute", {"command": argv, "directory": str(REPO)}


def caller(client: Client, shape: Callable[[list[str]], tuple[str, dict[str, Any]]],
           argvs: list[list[str]]) -> CallFn:
    """A call of argv number i through `client`; True when it succeeded."""
    async def call(i: int) -> bool:
        name, args = shape(argvs[i])
        result = await client.call_tool(name, args)
        return not result.is_error
    return call


async def at_once(call: CallFn, n: int) -> float:
    start = time.perf_counter()
    ok = await asyncio.gather(*(call(i) for i in range(n)))
    elapsed = time.perf_counter() - start
    if not all(ok):
        raise RuntimeError(f"{ok.count(False)} of {n} calls failed")
    return elapsed


async def one_by_one(call: CallFn, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        if not await call(i):
            raise RuntimeError(f"call {i} failed")
    return time.perf_counter() - start


async def measure(runtime_dir: Path, shell_cmd: str | None, n: int, rounds: int) -> dict[str, Any]:
    workloads = {"wc -l FILE": [["wc", "-l", f] for f in workload_files(n)], "sleep 0.1": [["sleep", "0.1"]] * n}
    figures: dict[str, Any] = {}
    async with AsyncExitStack() as stack:
        para = await stack.enter_async_context(Client(para_server(runtime_dir)))
        shell = await stack.enter_async_context(Client(shell_server(shell_cmd))) if shell_cmd else None
        for name, argvs in workloads.items():
            runs: dict[str, list[float]] = {}
            ways = {"para, at once": (at_once, caller(para, para_argv, argvs)),
                    "para, one at a time": (one_by_one, caller(para, para_argv, argvs))}
            if shell:
                ways["mcp-shell-server, one at a time"] = (one_by_one, caller(shell, shell_argv, argvs))
                ways["mcp-shell-server, at once"] = (at_once, caller(shell, shell_argv, argvs))
            for way, (how, call) in ways.items():   # a warm-up round each, not counted
                await how(call, min(n, 10))
            for _ in range(rounds):
                for way, (how, call) in ways.items():
                    runs.setdefault(way, []).append(await how(call, n))
            figures[name] = runs
    return figures


def report(figures: dict[str, Any], n: int) -> list[str]:
    lines = [f"{n} MCP tool calls from one client session (median over rounds; ratio = median of per-round ratios)", ""]
    lines.append(f"| workload | way | seconds | calls/s | para at once vs this |")
    lines.append("|---|---|---|---|---|")
    for workload, runs in figures.items():
        ours = runs["para, at once"]
        for way, seconds in runs.items():
            ratio = statistics.median(t / o for o, t in zip(ours, seconds))
            lines.append(f"| {workload} | {way} | {statistics.median(seconds):.3f} | "
                         f"{n / statistics.median(seconds):,.0f} | {ratio:.2f}x |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shell-server", default=shutil.which("mcp-shell-server"),
                    help="the reference server's command (default: mcp-shell-server on PATH)")
    ap.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = ap.parse_args(argv)
    if not args.shell_server:
        print("mcp-shell-server not found (bench/README.md says how to install it): its rows are skipped", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="pb") as tmp:
        config = {"daemon": {"log_level": "warning"}, "pools": {"bash": {"min_workers": 2}}}
        daemon = Daemon(config, Path(tmp), runtime_dir=Path(tmp) / "r", python_flags=("-P",), require_ok=True)
        try:
            figures = asyncio.run(measure(Path(tmp) / "r", args.shell_server, args.calls, args.rounds))
        finally:
            daemon.stop(30)
    print("\n".join(report(figures, args.calls)))
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
