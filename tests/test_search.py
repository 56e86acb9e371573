"""search: the SearxNG provider and the searcher (web/search.py) against a local server speaking SearxNG's JSON."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from para.daemon.tools.base import ToolFailure
from para.daemon.tools.search import Search, SearchArgs, SearchOptions
from para.testing import wait_until
from para.testing.http_server import WebServer
from para.web.http import FetchError
from para.web.options import HttpOptions
from para.web.search import SearxNG, Searcher

LOCAL = {"allow_private": ["127.0.0.1/32"], "hosts": {"searx.test": "127.0.0.1"}}


def searxng(server: WebServer, asked: list[dict[str, str]]) -> None:
    """Serve /search as SearxNG does with `format=json`: results for the query, in rank order."""
    async def search(request: web.Request) -> web.Response:
        asked.append(dict(request.query))
        if request.query.get("format") != "json":
            return web.Response(status=403, text="format not allowed")
        q = request.query["q"]
        results = [{"title": f"{q} result {i}", "url": f"https://example.org/{q}/{i}", "content": f"about {q}, number {i}",
                    "engine": "duckduckgo", "score": 1.0 / (i + 1)} for i in range(1, 6)]
        results.insert(2, {"title": "no url", "content": "dropped"})
        return web.json_response({"query": q, "number_of_results": 5, "results": results, "answers": []})
    server.route("/search", search)


def with_searcher(server: WebServer, body: Callable[[Searcher], Awaitable[Any]], **policy: Any) -> Any:
    async def main() -> Any:
        searcher = Searcher(SearxNG(server.url("/", host="searx.test")), HttpOptions(policy={**LOCAL, **policy}))
        await searcher.open()
        try:
            return await body(searcher)
        finally:
            await searcher.close()
    return asyncio.run(main())


@pytest.fixture
def server():
    with WebServer() as s:
        yield s


def test_results_come_ranked_from_searxng_json(server: WebServer) -> None:
    asked: list[dict[str, str]] = []
    searxng(server, asked)
    got = with_searcher(server, lambda s: s.search("zeromq  sockets", count=3, language="en"))
    assert [r.as_dict() for r in got.value] == [
        {"title": f"zeromq  sockets result {i}", "url": f"https://example.org/zeromq  sockets/{i}",
         "snippet": f"about zeromq  sockets, number {i}"} for i in (1, 2, 3)]
    assert asked == [{"q": "zeromq  sockets", "format": "json", "pageno": "1", "language": "en"}]


def test_identical_queries_are_asked_once(server: WebServer) -> None:
    asked: list[dict[str, str]] = []
    searxng(server, asked)
    server.hold("/search")
    n = 5

    async def many(s: Searcher) -> list[Any]:
        tasks = [asyncio.create_task(s.search("same query")) for _ in range(n)]
        key = ("search", "searxng", "same query", 10, 1, None)
        await asyncio.to_thread(wait_until, lambda: s.memo.waiters.get(key) == n, 20, f"{n} identical searches in flight")
        server.release("/search")
        first = await asyncio.gather(*tasks)
        return [g.how for g in first] + [(await s.search("same   query")).how]   # spaces do not make it another query
    hows = with_searcher(server, many)
    assert sorted(hows[:n]) == ["fetched"] + ["shared"] * (n - 1) and hows[n] == "cache"
    assert server.count("/search") == 1


def test_the_providers_host_goes_through_the_policy(server: WebServer) -> None:
    searxng(server, [])
    with pytest.raises(FetchError, match=r"searx.test is denied by the deny rule 'searx.test'"):
        with_searcher(server, lambda s: s.search("q"), deny=["searx.test"])
    assert server.count("/search") == 0


def test_a_searxng_without_json_says_what_to_enable(server: WebServer) -> None:
    server.page("/search", "forbidden", status=403, content_type="text/plain")
    with pytest.raises(FetchError, match=r"answered 403 Forbidden \(is `json` in its search.formats\?\)"):
        with_searcher(server, lambda s: s.search("q"))
    server.page("/search", "<html>not json</html>")
    with pytest.raises(FetchError, match="did not answer with its JSON results"):
        with_searcher(server, lambda s: s.search("q"))


def test_no_provider_is_refused_at_admission_saying_how_to_configure_one() -> None:
    with pytest.raises(ToolFailure, match=r"no search provider is configured; set pools.search.options.provider: searxng"):
        Search().admit(SearchArgs(query="q"), SearchOptions(), None)
    with pytest.raises(ValueError, match="provider searxng needs searxng_url"):
        SearchOptions(provider="searxng")
    Search().admit(SearchArgs(query="q"), SearchOptions(provider="searxng", searxng_url="http://searx.test:8888"), None)

