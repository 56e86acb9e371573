"""Pages: a URL fetched once, rendered once, shared by every task that asks for it while it is fresh.

Two layers over one Memo (cache + in-flight dedup): each *hop* (one request,
keyed by its URL and headers, cached for its own lifetime, so a redirect that
says nothing of caching is asked again while the page it leads to is served
from the cache), and each extraction of a final HTML response as markdown or
text (raw text and non-HTML bodies are only decoded, at once). Two tasks
asking for the same URL at once make one request per hop; asking for it as
markdown and then as raw makes one. Paging (`start_index`, `max_length`) is
cut from the rendered text, so every page of a long document comes from the
same fetch.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from yarl import URL

from para.web.cache import ByteLRU
from para.web.extract import is_html, render
from para.web.http import FetchError, HttpClient, Response, header_key
from para.web.inflight import Memo, Produced
from para.web.options import HttpOptions
from para.web.policy import WebPolicy
from para.web.renderer import Renderer


@dataclass(slots=True)
class Page:
    """A response rendered in one format; `content` whole (callers cut their page from it)."""
    response: Response
    format: str
    content: str | bytes
    title: str | None = None

    @property
    def how(self) -> str:
        """How the final response was had: "fetched", "shared" (joined an identical request in flight) or "cache"."""
        return self.response.how


class Pages:
    """The fetch service of one worker: an HttpClient, a Memo over a byte-bounded cache, and the
    processes that extract HTML (`extract_processes`, each page within `extract_timeout` seconds)."""

    def __init__(self, options: HttpOptions, policy: WebPolicy | None = None, extract_processes: int = 2,
                 extract_timeout: float = 20.0) -> None:
        self.http = HttpClient(options, policy)
        self.memo = Memo(ByteLRU(options.cache_bytes))
        self.renderer = Renderer(extract_processes, extract_timeout)

    async def open(self) -> None:
        await self.http.open()

    async def close(self) -> None:
        await self.memo.close()
        await self.http.close()
        await self.renderer.close()

    async def page(self, url: str, fmt: str = "markdown", headers: dict[str, str] | None = None,
                   timeout: float | None = None, links: bool = False) -> Page:
        """`url` rendered as `fmt` (markdown with its hyperlinks if `links`); FetchError if it cannot
        be had (NotText if it has no text)."""
        resp = await self.http.get(normalize(url), headers, timeout, hop=self._hop)
        if fmt == "bytes":
            return Page(resp, fmt, resp.body)
        links = links and fmt == "markdown"
        if fmt == "raw" or not is_html(resp.body, resp.content_type):
            # Decoding only: microseconds a page, cheaper than a process's hand-off or a cache entry.
            return Page(resp, fmt, *render(resp.body, resp.content_type, resp.charset, fmt, resp.final_url))
        key = ("render", resp.final_url, resp.sent, fmt, links)
        got = await self.memo.get(key, lambda: self._extract(resp, fmt, links))
        return Page(resp, fmt, *got.value)

    async def _hop(self, url: URL, headers: dict[str, str], credentials: bool) -> Response:
        got = await self.memo.get(("hop", str(url), header_key(headers)),
                                  lambda: self._request(url, headers, credentials))
        resp = got.value.copy()
        resp.ttl, resp.how = got.ttl, got.how
        return resp

    async def _request(self, url: URL, headers: dict[str, str], credentials: bool) -> Produced[Response]:
        resp = await self.http.hop(url, headers, credentials)
        # Sized only if it may be kept: most pages say no-store or nothing of caching (ttl 0).
        size = len(resp.body) + sum(len(k) + len(v) for k, v in resp.headers.items()) + 256 if resp.ttl > 0 else 0
        return Produced(resp, size, resp.ttl)

    async def _extract(self, resp: Response, fmt: str, links: bool) -> Produced[tuple[str, str | None]]:
        # Milliseconds of CPU a page, or minutes for some: in a child process (web/renderer.py).
        content, title = await self.renderer.render(resp.body, resp.content_type, resp.charset, fmt,
                                                    resp.final_url, links)
        return Produced((content, title), 2 * len(content) + 256, resp.ttl)


def normalize(url: str) -> URL:
    """The URL as the cache knows it: scheme and host lower case, default port and fragment dropped."""
    try:
        parsed = URL(url)
    except (ValueError, TypeError) as exc:
        raise FetchError(f"{url!r} is not a URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise FetchError(f"{url!r} is not an http(s) URL with a host; only http and https are fetched")
    return parsed.with_fragment(None)


def cut(content: str | bytes, start: int, length: int) -> tuple[str, int, int | None]:
    """(the page of `content` from `start`, at most `length` long; its total length; the next start or None).
    Bytes come back base64-encoded, their offsets counted in bytes."""
    piece = content[start:start + length]
    nxt = start + length if start + length < len(content) else None
    text = base64.b64encode(piece).decode("ascii") if isinstance(piece, bytes) else piece
    return text, len(content), nxt
