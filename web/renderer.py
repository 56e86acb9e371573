"""Extraction (extract.render) in child processes, each page within a deadline.

Extraction is CPU work on whatever a server sent, and parts of it hold the
GIL for as long as they run: trafilatura's markdown pass over a page of many
sibling links (a directory listing, an index page) spends a minute of 5 MiB
inside lxml calls, and the standard library's HTML parser is quadratic on
unclosed tags. In a thread of the fetch worker that stops its event loop, so
its heartbeats, and parad kills the pool's only worker with every fetch it
was serving; or a thread spins for hours. In a child process it stops only
that child, which is killed at the page's deadline (`extract_timeout`) and
replaced. Each child imports trafilatura once, before its first page, and
serves one page at a time: msgpack frames on its stdin and stdout.

Run as `python -P -m para.web.renderer` (by Renderer only).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
from typing import Any

import msgpack

from para.web.extract import NotText
from para.web.http import FetchError

READY = b"R"


class _Child:
    """One extraction process; `ask` sends a page and reads its answer."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls) -> "_Child":
        proc = await asyncio.create_subprocess_exec(sys.executable, "-P", "-m", "para.web.renderer",
                                                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        child = cls(proc)
        try:
            if await proc.stdout.read(1) != READY:   # type: ignore[union-attr]
                raise FetchError(f"the extraction process did not start (exit code {await proc.wait()})")
        except BaseException:
            child.kill()
            raise
        return child

    async def ask(self, request: list[Any]) -> list[Any]:
        data = msgpack.packb(request, use_bin_type=True)
        self.proc.stdin.write(len(data).to_bytes(4, "big") + data)   # type: ignore[union-attr]
        await self.proc.stdin.drain()                                 # type: ignore[union-attr]
        size = int.from_bytes(await self.proc.stdout.readexactly(4), "big")   # type: ignore[union-attr]
        return msgpack.unpackb(await self.proc.stdout.readexactly(size), raw=False)   # type: ignore[union-attr]

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


class Renderer:
    """`processes` children rendering pages, each within `timeout` seconds; open in the loop that uses it."""

    def __init__(self, processes: int, timeout: float) -> None:
        self.timeout = timeout
        self._slots: asyncio.Queue[_Child | None] = asyncio.Queue()   # idle children; None: not started yet
        for _ in range(processes):
            self._slots.put_nowait(None)
        self._children: set[_Child] = set()

    async def render(self, body: bytes, content_type: str, charset: str | None, fmt: str, url: str,
                     links: bool = False) -> tuple[str, str | None]:
        """extract.render's answer; NotText as it raises it, FetchError if the page took longer than
        the timeout (its child killed) or the child failed."""
        child = await self._slots.get()
        try:
            if child is None:
                child = await asyncio.wait_for(_Child.start(), max(60.0, self.timeout))
                self._children.add(child)
            reply = await asyncio.wait_for(child.ask([body, content_type, charset, fmt, url, links]), self.timeout)
        except BaseException as exc:
            # Timed out, cancelled or died mid-page: its pipes are out of step, so it goes.
            if child is not None:
                child.kill()
                self._children.discard(child)
            self._slots.put_nowait(None)
            if isinstance(exc, TimeoutError):
                raise FetchError(f"extracting {url} as {fmt} took more than {self.timeout:g}s (extract_timeout); "
                                 f"ask for format raw, or raise the pool's extract_timeout") from None
            if isinstance(exc, (OSError, asyncio.IncompleteReadError)):
                raise FetchError(f"the extraction process died while reading {url}; ask for format raw") from None
            raise
        self._slots.put_nowait(child)
        if reply[0] == "ok":
            return reply[1], reply[2]
        if reply[0] == "nottext":
            raise NotText(reply[1])
        raise FetchError(f"extracting {url} as {fmt} failed ({reply[1]}); ask for format raw")

    async def close(self) -> None:
        """Kill every child and reap it."""
        children, self._children = list(self._children), set()
        for child in children:
            child.kill()
        await asyncio.gather(*(c.proc.wait() for c in children), return_exceptions=True)


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: a worker killed takes its children along (web/ may not import sandbox/prctl.py).
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def _serve() -> None:
    """The child: answer pages read on stdin until it closes."""
    from para.web.extract import render
    _die_with_parent()
    out = os.fdopen(os.dup(1), "wb")   # the answers' own descriptor: a library printing goes to stderr
    os.dup2(2, 1)
    import trafilatura  # noqa: F401  (loaded before READY: a page's deadline is not spent importing)
    inp = sys.stdin.buffer
    out.write(READY)
    out.flush()
    while len(head := inp.read(4)) == 4:
        request = msgpack.unpackb(inp.read(int.from_bytes(head, "big")), raw=False)
        try:
            reply: list[Any] = ["ok", *render(*request)]
        except NotText as exc:
            reply = ["nottext", str(exc)]
        except Exception as exc:
            reply = ["error", f"{type(exc).__name__}: {exc}"]
        data = msgpack.packb(reply, use_bin_type=True)
        out.write(len(data).to_bytes(4, "big") + data)
        out.flush()


if __name__ == "__main__":
    _serve()
