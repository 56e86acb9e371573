"""Pages: a URL fetched once, rendered once, shared by every task that asks for it while it is fresh.

Two layers over one Memo (cache + in-flight dedup): the response, keyed by the
normalized URL and request headers, and its rendering in each format, keyed by
that and the format. Two tasks asking for the same URL at once make one
request; asking for it as markdown and then as raw still makes one. Paging
(`start_index`, `max_length`) is cut from the rendered text, so every page of
a long document comes from the same fetch.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass

from yarl import URL

from para.web.cache import ByteLRU
from para.web.extract import render
from para.web.http import FetchError, HttpClient, Response
from para.web.inflight import Memo, Produced
from para.web.options import HttpOptions
from para.web.policy import WebPolicy


@dataclass(slots=True)
class Page:
    """A response rendered in one format; `content` whole (callers cut their page from it)."""
    response: Response
    format: str
    content: str | bytes
    title: str | None = None
    how: str = "fetched"   # "fetched", "shared" (joined an identical request in flight) or "cache"


class Pages:
    """The fetch service of one worker: an HttpClient, and a Memo over a byte-bounded cache."""

    def __init__(self, options: HttpOptions, policy: WebPolicy | None = None) -> None:
        self.http = HttpClient(options, policy)
        self.memo = Memo(ByteLRU(options.cache_bytes))

    async def open(self) -> None:
        await self.http.open()

    async def close(self) -> None:
        await self.memo.close()
        await self.http.close()

    async def page(self, url: str, fmt: str = "markdown", headers: dict[str, str] | None = None,
                   timeout: float | None = None, links: bool = False) -> Page:
        """`url` rendered as `fmt` (markdown with its hyperlinks if `links`); FetchError if it cannot
        be had (NotText if it has no text)."""
        norm = normalize(url)
        hkey = tuple(sorted((k.lower(), v) for k, v in (headers or {}).items()))
        get_key = ("get", norm, hkey)
        links = links and fmt == "markdown"
        try:
            async with asyncio.timeout(timeout):
                got = await self.memo.get(("page", get_key, fmt, links),
                                          lambda: self._render(get_key, norm, headers, fmt, links))
        except TimeoutError:
            raise FetchError(f"{url} did not answer in full within {timeout:g}s (the task's timeout)") from None
        page = got.value
        return Page(page.response, page.format, page.content, page.title, got.how)

    async def _render(self, get_key: tuple, url: str, headers: dict[str, str] | None, fmt: str,
                      links: bool) -> Produced[Page]:
        got = await self.memo.get(get_key, lambda: self._get(url, headers))
        resp = got.value
        if fmt == "bytes":
            return Produced(Page(resp, fmt, resp.body), 0, 0.0)   # the response itself is the cached copy
        content, title = await asyncio.to_thread(render, resp.body, resp.content_type, resp.charset, fmt,
                                                  resp.final_url, links)
        return Produced(Page(resp, fmt, content, title), 2 * len(content) + 256, got.ttl)

    async def _get(self, url: str, headers: dict[str, str] | None) -> Produced[Response]:
        resp = await self.http.get(url, headers)
        size = len(resp.body) + sum(len(k) + len(v) for k, v in resp.headers.items()) + 256
        return Produced(resp, size, resp.ttl)


def normalize(url: str) -> str:
    """The URL as the cache knows it: scheme and host lower case, default port and fragment dropped."""
    try:
        parsed = URL(url)
    except (ValueError, TypeError) as exc:
        raise FetchError(f"{url!r} is not a URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise FetchError(f"{url!r} is not an http(s) URL with a host; only http and https are fetched")
    return str(parsed.with_fragment(None))


def cut(content: str | bytes, start: int, length: int) -> tuple[str, int, int | None]:
    """(the page of `content` from `start`, at most `length` long; its total length; the next start or None).
    Bytes come back base64-encoded, their offsets counted in bytes."""
    piece = content[start:start + length]
    nxt = start + length if start + length < len(content) else None
    text = base64.b64encode(piece).decode("ascii") if isinstance(piece, bytes) else piece
    return text, len(content), nxt
