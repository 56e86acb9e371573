"""How para-mcp is reached, and how it stops: stdio (the default), or streamable HTTP on a loopback address.

stdio: one session on the process's stdin and stdout until EOF (or a stdout nobody reads), or `stop`
(SIGTERM, SIGINT). The SDK's stdio transport reads stdin in a thread, which
only EOF frees, so a signal could not end it; here the descriptors are read and
written without blocking, through the event loop. Meanwhile fd 0 reads
/dev/null and fd 1 goes to stderr, as the SDK's transport does, so nothing
stray reaches the wire.

HTTP: the SDK's streamable HTTP app under uvicorn, at http://HOST:PORT/mcp
(port 0 picks a free one), behind a bearer token (auth.py). HOST must be a
loopback address: whoever reaches the port could run commands as this user,
so the port is not reachable from other hosts, the token keeps the host's other
users out, and the SDK's DNS-rebinding protection admits only local Host headers.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import stat
from collections.abc import Callable, Iterator

import anyio
import uvicorn
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.server.transport_security import TransportSecuritySettings

from para.mcp_server.auth import BearerAuth, Token

log = logging.getLogger("para.mcp_server")


class UsageError(ValueError):
    """A command line para-mcp cannot serve; the message says what to give instead."""


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT ([::1]:PORT for IPv6) of a loopback address; UsageError otherwise."""
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--http wants HOST:PORT, e.g. 127.0.0.1:8765 (port 0: any free one), not {text!r}")
    if not _loopback(host):
        raise UsageError(f"refusing to serve MCP on {host}: anyone who reaches it could run commands as this user; "
                         f"use a loopback address (127.0.0.1, ::1 or localhost)")
    return host, int(port)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---- stdio ---------------------------------------------------------------------------

async def serve_stdio(server: Server, stop: anyio.Event) -> None:
    """Serve one session on stdin/stdout until EOF or `stop`."""
    with _claimed_stdio() as (wire_in, wire_out):
        async with anyio.create_task_group() as tg:   # `stop` cancels the transport's reader and writer too
            tg.start_soon(_cancel_on, stop, tg.cancel_scope)
            writer = _Writer(wire_out, tg.cancel_scope.cancel)
            async with stdio_server(stdin=_Lines(wire_in), stdout=writer) as (read, write):  # type: ignore[arg-type]
                await server.run(read, write, server.create_initialization_options())
            tg.cancel_scope.cancel()


async def _cancel_on(stop: anyio.Event, scope: anyio.CancelScope) -> None:
    await stop.wait()
    scope.cancel()


@contextlib.contextmanager
def _claimed_stdio() -> Iterator[tuple[int, int]]:
    """Private copies of fd 0 and 1 (non-blocking where they can block), with fd 0 reading /dev/null and
    fd 1 writing to stderr meanwhile; all put back as they were on exit."""
    wire_in, wire_out = os.dup(0), os.dup(1)
    blocking = {fd: os.get_blocking(fd) for fd in (wire_in, wire_out)}
    saved_in, saved_out = os.dup(0), os.dup(1)
    try:
        for fd in (wire_in, wire_out):
            if _pollable(fd):
                os.set_blocking(fd, False)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.dup2(2, 1)
        yield wire_in, wire_out
    finally:
        os.dup2(saved_in, 0)
        os.dup2(saved_out, 1)
        for fd, was in blocking.items():   # the descriptions are shared with whoever started us (a terminal)
            with contextlib.suppress(OSError):
                os.set_blocking(fd, was)
        for fd in (wire_in, wire_out, saved_in, saved_out):
            os.close(fd)


def _pollable(fd: int) -> bool:
    """A pipe, socket or terminal: reads and writes may wait, and the event loop can watch it
    (a regular file or /dev/null never waits, and epoll refuses it)."""
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)


# The longest message a stdio client may send. A batch of 5,000 tasks is about 1 MB; a client
# that sends more without a newline is broken or hostile, and would otherwise grow our memory
# without bound: the session ends, as on EOF.
MAX_LINE = 16 << 20


class _Lines:
    """The lines of text arriving on `fd`, as an async iterator (what stdio_server reads), each
    at most MAX_LINE bytes."""

    def __init__(self, fd: int) -> None:
        self.fd, self.poll = fd, _pollable(fd)
        self.buf = bytearray()
        self.eof = False

    def __aiter__(self) -> _Lines:
        return self

    async def __anext__(self) -> str:
        while (end := self.buf.find(b"\n")) < 0:
            if self.eof:
                if not self.buf:
                    raise StopAsyncIteration
                end = len(self.buf) - 1   # a last line with no newline
                break
            if self.poll:
                await anyio.wait_readable(self.fd)
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                continue
            self.eof = not data
            self.buf += data
            if len(self.buf) > MAX_LINE and b"\n" not in data:
                log.error("the client sent a message of more than %d MiB; ending the session", MAX_LINE >> 20)
                self.buf.clear()
                raise StopAsyncIteration
        line = bytes(self.buf[:end + 1])
        del self.buf[:end + 1]
        return line.decode("utf-8", "replace")


class _Writer:
    """Text written to `fd` whole, waiting through the event loop while a pipe is full. A pipe nobody
    reads any more (EPIPE) is the client gone, as EOF is: `gone` is called, and the SDK's writer told
    the stream is closed, which ends it quietly."""

    def __init__(self, fd: int, gone: Callable[[], None]) -> None:
        self.fd, self.gone = fd, gone

    async def write(self, text: str) -> None:
        data = memoryview(text.encode())
        while data:
            try:
                data = data[os.write(self.fd, data):]
            except BlockingIOError:
                await anyio.wait_writable(self.fd)
            except (BrokenPipeError, ConnectionResetError):
                self.gone()
                raise anyio.ClosedResourceError from None

    async def flush(self) -> None:
        """Nothing is buffered."""


# ---- streamable HTTP -------------------------------------------------------------------

class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # para-mcp handles SIGTERM and SIGINT itself (main.py): uvicorn would raise them again after serving.
        yield


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on HOST:PORT (port 0: a free one); OSError if the address cannot be had."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)   # connections wait in the backlog until uvicorn accepts them
    except OSError:
        sock.close()
        raise
    return sock


def url_of(host: str, sock: socket.socket) -> str:
    """The MCP endpoint a socket listening on HOST serves."""
    return f"http://{'[' + host + ']' if ':' in host else host}:{sock.getsockname()[1]}/mcp"


async def serve_http(server: Server, host: str, sock: socket.socket, token: Token, stop: anyio.Event) -> None:
    """Serve streamable HTTP on a socket listening on HOST until `stop`, to requests bearing `token` only."""
    app = BearerAuth(server.streamable_http_app(host=host, transport_security=_local_only(host)), token)
    uv = _Uvicorn(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2, lifespan="on"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(_exit_on, stop, uv)
        await uv.serve(sockets=[sock])
        tg.cancel_scope.cancel()


def _local_only(host: str) -> TransportSecuritySettings:
    """DNS-rebinding protection: only requests naming a loopback host (the SDK sets it up by itself
    for 127.0.0.1, localhost and ::1 alone, not for the rest of 127.0.0.0/8)."""
    names = {f"[{host}]" if ":" in host else host, "127.0.0.1", "localhost", "[::1]"}
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=[f"{n}:*" for n in names],
                                     allowed_origins=[f"http://{n}:*" for n in names])


async def _exit_on(stop: anyio.Event, uv: uvicorn.Server) -> None:
    await stop.wait()
    uv.should_exit = True
