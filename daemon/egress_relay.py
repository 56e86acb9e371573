"""The worker's side of the egress proxy: a port per task inside the sandbox, relayed to the proxy.

A command whose network is an allow-list has no network but loopback (its
worker's namespace). Its HTTP_PROXY and HTTPS_PROXY name a port on
127.0.0.1 that this relay listens on for its task alone; each connection is
relayed to the proxy's Unix socket in parad's runtime directory (reached
through the worker's descriptor of it, which commands cannot see), after a
first line that names the task and its allow-list (ipc/egress.py). The
proxy holds the pool's policy and takes the line only as a narrowing of it,
so nothing a command sends can widen what it may reach.

The relaying runs in one thread with an event loop, apart from the worker's
poll loop: a download's bytes never wait behind the worker's turn, and the
worker's changes are three calls (open, close, stop).
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

from para.ipc import egress
from para.ipc.endpoints import Endpoints
from para.web.egress_proxy import pipe

CHUNK = 64 << 10
CALL_TIMEOUT = 10.0
# Each relayed connection holds two of the worker's descriptors: a command opening
# thousands must not take the worker's last ones (pip opens a handful at once).
MAX_CONNECTIONS = 64
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
# A caller's exceptions or SOCKS proxy would bypass ours (and fail: there is no other way out).
UNSET_VARS = ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy")


def command_env(env: dict[str, str], port: int) -> dict[str, str]:
    """`env` with every proxy variable naming the task's port, and nothing that bypasses it."""
    url = f"http://127.0.0.1:{port}"
    kept = {k: v for k, v in env.items() if k not in UNSET_VARS}
    return {**kept, **{name: url for name in PROXY_VARS}}


class EgressRelay:
    """Per-task listening ports, relayed to the proxy socket at `proxy_path`."""

    def __init__(self, proxy_path: Path) -> None:
        self.proxy_path = str(proxy_path)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="egress-relay", daemon=True)
        self._thread.start()
        self._tasks: dict[str, tuple[asyncio.Server, set[asyncio.Task]]] = {}

    def open(self, task_id: str, allow: list[str]) -> int:
        """Listen for `task_id`'s command; the port (OSError if none can be had)."""
        return self._call(self._listen(task_id, allow))

    def close(self, task_id: str) -> list[dict] | None:
        """`task_id` ended: stop its port and its connections; the requests the proxy refused it
        (None if the proxy could not say)."""
        if task_id not in self._tasks:
            return None
        try:
            return self._call(self._close(task_id))
        except (OSError, ValueError, asyncio.TimeoutError, TimeoutError):
            return None

    def stop(self) -> None:
        for task_id in list(self._tasks):
            self._call(self._shut(task_id))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=CALL_TIMEOUT)

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CALL_TIMEOUT)

    async def _listen(self, task_id: str, allow: list[str]) -> int:
        conns: set[asyncio.Task] = set()
        opening = egress.connect_line(task_id, allow)

        async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if len(conns) >= MAX_CONNECTIONS:
                writer.write(_answer(503, "Service Unavailable", f"more than {MAX_CONNECTIONS} connections to the proxy at once"))
                writer.close()
                return
            conns.add(this := asyncio.current_task())
            try:
                await self._relay(opening, reader, writer)
            finally:
                conns.discard(this)
                writer.close()

        server = await asyncio.start_server(relay, "127.0.0.1", 0, limit=CHUNK)
        self._tasks[task_id] = (server, conns)
        return server.sockets[0].getsockname()[1]

    async def _relay(self, opening: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(self.proxy_path, limit=CHUNK)
        except OSError as exc:
            writer.write(_answer(502, "Bad Gateway", f"the egress proxy cannot be reached ({exc.strerror}); is parad stopping?"))
            writer.close()
            return
        try:
            up_writer.write(opening)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            up_writer.close()
            writer.close()

    async def _shut(self, task_id: str) -> None:
        # Both sides of each connection: the command's is gone with it, the proxy's would stay.
        server, conns = self._tasks.pop(task_id)
        server.close()
        for conn in list(conns):
            conn.cancel()

    async def _close(self, task_id: str) -> list[dict]:
        await self._shut(task_id)
        reader, writer = await asyncio.open_unix_connection(self.proxy_path, limit=egress.MAX_REPORT)
        try:
            writer.write(egress.report_line(task_id))
            refused = json.loads(await reader.readline())
        finally:
            writer.close()
        if not isinstance(refused, list):
            raise ValueError("the egress proxy's report is not a list")
        return refused



def _answer(status: int, reason: str, why: str) -> bytes:
    body = f"para egress relay: {why}\n".encode()
    return f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body


class WorkerEgress:
    """A worker's relay, started at its first task whose network is an allow-list."""

    def __init__(self, endpoints: Endpoints) -> None:
        self.endpoints = endpoints
        self.relay: EgressRelay | None = None

    def start(self, task_id: str, egress: tuple[str, list[str]], env: dict[str, str]) -> dict[str, str]:
        """The environment of `task_id`'s command, its proxy port open; OSError if no port can be had."""
        name, allow = egress
        if self.relay is None:
            self.relay = EgressRelay(self.endpoints.egress_path(name))
        return command_env(env, self.relay.open(task_id, allow))

    def finish(self, task_id: str) -> list[dict] | None:
        """What the proxy refused `task_id` (None for a task without an allow-list)."""
        return self.relay.close(task_id) if self.relay is not None else None

    def stop(self) -> None:
        if self.relay is not None:
            self.relay.stop()
