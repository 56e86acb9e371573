"""A real HTTP server on 127.0.0.1 for tests and benchmarks: routes set by the test, requests counted.

It runs aiohttp.web on an event loop of its own, in a thread, so a test (or a
parad worker) talks to it over real TCP. It counts requests per path and the
most requests it held at once; a route may be *held* (its answers wait until
the test releases it) to show deduplication and per-host limits.

    with WebServer() as web:
        web.page("/a", "<html>...</html>", headers={"Cache-Control": "max-age=60"})
        web.redirect("/r", "/a")
        fetch(web.url("/r"))
        assert web.count("/a") == 1
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WebServer:
    """An HTTP server in a thread; use as a context manager (stopped, and its thread joined, on exit)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.counts: Counter[str] = Counter()
        self.active = 0
        self.max_active = 0
        self._routes: dict[str, Handler] = {}
        self._held: dict[str, asyncio.Event] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="test-web-server", daemon=True)
        self._runner: web.AppRunner | None = None

    def url(self, path: str, host: str | None = None) -> str:
        """The URL of `path` here, under `host` (a name the policy pins to 127.0.0.1) if given."""
        return f"http://{host or self.host}:{self.port}{path}"

    def count(self, path: str) -> int:
        return self.counts[path]

    # Routes --------------------------------------------------------------------------------------

    def route(self, path: str, handler: Handler) -> None:
        """Serve `path` (exact, query ignored) with `handler`, an aiohttp.web handler run on the server's loop."""
        self._routes[path] = handler

    def page(self, path: str, body: str | bytes, status: int = 200, content_type: str = "text/html; charset=utf-8",
             headers: dict[str, str] | None = None) -> None:
        data = body.encode() if isinstance(body, str) else body

        async def handler(_: web.Request) -> web.Response:
            return web.Response(body=data, status=status, headers={"Content-Type": content_type, **(headers or {})})
        self.route(path, handler)

    def redirect(self, path: str, location: str, status: int = 302, headers: dict[str, str] | None = None) -> None:
        async def handler(_: web.Request) -> web.Response:
            return web.Response(status=status, headers={"Location": location, **(headers or {})})
        self.route(path, handler)

    def hold(self, path: str) -> None:
        """Answers to `path` wait (after being counted) until release(path)."""
        self._held[path] = self._call(asyncio.Event)

    def release(self, path: str) -> None:
        self._loop.call_soon_threadsafe(self._held[path].set)

    # Lifecycle -------------------------------------------------------------------------------------

    def __enter__(self) -> "WebServer":
        self._thread.start()
        self._call(self._start)
        return self

    def __exit__(self, *exc: object) -> None:
        for event in self._held.values():
            self._loop.call_soon_threadsafe(event.set)
        self._call(self._stop)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _call(self, fn: Callable[[], Any], timeout: float = 30) -> Any:
        async def run() -> Any:
            out = fn()
            return await out if asyncio.iscoroutine(out) else out
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.counts[path] += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if path in self._held:
                await self._held[path].wait()
            handler = self._routes.get(path)
            if handler is None:
                return web.Response(status=404, text=f"no route {path}")
            return await handler(request)
        finally:
            self.active -= 1


@contextlib.contextmanager
def unanswered_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A port where TCP connects hang (a listener with a full backlog that never accepts): connect timeouts."""
    listener = socket.socket()
    filler = socket.socket()
    try:
        listener.bind((host, 0))
        listener.listen(0)
        filler.connect(listener.getsockname())   # takes the backlog's one place; later SYNs go unanswered
        yield listener.getsockname()[1]
    finally:
        filler.close()
        listener.close()
