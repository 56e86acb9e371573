"""HTTP GET under the web policy: every hop checked, connections only to checked addresses.

aiohttp, not httpx: its resolver hook (`AbstractResolver`) lets the policy
resolve each name and hand the connector only the addresses it passed, so a
second DNS answer cannot redirect a connection (rebinding); its connector
limits connections per host; and it is the faster of the two on one event
loop (bench/fetch.py). Redirects are followed here, by hand, so that every
hop's scheme, name and addresses are checked, and credentials are not carried
to another origin. aiohttp skips the resolver for IP literals, so those are
checked here before each hop too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import operator
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from para.web.cache import shared_ttl
from para.web.options import HttpOptions
from para.web.policy import Refused, WebPolicy

REDIRECTS = frozenset({301, 302, 303, 307, 308})
CHECKED_HOSTS = 4096   # hosts whose check is remembered (the memo starts over past that)
# Never sent to another origin than the one the task named.
CREDENTIALS = frozenset({"authorization", "proxy-authorization", "cookie"})


class FetchError(Exception):
    """A request that got no answer (refused, timed out, unreachable); the message says why, in one line."""


@dataclass(slots=True)
class Response:
    """A response as read: its body capped at max_bytes (`truncated` says so)."""
    url: str
    final_url: str
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    truncated: bool
    redirects: list[str] = field(default_factory=list)
    ttl: float = 0.0                  # seconds a shared cache may reuse the (last) hop
    location: str | None = None       # a redirect's target, as the server wrote it
    sent: tuple[tuple[str, str], ...] = ()   # the headers the last hop was requested with (header_key)
    how: str = "fetched"              # the last hop: "fetched", "shared" (joined one in flight) or "cache"

    def header(self, name: str) -> str:
        """A header's value, whatever case the server wrote its name in ('' if absent)."""
        value = self.headers.get(name)   # most servers write names as asked for: no scan
        if value is not None:
            return value
        name = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == name), "")

    def copy(self) -> "Response":
        """A shallow copy, to change (a cached response is shared); dataclasses.replace is several times
        slower, a setattr loop over the slots twice so."""
        return Response(*_FIELDS(self))

    @property
    def content_type(self) -> str:
        return self.header("Content-Type").split(";", 1)[0].strip().lower()

    @property
    def charset(self) -> str | None:
        for part in self.header("Content-Type").split(";")[1:]:
            name, _, value = part.strip().partition("=")
            if name.lower() == "charset" and value:
                return value.strip('"')
        return None


_FIELDS = operator.attrgetter(*Response.__slots__)   # a slots dataclass's slots are its fields, in order

# Makes one request: (url, headers, whether they carry credentials) -> its response, a fresh object the caller may change;
# bounded by total_timeout from its start at the latest (HttpClient.get adds no timer of its own for a first hop).
Hop = Callable[[URL, dict[str, str], bool], Awaitable[Response]]


class PolicyResolver(AbstractResolver):
    """Resolves through WebPolicy.resolve: the connector only sees addresses the policy passed."""

    def __init__(self, policy: WebPolicy) -> None:
        self.policy = policy

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        addrs = await self.policy.resolve(host, port)
        return [{"hostname": host, "host": a, "port": port, "proto": 0, "flags": socket.AI_NUMERICHOST,
                 "family": socket.AF_INET6 if ":" in a else socket.AF_INET} for a in addrs]

    async def close(self) -> None:
        pass


class HttpClient:
    """One aiohttp session under one policy; open it in the event loop that uses it."""

    def __init__(self, options: HttpOptions, policy: WebPolicy | None = None) -> None:
        self.options = options
        self.policy = policy or options.policy.policy()
        self._session: aiohttp.ClientSession | None = None
        # host -> the policy's refusal, or None if it passed: `policy` is frozen, and what is remembered
        # needs no DNS (a name's rules; an IP literal's address), so the answer cannot change. Names
        # are still resolved and their addresses checked for each new connection, by PolicyResolver.
        self._checked: dict[str, str | None] = {}

    async def open(self) -> None:
        o = self.options
        connector = aiohttp.TCPConnector(resolver=PolicyResolver(self.policy), family=socket.AF_UNSPEC,
                                         limit=o.max_connections, limit_per_host=o.per_host)
        # sock_connect, not connect: waiting for a free per-host slot is not a slow host.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=o.connect_timeout)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False,
                                              cookie_jar=aiohttp.DummyCookieJar(),
                                              headers={"User-Agent": o.user_agent})

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get(self, url: str | URL, headers: dict[str, str] | None = None, timeout: float | None = None,
                  hop: Hop | None = None) -> Response:
        """GET `url`, following redirects by hand, each hop made by `hop` (default: `self.hop`; Pages
        passes one that caches and shares hops). FetchError if there is no answer (the policy's refusal
        named); `timeout`, if shorter than the pool's total_timeout, bounds the whole of it."""
        total = min(timeout or self.options.total_timeout, self.options.total_timeout)
        try:
            return await self._follow(url if isinstance(url, URL) else URL(url), dict(headers or {}), hop or self.hop, total)
        except Refused as exc:
            raise FetchError(f"refused by the web policy: {exc}") from None
        except aiohttp.ConnectionTimeoutError:
            raise FetchError(f"connecting to {URL(url).host} timed out after {self.options.connect_timeout:g}s (connect_timeout)") from None
        except TimeoutError:
            which = "total timeout" if total == self.options.total_timeout else "the task's timeout"
            raise FetchError(f"{url} did not answer in full within {total:g}s ({which})") from None
        except aiohttp.ClientConnectorError as exc:
            raise FetchError(f"cannot connect to {exc.host}:{exc.port}: {exc.os_error.strerror or exc.os_error}") from None
        except (aiohttp.ClientError, ValueError) as exc:
            raise FetchError(f"{url}: {type(exc).__name__}: {exc}") from None

    async def hop(self, url: URL, headers: dict[str, str], credentials: bool) -> Response:
        """One request, no redirect followed; a redirect's `location` is set and its body not read.
        Bounded by total_timeout on its own, since a cached hop may outlive the task that started it."""
        assert self._session is not None, "HttpClient.open() first"
        async with asyncio.timeout(self.options.total_timeout):
            async with self._session.get(url, headers=headers, allow_redirects=False) as resp:
                ttl = shared_ttl(resp.status, resp.headers, self.options.cache_ttl_max, credentials)
                location = resp.headers.get("Location") if resp.status in REDIRECTS else None
                body, truncated = (b"", False) if location else await _read_capped(resp, self.options.max_bytes)
                return Response(str(url), str(resp.url), resp.status, resp.reason or "", _flat(resp.headers),
                                body, truncated, ttl=ttl, location=location)

    async def _follow(self, url: URL, headers: dict[str, str], hop: Hop, total: float) -> Response:
        first, redirects = url, []
        credentials = bool(CREDENTIALS & {k.lower() for k in headers})
        deadline = asyncio.get_running_loop().time() + total
        for _ in range(self.options.max_redirects + 1):
            await self._check(url)
            if redirects or total < self.options.total_timeout:
                async with asyncio.timeout_at(deadline):
                    resp = await hop(url, headers, credentials)
            else:
                # A hop bounds itself by total_timeout from its start, no later than now: a first hop
                # under the pool's timeout needs no second timer (a timer is some 4 us of a fetch's CPU).
                resp = await hop(url, headers, credentials)
            if resp.location is None:   # a Hop's response is the caller's own: set in place, not copied
                resp.url, resp.redirects, resp.sent = str(first), redirects, header_key(headers)
                return resp
            nxt = url.join(URL(resp.location))
            if (nxt.scheme, nxt.host, nxt.port) != (url.scheme, url.host, url.port):   # another origin
                headers = {k: v for k, v in headers.items() if k.lower() not in CREDENTIALS}
            url = nxt
            redirects.append(str(url))
        raise FetchError(f"{first}: more than {self.options.max_redirects} redirects (max_redirects); last {url}")

    async def _check(self, url: URL) -> None:
        """The hop's scheme and host; an IP literal's address too (aiohttp does not resolve those)."""
        if url.scheme not in ("http", "https"):
            raise Refused(f"{url} is not an http or https URL")
        host = url.host
        if not host:
            raise Refused(f"{url} names no host")
        try:
            refusal = self._checked[host]
        except KeyError:
            refusal = self._checked[host] = await self._check_host(host, url.port or 0)
        if refusal is not None:
            raise Refused(refusal)

    async def _check_host(self, host: str, port: int) -> str | None:
        if len(self._checked) >= CHECKED_HOSTS:
            self._checked.clear()
        try:
            name = self.policy.check_host(host)
            try:
                ipaddress.ip_address(name)
            except ValueError:
                return None
            await self.policy.resolve(name, port)   # a literal: no lookup, its address checked
            return None
        except Refused as exc:
            return str(exc)


async def _read_capped(resp: aiohttp.ClientResponse, cap: int) -> tuple[bytes, bool]:
    chunks, size = [], 0
    async for chunk in resp.content.iter_any():
        if size + len(chunk) > cap:
            chunks.append(chunk[:cap - size])
            resp.close()    # the rest is never read: this connection cannot be reused
            return b"".join(chunks), True
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), False


def header_key(headers: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """Request headers as a cache key: names lower case, sorted."""
    return tuple(sorted((k.lower(), v) for k, v in headers.items()))



def _flat(headers: "aiohttp.typedefs.LooseHeaders") -> dict[str, str]:
    """Response headers as one string each (repeated ones joined as HTTP allows, Set-Cookie dropped)."""
    out: dict[str, str] = {}
    for k, v in headers.items():
        if k.lower() != "set-cookie":
            out[k] = f"{out[k]}, {v}" if k in out else v
    return out
