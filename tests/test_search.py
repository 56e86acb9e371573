"""search: the SearxNG provider and the searcher (web/search.py) against a local server speaking SearxNG's JSON."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

from para.daemon.tools.base import ToolFailure
from para.client import InvalidRequest
from para.daemon.tools.search import NO_PROVIDER, Search, SearchArgs, SearchOptions
from para.testing import FAST, Daemon, stop_and_check, wait_until
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


def with_searcher(server: WebServer, body: Callable[[Searcher], Awaitable[Any]], max_bytes: int = 5 << 20,
                  **policy: Any) -> Any:
    async def main() -> Any:
        options = HttpOptions(policy={**LOCAL, **policy}, max_bytes=max_bytes)
        searcher = Searcher(SearxNG(server.url("/", host="searx.test")), options)
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


@pytest.mark.parametrize("body", [b'{"results": 5}', b'{"results": null}', b'{"results": "text"}',
                                  b'{"results": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}"])
def test_a_provider_answering_json_of_another_shape_fails_saying_so(server: WebServer, body: bytes) -> None:
    server.page("/search", body, content_type="application/json")
    with pytest.raises(FetchError, match="did not answer with its JSON results"):
        with_searcher(server, lambda s: s.search("q"))


def test_a_provider_answer_past_max_bytes_says_which_option_to_raise(server: WebServer) -> None:
    hits = [{"url": f"https://example.org/{i}", "title": "t" * 100, "content": "c" * 1000} for i in range(2000)]
    server.page("/search", json.dumps({"results": hits}), content_type="application/json")
    with pytest.raises(FetchError, match=r"answered more than max_bytes \(1048576 bytes\); raise the search pool's options.max_bytes"):
        with_searcher(server, lambda s: s.search("q"), max_bytes=1 << 20)


def test_no_provider_is_refused_at_admission_saying_how_to_configure_one() -> None:
    with pytest.raises(ToolFailure, match=r"no search provider is configured for this pool; set its options.provider: searxng"):
        Search().admit(SearchArgs(query="q"), SearchOptions(), None)
    with pytest.raises(ValueError, match="provider searxng needs searxng_url"):
        SearchOptions(provider="searxng")
    Search().admit(SearchArgs(query="q"), SearchOptions(provider="searxng", searxng_url="http://searx.test:8888"), None)



# ---- through a real parad ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def searx() -> Iterator[tuple[WebServer, list[dict[str, str]]]]:
    asked: list[dict[str, str]] = []
    with WebServer() as s:
        searxng(s, asked)
        yield s, asked


@pytest.fixture(scope="module")
def parad(searx: tuple[WebServer, list], tmp_path_factory: pytest.TempPathFactory,
          make_daemon: Callable[..., Daemon]) -> Iterator[Daemon]:
    server, _ = searx
    configured = {"options": {"provider": "searxng", "searxng_url": server.url("/", host="searx.test"), "policy": LOCAL}}
    d = make_daemon({"daemon": FAST, "pools": {"search": configured, "unconfigured": {"tool": "search"}}},
                    tmp_path_factory.mktemp("search"))
    yield d
    stop_and_check(d)


def test_search_through_parad_ranks_and_caches(parad: Daemon, searx: tuple[WebServer, list]) -> None:
    server, asked = searx
    with parad.client(timeout=60) as c:
        first = c.run("search", query="para daemon", count=2).value
        again = c.run("search", query="para  daemon", count=2).value
        tools = {t["name"]: t for t in c.tools()}
    assert first == {"query": "para daemon", "provider": "searxng", "cached": "fetched", "results": [
        {"title": f"para daemon result {i}", "url": f"https://example.org/para daemon/{i}",
         "snippet": f"about para daemon, number {i}"} for i in (1, 2)]}
    assert (again["cached"], again["results"]) == ("cache", first["results"])
    assert len(asked) == 1 and server.count("/search") == 1
    assert tools["search"]["read_only"] is True


def test_search_without_a_provider_is_refused_at_once_by_parad(parad: Daemon) -> None:
    with parad.client(timeout=60) as c:
        with pytest.raises(InvalidRequest) as info:
            c.submit("unconfigured", query="anything")
        workers = [w for w in c.workers() if w["pool"] == "unconfigured"]
    assert str(info.value) == f"unconfigured: {NO_PROVIDER}"
    assert workers == []      # refused in parad's admission: no worker was ever started for it
