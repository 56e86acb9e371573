#!/usr/bin/env python3
"""500 fetches of a local server's pages through para's fetch pool, against a plain asyncio loop.

    python bench/fetch.py [--pages 500] [--concurrency 64] [--rounds 5] [--format raw|markdown] [--delay S] [--json]

The server (para.testing.http_server, aiohttp.web) runs in a process of its own
and serves `--pages` distinct pages (a few KiB of HTML each, `Cache-Control:
no-store`: every fetch is a real request, no cache helps either side), each
after `--delay` seconds (default 0; a web server's latency is tens of ms). Both
sides keep `--concurrency` requests in flight with the same library (aiohttp)
and the same per-host connection limit:

- para: an AsyncClient submitting fetch tasks (format `raw` by default: the body
  as text, so both sides do the same work) to a parad of the bench's own, whose
  fetch pool is its one default worker with `per_host` = the concurrency;
- plain: one aiohttp session in this process, GET and decode each page; the
  session (and its open connections) lasts all rounds, as the fetch worker's
  does. With `--format markdown` it runs the same trafilatura extraction in a thread.

Rounds alternate (para, plain, para, ...); the ratio is plain's time over para's
(para's throughput as a fraction of the plain loop's), the median of per-round
ratios. Target: at least 0.7.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from para.client import AsyncClient
from para.testing import FAST, only_pools

sys.path.insert(0, str(Path(__file__).resolve().parent))
import local_parad  # noqa: E402  (bench/ is not a package)

MAX_LENGTH = 1 << 20


def page(i: int) -> str:
    words = " ".join(f"word{i}-{j}" for j in range(300))
    return (f"<html><head><title>Page {i}</title></head><body><nav>Home | About</nav>"
            f"<article><h1>Page {i}</h1><p>{words}</p><p>{words}</p></article><footer>(c) bench</footer></body></html>")


def serve(pages: int, delay: float, port: multiprocessing.Queue, stop: multiprocessing.Event) -> None:
    from aiohttp import web

    from para.testing.http_server import WebServer

    def answer(body: str):
        async def handler(_: web.Request) -> web.Response:
            if delay:
                await asyncio.sleep(delay)
            return web.Response(text=body, content_type="text/html", headers={"Cache-Control": "no-store"})
        return handler
    with WebServer() as server:
        for i in range(pages):
            server.route(f"/p{i}", answer(page(i)))
        port.put(server.port)
        stop.wait()


async def through_para(client: AsyncClient, urls: list[str], limit: int, fmt: str) -> float:
    gate = asyncio.Semaphore(limit)

    async def one(url: str) -> None:
        async with gate:
            result = await client.run("fetch", url=url, format=fmt, max_length=MAX_LENGTH)
            assert result.value["status"] == 200, result
    start = time.perf_counter()
    await asyncio.gather(*(one(u) for u in urls))
    return time.perf_counter() - start


async def plain(session: aiohttp.ClientSession, urls: list[str], limit: int, fmt: str) -> float:
    from para.web.extract import render
    gate = asyncio.Semaphore(limit)

    async def one(url: str) -> None:
        async with gate:
            async with session.get(url) as resp:
                body = await resp.read()
                assert resp.status == 200
            if fmt == "markdown":
                await asyncio.to_thread(render, body, "text/html", "utf-8", fmt, url)
            else:
                body.decode()
    start = time.perf_counter()
    await asyncio.gather(*(one(u) for u in urls))
    return time.perf_counter() - start


async def rounds(runtime_dir: Path, urls: list[str], args: argparse.Namespace) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"para": [], "plain": []}
    # One session for every round, as the fetch worker keeps one: neither side reconnects between rounds.
    connector = aiohttp.TCPConnector(limit_per_host=args.concurrency)
    async with AsyncClient(runtime_dir, timeout=60) as client, aiohttp.ClientSession(connector=connector) as session:
        await through_para(client, urls[:50], args.concurrency, args.format)   # warm: connections, imports
        await plain(session, urls[:50], args.concurrency, args.format)
        for _ in range(args.rounds):
            times["para"].append(await through_para(client, urls, args.concurrency, args.format))
            times["plain"].append(await plain(session, urls, args.concurrency, args.format))
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--format", choices=("raw", "markdown"), default="raw")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds the server takes per page")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    port_q: multiprocessing.Queue = multiprocessing.Queue()
    stop = multiprocessing.Event()
    server = multiprocessing.Process(target=serve, args=(args.pages, args.delay, port_q, stop), daemon=True)
    server.start()
    try:
        port = port_q.get(timeout=60)
        urls = [f"http://127.0.0.1:{port}/p{i}" for i in range(args.pages)]
        fetch_pool = {"credit": max(128, args.concurrency),
                      "options": {"policy": {"allow_private": ["127.0.0.1/32"]}, "per_host": args.concurrency}}
        with tempfile.TemporaryDirectory(prefix="para-bench-fetch-") as tmp:
            daemon = local_parad.start(Path(tmp), {"daemon": FAST, "pools": only_pools({"fetch": fetch_pool})})
            try:
                times = asyncio.run(rounds(daemon.runtime_dir, urls, args))
            finally:
                local_parad.stop(daemon, 30)
    finally:
        stop.set()
        server.join(30)
    report(times, args)


def report(times: dict[str, list[float]], args: argparse.Namespace) -> None:
    ratios = [plain / para for para, plain in zip(times["para"], times["plain"])]
    out = {"pages": args.pages, "concurrency": args.concurrency, "format": args.format, "delay": args.delay, "rounds": args.rounds,
           "para_s": statistics.median(times["para"]), "plain_s": statistics.median(times["plain"]),
           "ratio": statistics.median(ratios), "ratios": ratios}
    if args.json:
        print(json.dumps(out))
        return
    print(f"{args.pages} fetches ({args.format}, server delay {args.delay:g}s), {args.concurrency} in flight, "
          f"{args.rounds} alternating rounds")
    print(f"  para fetch pool   {out['para_s']:.3f} s  ({args.pages / out['para_s']:.0f}/s)")
    print(f"  plain aiohttp     {out['plain_s']:.3f} s  ({args.pages / out['plain_s']:.0f}/s)")
    print(f"  para / plain throughput: {out['ratio']:.2f}x (per round: {', '.join(f'{r:.2f}' for r in ratios)}; target >= 0.7x)")


if __name__ == "__main__":
    main()
