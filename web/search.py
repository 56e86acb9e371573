"""Web search: a provider interface, the SearxNG JSON provider, and a searcher that caches and deduplicates.

A provider turns a query into ranked results using the policy-checked HTTP
client it is given (so its own host is checked like any fetched page):

    class MyProvider:
        name = "mine"
        async def search(self, http: HttpClient, query: str, count: int, page: int,
                         language: str | None) -> list[Result]: ...

and is registered in PROVIDERS by the name a pool's `options.provider` gives.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

from yarl import URL

from para.web.cache import ByteLRU
from para.web.http import FetchError, HttpClient
from para.web.inflight import Got, Memo, Produced
from para.web.options import HttpOptions
from para.web.policy import WebPolicy


@dataclass(slots=True)
class Result:
    """One search hit, in the provider's rank order."""
    title: str
    url: str
    snippet: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


class Provider(Protocol):
    """A search engine: `search` returns at most `count` results for `query`, best first,
    or raises FetchError saying what went wrong."""
    name: str

    async def search(self, http: HttpClient, query: str, count: int, page: int,
                     language: str | None) -> list[Result]: ...


class SearxNG:
    """A SearxNG instance's JSON API: GET {base}/search?q=...&format=json (its settings.yml must list
    `json` under search.formats)."""
    name = "searxng"

    def __init__(self, base_url: str) -> None:
        self.base = URL(base_url.rstrip("/"))

    async def search(self, http: HttpClient, query: str, count: int, page: int,
                     language: str | None) -> list[Result]:
        params = {"q": query, "format": "json", "pageno": str(page)}
        if language:
            params["language"] = language
        url = (self.base / "search").with_query(params)
        resp = await http.get(str(url), {"Accept": "application/json"})
        if resp.status != 200:
            raise FetchError(f"SearxNG at {self.base} answered {resp.status} {resp.reason}"
                             + (" (is `json` in its search.formats?)" if resp.status == 403 else ""))
        if resp.truncated:
            raise FetchError(f"SearxNG at {self.base} answered more than max_bytes ({http.options.max_bytes} bytes); "
                             f"raise the search pool's options.max_bytes")
        try:
            hits = json.loads(resp.body)["results"]
        except (ValueError, KeyError, TypeError, RecursionError):   # RecursionError: nesting too deep
            hits = None
        if not isinstance(hits, list):
            raise FetchError(f"SearxNG at {self.base} did not answer with its JSON results (check searxng_url)")
        return [Result(str(h.get("title") or ""), str(h["url"]), str(h.get("content") or ""))
                for h in hits if isinstance(h, dict) and h.get("url")][:count]


PROVIDERS: dict[str, Callable[..., Provider]] = {"searxng": SearxNG}


class Searcher:
    """A provider behind the same HTTP client, cache and in-flight dedup as fetch (web/inflight.py)."""

    def __init__(self, provider: Provider, options: HttpOptions, policy: WebPolicy | None = None) -> None:
        self.provider = provider
        self.http = HttpClient(options, policy)
        self.memo = Memo(ByteLRU(options.cache_bytes))
        self.ttl = options.cache_ttl_max

    async def open(self) -> None:
        await self.http.open()

    async def close(self) -> None:
        await self.memo.close()
        await self.http.close()

    async def search(self, query: str, count: int = 10, page: int = 1, language: str | None = None) -> Got[list[Result]]:
        key = ("search", self.provider.name, " ".join(query.split()), count, page, language)
        return await self.memo.get(key, lambda: self._ask(query, count, page, language))

    async def _ask(self, query: str, count: int, page: int, language: str | None) -> Produced[list[Result]]:
        results = await self.provider.search(self.http, query, count, page, language)
        size = sum(len(r.title) + len(r.url) + len(r.snippet) for r in results) + 256
        return Produced(results, size, self.ttl)
