"""The egress proxy: the only way out for commands whose pool's network is an allow-list.

parad starts it (daemon/egress.py: `python -P -m para.web.egress_proxy` in /, with
PYTHONPATH filtered, so nothing of parad's working directory is imported) and
sends its config on stdin, one JSON line: the socket path and policy
(web/policy.py WebPolicyConfig) of each pool policy with an allow-list. It
binds those Unix sockets (mode 0600 in parad's runtime directory), says
`ready` on stdout, and serves until its stdin closes (parad stopped or died),
then removes them.

Only the workers' relays (daemon/egress_relay.py) reach these sockets. Each
connection starts with the relay's line (ipc/egress.py) naming the task and
its allow-list, which may only narrow the socket's own policy; then comes
one HTTP proxy request from the command:

- `CONNECT host:port`: the host name is checked and resolved under the
  policy, and the bytes are tunnelled to a checked address (no TLS
  interception: HTTPS stays end to end);
- an absolute-form plain-HTTP request (`GET http://host/path`): forwarded
  in origin form with `Connection: close`, so one connection is one request,
  and with the checked URL's `Host` in place of the client's.

A refused request gets `403` with the rule in its body and in the
`X-Para-Refused` header, and is remembered for the task's result. When the
task ends its relay asks for those, and the proxy closes every connection
the task still has.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import OrderedDict
from urllib.parse import urlsplit

from para.ipc import egress
from para.web.policy import Refused, WebPolicy, WebPolicyConfig

CONNECT_TIMEOUT = 15.0
HEAD_TIMEOUT = 30.0
MAX_HEAD = 64 << 10
CHUNK = 64 << 10
# A task's refusals are kept until its worker asks for them (each task's are bounded by ipc/egress.py);
# this bounds what lost workers leave.
MAX_TASKS = 10_000
# Hop-by-hop and proxy headers: what this proxy consumes, never the origin server. Host too: the
# proxy sends the checked URL's (RFC 9112 3.2.2), else one address would serve any name (a CDN's).
DROPPED_HEADERS = {b"proxy-connection", b"proxy-authorization", b"connection", b"keep-alive", b"host"}


class Refusals:
    """The requests refused per task, until its worker asks for them."""

    def __init__(self) -> None:
        self._by_task: OrderedDict[str, list[dict]] = OrderedDict()

    def add(self, task: str, host: str, port: int, rule: str) -> None:
        entries = self._by_task.setdefault(task, [])
        self._by_task.move_to_end(task)
        if len(entries) < egress.MAX_REFUSALS:
            entries.append({"host": _cut(host, egress.MAX_HOST), "port": port, "rule": _cut(rule, egress.MAX_RULE)})
        while len(self._by_task) > MAX_TASKS:
            self._by_task.popitem(last=False)

    def take(self, task: str) -> list[dict]:
        return self._by_task.pop(task, [])


def _cut(text: str, most: int) -> str:
    return text if len(text) <= most else text[:most - 1] + "…"


class Refusal(Exception):
    """A request this proxy answers with an error status instead of forwarding it."""

    def __init__(self, status: int, reason: str, rule: str, host: str = "", port: int = 0) -> None:
        super().__init__(rule)
        self.status, self.reason, self.rule, self.host, self.port = status, reason, rule, host, port


class PoolProxy:
    """One socket: the policy of the pools that share it, and what it refused."""

    def __init__(self, policy: WebPolicy) -> None:
        self.policy = policy
        self.refusals = Refusals()
        self._live: dict[str, set[asyncio.Task]] = {}   # each task's connections, ended with it

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError):
            pass   # the command or the relay went away, or sent too much
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        opening = egress.parse_line(await asyncio.wait_for(reader.readline(), HEAD_TIMEOUT))
        if opening.report:
            self._end(opening.task)
            writer.write(json.dumps(self.refusals.take(opening.task)).encode() + b"\n")
            await writer.drain()
            return
        live = self._live.setdefault(opening.task, set())
        live.add(this := asyncio.current_task())
        try:
            await self._forward(opening, reader, writer)
        finally:
            live.discard(this)
            if not live and self._live.get(opening.task) is live:
                del self._live[opening.task]

    def _end(self, task: str) -> None:
        """`task` ended (its relay asks for its report then): close what it left open. A tunnel
        whose command went away is only half closed, and an origin that never closes its
        side would otherwise hold it, and its descriptors, for good."""
        for conn in self._live.pop(task, ()):
            conn.cancel()

    async def _forward(self, opening: egress.Opening, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        try:
            upstream, rest = await self._open(opening, head)
        except Refusal as exc:
            if exc.status == 403:
                self.refusals.add(opening.task, exc.host, exc.port, exc.rule)
            writer.write(_answer(exc))
            await writer.drain()
            return
        up_reader, up_writer = upstream
        try:
            if rest is None:
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                up_writer.write(rest)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            up_writer.close()

    async def _open(self, opening: egress.Opening, head: bytes) -> tuple[tuple, bytes | None]:
        """The connection to the origin and what to send it first (None: a tunnel), or Refusal."""
        try:
            policy = self.policy.narrowed(opening.allow)
        except ValueError as exc:
            raise Refusal(403, "Forbidden", f"the task's allow-list is not within the pool's: {exc}") from None
        method, target, version, headers = _parse_head(head)
        if method == b"CONNECT":
            host, port = _host_port(target.decode("latin-1"), 443)
            rest = None
        else:
            url = urlsplit(target.decode("latin-1"))
            if url.scheme != "http" or not url.hostname:
                raise Refusal(400, "Bad Request", "this proxy forwards absolute http:// URLs and tunnels "
                              "HTTPS with CONNECT; set HTTP_PROXY/HTTPS_PROXY, do not send it origin requests")
            host, port = url.hostname, _port(url)
            path = (url.path or "/") + (f"?{url.query}" if url.query else "")
            authority = url.netloc.rpartition("@")[2]   # userinfo is not the origin's business
            rest = _origin_request(method, path.encode("latin-1"), version, authority.encode("latin-1"), headers)
        try:
            addrs = await policy.resolve(host, port)
        except Refused as exc:
            raise Refusal(403, "Forbidden", str(exc), host, port) from None
        return await _connect(host, addrs, port), rest


def _parse_head(head: bytes) -> tuple[bytes, bytes, bytes, list[bytes]]:
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        raise Refusal(400, "Bad Request", "not an HTTP request line")
    return parts[0], parts[1], parts[2], lines[1:]


def _host_port(authority: str, default: int) -> tuple[str, int]:
    url = urlsplit(f"//{authority}")
    try:
        port = url.port or default
    except ValueError:
        raise Refusal(400, "Bad Request", f"{authority!r} has no valid port") from None
    if not url.hostname:
        raise Refusal(400, "Bad Request", f"{authority!r} names no host")
    return url.hostname, port


def _port(url) -> int:
    try:
        return url.port or 80
    except ValueError:
        raise Refusal(400, "Bad Request", f"{url.netloc!r} has no valid port") from None


def _origin_request(method: bytes, path: bytes, version: bytes, host: bytes, headers: list[bytes]) -> bytes:
    kept = [h for h in headers if h.split(b":", 1)[0].strip().lower() not in DROPPED_HEADERS]
    return b"\r\n".join([b" ".join((method, path, version)), b"Host: " + host, *kept, b"Connection: close", b"", b""])


async def _connect(host: str, addrs: list[str], port: int) -> tuple:
    """A connection to the first checked address that answers (never a new lookup: no rebinding)."""
    last = None
    for addr in addrs:
        try:
            return await asyncio.wait_for(asyncio.open_connection(addr, port, limit=CHUNK), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as exc:
            last = exc
    reason = last.strerror if isinstance(last, OSError) and last.strerror else "timed out"
    raise Refusal(502, "Bad Gateway", f"cannot connect to {host}:{port} ({', '.join(addrs)}): {reason}")


def _answer(exc: Refusal) -> bytes:
    body = f"para egress proxy: {exc.host + ':' + str(exc.port) + ' ' if exc.host else ''}refused: {exc.rule}\n".encode()
    rule = exc.rule.encode("ascii", "replace").replace(b"\r", b" ").replace(b"\n", b" ")
    return (f"HTTP/1.1 {exc.status} {exc.reason}\r\n".encode() + b"X-Para-Refused: " + rule + b"\r\n"
            + f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then pass the EOF on (a half close: the other way may go on)."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()


async def serve(config: dict[str, dict]) -> None:
    """Bind a socket per entry of `config` (path -> WebPolicyConfig), say ready, serve until stdin closes."""
    servers = []
    old = os.umask(0o077)   # only parad's user (the workers) may connect
    try:
        for path, policy in config.items():
            proxy = PoolProxy(WebPolicyConfig.model_validate(policy).policy())
            servers.append(await asyncio.start_unix_server(proxy.handle, path, limit=MAX_HEAD))
    finally:
        os.umask(old)
    try:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await _stdin_closed()
    finally:
        for server in servers:
            server.close()
        for path in config:
            _unlink(path)


async def _stdin_closed() -> None:
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, sys.stdin.buffer.read, 1):
        pass


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def main() -> None:
    config = json.loads(sys.stdin.buffer.readline())
    try:
        asyncio.run(serve(config))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
