"""fetch: the web layer (web/pages.py, web/http.py) against real HTTP servers on 127.0.0.1.

Names are pinned to 127.0.0.1 by the policy's `hosts` (a.test, b.test) and
127.0.0.1/32 is allowed as private, so every other private address (127.0.0.2,
169.254.169.254) stays refused, as it would be on a host on the internet.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from para.client import InvalidRequest, TaskError
from para.sandbox.probe import probe
from para.testing import FAST, Daemon, stop_and_check, wait_running, wait_until
from para.testing.http_server import WebServer, unanswered_port
from para.web.extract import NotText
from para.web.http import FetchError
from para.web.options import HttpOptions
from para.web.pages import Page, Pages, cut

FIXTURES = Path(__file__).parent / "fixtures" / "web"
HOST = probe()
LOCAL = {"allow_private": ["127.0.0.1/32"], "hosts": {"a.test": "127.0.0.1", "b.test": "127.0.0.1",
                                                      "inside.test": "10.1.2.3"}}


def options(**kw: Any) -> HttpOptions:
    return HttpOptions(**{"policy": LOCAL, **kw})


def with_pages(opts: HttpOptions, body: Callable[[Pages], Awaitable[Any]]) -> Any:
    """Run `body(pages)` on a fresh event loop with an open Pages, closed after."""
    async def main() -> Any:
        pages = Pages(opts)
        await pages.open()
        try:
            return await body(pages)
        finally:
            await pages.close()
    return asyncio.run(main())


def fetch(url: str, **kw: Any) -> Page:
    opts = options(**kw.pop("opts", {}))
    return with_pages(opts, lambda p: p.page(url, **kw))


@pytest.fixture
def server():
    with WebServer() as s:
        yield s


def test_redirects_are_followed_to_the_final_url(server: WebServer) -> None:
    server.page("/end", "<html><body><p>arrived</p></body></html>")
    server.redirect("/one", "/two", 301)
    server.redirect("/two", server.url("/end", host="b.test"), 307)
    page = fetch(server.url("/one", host="a.test"))
    assert page.response.status == 200
    assert page.response.final_url == server.url("/end", host="b.test")
    assert page.response.redirects == [server.url("/two", host="a.test"), server.url("/end", host="b.test")]
    assert page.content == "arrived"


@pytest.mark.parametrize("target", ["http://127.0.0.2:{port}/", "http://169.254.169.254/latest/meta-data/",
                                    "http://inside.test:{port}/", "http://[::ffff:10.0.0.1]/"])
def test_a_redirect_to_a_private_address_is_refused(server: WebServer, target: str) -> None:
    server.redirect("/r", target.format(port=server.port))
    with pytest.raises(FetchError, match=r"refused by the web policy: .* address, which is refused \(allow it with allow_private"):
        fetch(server.url("/r"))
    assert server.count("/r") == 1


def test_redirects_past_the_limit_fail_and_other_schemes_are_refused(server: WebServer) -> None:
    server.redirect("/loop", "/loop")
    with pytest.raises(FetchError, match="more than 3 redirects"):
        fetch(server.url("/loop"), opts={"max_redirects": 3})
    assert server.count("/loop") == 4
    server.redirect("/file", "file:///etc/passwd")
    with pytest.raises(FetchError, match="is not an http or https URL"):
        fetch(server.url("/file"))
    with pytest.raises(FetchError, match="only http and https"):
        fetch("ftp://a.test/x")


def test_credentials_are_not_carried_to_another_origin(server: WebServer) -> None:
    seen: dict[str, str | None] = {}

    async def record(request: web.Request) -> web.Response:
        seen[request.host.split(":")[0]] = request.headers.get("Authorization")
        if request.host.startswith("a.test"):
            return web.Response(status=302, headers={"Location": server.url("/who", host="b.test")})
        return web.Response(text="ok", content_type="text/plain")
    server.route("/who", record)
    fetch(server.url("/who", host="a.test"), headers={"Authorization": "Bearer secret"})
    assert seen == {"a.test": "Bearer secret", "b.test": None}


def test_the_byte_cap_stops_reading_and_says_truncated(server: WebServer) -> None:
    server.page("/big", b"x" * (1 << 20), content_type="application/octet-stream")
    page = fetch(server.url("/big"), fmt="bytes", opts={"max_bytes": 65536})
    assert page.response.truncated and len(page.content) == 65536
    whole = fetch(server.url("/big"), fmt="bytes")
    assert not whole.response.truncated and len(whole.content) == 1 << 20


def test_connect_timeout() -> None:
    with unanswered_port() as port:
        with pytest.raises(FetchError, match=r"connecting to 127.0.0.1 timed out after 0.5s \(connect_timeout\)"):
            fetch(f"http://127.0.0.1:{port}/", opts={"connect_timeout": 0.5})


def test_total_timeout_covers_a_body_that_never_ends(server: WebServer) -> None:
    async def dribble(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        await resp.write(b"a little")
        await asyncio.Event().wait()      # never more (cancelled when the server stops)
        return resp
    server.route("/slow", dribble)
    with pytest.raises(FetchError, match=r"did not answer in full within 0.5s \(total timeout\)"):
        fetch(server.url("/slow"), opts={"total_timeout": 0.5})
    with pytest.raises(FetchError, match=r"within 0.3s \(the task's timeout\)"):
        fetch(server.url("/slow"), timeout=0.3)


def test_domain_policy_allow_deny_and_pinned_names(server: WebServer) -> None:
    server.page("/p", "<p>fine</p>")
    server.redirect("/to-b", server.url("/p", host="b.test"))
    only_a = {**LOCAL, "allow": ["a.test"]}
    assert fetch(server.url("/p", host="a.test"), opts={"policy": only_a}).content == "fine"
    with pytest.raises(FetchError, match=r"b.test is not in the allow list \(a.test\)"):
        fetch(server.url("/p", host="b.test"), opts={"policy": only_a})
    with pytest.raises(FetchError, match=r"b.test is not in the allow list"):
        fetch(server.url("/to-b", host="a.test"), opts={"policy": only_a})     # checked again on the redirect
    with pytest.raises(FetchError, match=r"a.test is denied by the deny rule '\*.test'"):
        fetch(server.url("/p", host="a.test"), opts={"policy": {**LOCAL, "allow": ["a.test"], "deny": ["*.test"]}})
    with pytest.raises(FetchError, match="127.0.0.1, a loopback address, which is refused"):
        fetch(server.url("/p", host="a.test"), opts={"policy": {"hosts": LOCAL["hosts"]}})
    assert server.count("/p") == 1


def test_a_fresh_response_is_served_from_the_cache(server: WebServer) -> None:
    server.page("/fresh", "<p>fresh</p>", headers={"Cache-Control": "public, max-age=60"})
    server.page("/private", "<p>mine</p>", headers={"Cache-Control": "private, max-age=60"})
    server.page("/silent", "<p>says nothing</p>")

    async def twice(pages: Pages) -> list[str]:
        hows = []
        for path in ("/fresh", "/private", "/silent"):
            for fmt in ("markdown", "raw"):
                hows.append((await pages.page(server.url(path), fmt)).how)
        return hows
    hows = with_pages(options(), twice)
    assert hows == ["fetched", "cache", "fetched", "fetched", "fetched", "fetched"]   # raw: the same response
    assert (server.count("/fresh"), server.count("/private"), server.count("/silent")) == (1, 2, 2)


def test_a_redirect_without_a_lifetime_is_asked_again_but_not_the_page_it_leads_to(server: WebServer) -> None:
    server.page("/fresh", "<p>fresh</p>", headers={"Expires": "Thu, 01 Jan 2099 00:00:00 GMT"})
    server.redirect("/moved", "/fresh")

    async def twice(pages: Pages) -> list[str]:
        return [(await pages.page(server.url("/moved"))).how for _ in range(2)]
    assert with_pages(options(), twice) == ["fetched", "cache"]
    assert (server.count("/moved"), server.count("/fresh")) == (2, 1)


def test_identical_requests_in_flight_make_one_request(server: WebServer) -> None:
    server.page("/once", "<p>shared</p>", headers={"Cache-Control": "no-store"})   # so only dedup can explain 1
    server.hold("/once")
    n = 6

    async def many(pages: Pages) -> list[Page]:
        tasks = [asyncio.create_task(pages.page(server.url("/once"))) for _ in range(n)]
        key = ("hop", server.url("/once"), ())
        await asyncio.to_thread(wait_until, lambda: pages.memo.waiters.get(key) == n, 20, f"{n} identical fetches in flight")
        await asyncio.to_thread(wait_until, lambda: server.count("/once") == 1, 20, "the request at the server")
        server.release("/once")
        return await asyncio.gather(*tasks)
    got = with_pages(options(), many)
    assert [p.content for p in got] == ["shared"] * n
    assert sorted(p.how for p in got) == ["fetched"] + ["shared"] * (n - 1)
    assert server.count("/once") == 1


def test_the_per_host_limit_is_what_the_server_sees(server: WebServer) -> None:
    limit, n = 2, 8

    async def crowd(request: web.Request) -> web.Response:
        # Hold each request until one more than the limit is in, or a while: with the limit kept,
        # `limit` at a time arrive; without it, all of them would.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 0.3
        while server.active <= limit and loop.time() < deadline:
            await asyncio.sleep(0.01)
        return web.Response(text=request.path, content_type="text/plain")
    for i in range(n):
        server.route(f"/c{i}", crowd)

    async def all_at_once(pages: Pages) -> list[Page]:
        return await asyncio.gather(*(pages.page(server.url(f"/c{i}")) for i in range(n)))
    got = with_pages(options(per_host=limit), all_at_once)
    assert sorted(p.content for p in got) == sorted(f"/c{i}" for i in range(n))
    assert server.max_active == limit


def test_a_real_page_gives_its_main_text_without_navigation(server: WebServer) -> None:
    server.page("/wiki", (FIXTURES / "en.wikipedia.org.tsne.html").read_bytes())
    md = fetch(server.url("/wiki"))
    assert md.title == "t-distributed stochastic neighbor embedding - Wikipedia"
    assert "**T-distributed Stochastic Neighbor Embedding (t-SNE)** is a machine learning algorithm" in md.content
    assert "Kullback–Leibler divergence" in md.content
    for boilerplate in ("Jump to navigation", "Personal tools", "Privacy policy", "Main page", "wgPageName"):
        assert boilerplate not in md.content
    text = fetch(server.url("/wiki"), fmt="text")
    assert "T-distributed Stochastic Neighbor Embedding (t-SNE) is a machine learning algorithm" in text.content
    assert "**" not in text.content
    linked = fetch(server.url("/wiki"), links=True)
    assert f"[machine learning]({server.url('/wiki/Machine_learning')})" in linked.content
    raw = fetch(server.url("/wiki"), fmt="raw")
    assert raw.content.startswith("<!DOCTYPE html>") and "Privacy policy" in raw.content


def test_pages_trafilatura_finds_nothing_in_still_give_their_text(server: WebServer) -> None:
    server.page("/tiny", "<html><body><div>just one line</div></body></html>")
    server.page("/json", '{"a": 1}', content_type="application/json")
    server.page("/png", b"\x89PNG\r\n\x1a\n\0\0", content_type="image/png")
    assert fetch(server.url("/tiny")).content == "just one line"
    assert fetch(server.url("/json")).content == '{"a": 1}'
    with pytest.raises(NotText, match="is image/png, not text; ask for format 'bytes'"):
        fetch(server.url("/png"))
    assert fetch(server.url("/png"), fmt="bytes").content == b"\x89PNG\r\n\x1a\n\0\0"


@pytest.mark.parametrize("charset", ["zlib", "rot13", "idna", "undefined", "punycode", "no-such-charset"])
def test_a_charset_that_is_no_web_text_encoding_is_read_as_utf8(server: WebServer, charset: str) -> None:
    # A server names the charset: Python codecs that are not text encodings, or raise, or
    # take quadratic time (punycode) must not be what decodes its body.
    text = "grüße-aus-köln"
    server.page("/header", f"<html><body><p>{text}</p></body></html>", content_type=f"text/html; charset={charset}")
    server.page("/meta", f'<html><head><meta charset="{charset}"></head><body><p>{text}</p></body></html>',
                content_type="text/html")
    server.page("/plain", text, content_type=f"text/plain; charset={charset}")
    assert fetch(server.url("/header")).content == text
    assert fetch(server.url("/meta")).content == text
    assert fetch(server.url("/plain"), fmt="raw").content == text


def test_long_content_is_read_in_pieces() -> None:
    assert cut("abcdefghij", 0, 4) == ("abcd", 10, 4)
    assert cut("abcdefghij", 8, 4) == ("ij", 10, None)
    assert cut(b"\x00\x01\x02", 1, 5) == (base64.b64encode(b"\x01\x02").decode(), 3, None)


# ---- through a real parad: the fetch pool's one worker, its cache and dedup, admission -----------------

@pytest.fixture(scope="module")
def site() -> Iterator[WebServer]:
    with WebServer() as s:
        s.page("/wiki", (FIXTURES / "en.wikipedia.org.tsne.html").read_bytes(), headers={"Cache-Control": "max-age=60"})
        s.redirect("/go-wiki", "/wiki")
        s.redirect("/metadata", "http://169.254.169.254/latest/meta-data/")
        s.page("/once", "<p>shared</p>", headers={"Cache-Control": "no-store"})
        s.page("/marker", "<p>marker</p>", headers={"Cache-Control": "no-store"})
        s.page("/sandboxed", "<p>sandboxed</p>", headers={"Cache-Control": "no-store"})
        yield s


@pytest.fixture(scope="module")
def parad(site: WebServer, tmp_path_factory: pytest.TempPathFactory, make_daemon: Callable[..., Daemon]) -> Iterator[Daemon]:
    policy = {**LOCAL, "deny": ["denied.test"]}
    d = make_daemon({"daemon": FAST, "pools": {"fetch": {"options": {"policy": policy}}}}, tmp_path_factory.mktemp("fetch"))
    yield d
    stop_and_check(d)


def test_fetch_through_parad_follows_redirects_extracts_pages_and_caches(parad: Daemon, site: WebServer) -> None:
    with parad.client(timeout=60) as c:
        first = c.run("fetch", url=site.url("/go-wiki", host="a.test"), max_length=400).value
        second = c.run("fetch", url=site.url("/go-wiki", host="a.test"), max_length=400, start_index=400).value
        pools = {p["name"]: p for p in c.status()["pools"]}
        tools = {t["name"]: t for t in c.tools()}
    assert (first["status"], first["final_url"], first["redirects"]) == (200, site.url("/wiki", host="a.test"),
                                                                         [site.url("/wiki", host="a.test")])
    assert first["content"].startswith("# t-distributed stochastic neighbor embedding")
    assert (first["start_index"], first["next_start_index"], second["next_start_index"]) == (0, 400, 800)
    assert first["length"] == second["length"] > 5000 and len(second["content"]) == 400
    assert (first["cached"], second["cached"]) == ("fetched", "cache")
    assert site.count("/wiki") == 1 and site.count("/go-wiki") == 2    # the redirect said nothing of caching
    assert (pools["fetch"]["max_workers"], tools["fetch"]["read_only"]) == (1, True)


@pytest.mark.skipif(not HOST.namespaces, reason=f"no namespace isolation here: {HOST.namespaces_error}")
def test_the_fetch_worker_lives_in_a_read_only_sandbox_with_the_network(parad: Daemon, site: WebServer,
                                                                         tmp_path: Path) -> None:
    # It runs no command, but it parses what any page sends: a bug there must not reach the host's
    # files nor hold a capability. It still reaches the web (the test server) through the host's network.
    (tmp_path / "host-only").write_text("not for the worker\n")
    with parad.client(timeout=60) as c:
        assert c.run("fetch", url=site.url("/sandboxed", host="a.test")).value["content"].strip() == "sandboxed"
        isolation = c.status()["sandbox"]["pools"]["fetch"]
    (worker,) = parad.workers("fetch")
    status = {k: v.strip() for k, _, v in (line.partition(":") for line in
                                           Path(f"/proc/{worker['pid']}/status").read_text().splitlines())}
    mounts = {fields[4]: fields[5].split(",") for fields in
              (line.split() for line in Path(f"/proc/{worker['pid']}/mountinfo").read_text().splitlines())}
    assert (isolation["effective"], isolation["limits"], isolation["degraded"]) == ("namespaces", "web tool", [])
    assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0, status
    assert "ro" in mounts["/"], mounts["/"]
    assert not Path(f"/proc/{worker['pid']}/root{tmp_path}").exists()   # its /tmp is its own


@pytest.mark.skipif(not HOST.namespaces, reason=f"no namespace isolation here: {HOST.namespaces_error}")
def test_the_fetch_worker_keeps_the_hosts_ca_settings_and_no_other_variable(start_daemon) -> None:
    # Its sandbox's environment is an allow-list: OpenSSL's CA bundle settings pass (a host's own CA),
    # the rest of parad's environment does not.
    env = {**os.environ, "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt", "SSL_CERT_DIR": "/etc/ssl/certs",
           "PARA_TEST_UNRELATED": "kept out"}
    d = start_daemon(pools={"fetch": {"min_workers": 1}}, env=env)
    wait_until(lambda: len(d.workers("fetch")) == 1, 30, "the fetch worker to start")
    (worker,) = d.workers("fetch")
    environ = dict(entry.split("=", 1) for entry in
                   Path(f"/proc/{worker['pid']}/environ").read_bytes().decode().split("\0") if "=" in entry)
    assert environ.get("SSL_CERT_FILE") == "/etc/ssl/certs/ca-certificates.crt"
    assert environ.get("SSL_CERT_DIR") == "/etc/ssl/certs"
    assert "PARA_TEST_UNRELATED" not in environ


@pytest.mark.skipif(os.geteuid() != 0, reason="what a root parad reports of an unsandboxed fetch worker")
def test_a_root_fetch_worker_without_its_sandbox_is_reported_degraded(start_daemon) -> None:
    d = start_daemon(pools={"fetch": {"options": {"sandbox": {"isolation": "none"}}}})
    with d.client() as c:
        isolation = c.status()["sandbox"]["pools"]["fetch"]
    assert isolation["effective"] == "none"
    assert isolation["degraded"] == ["the worker runs as root, with every capability, outside any sandbox"]


def test_a_redirect_to_the_metadata_address_fails_naming_the_rule(parad: Daemon, site: WebServer) -> None:
    with parad.client(timeout=60) as c:
        with pytest.raises(TaskError) as info:
            c.run("fetch", url=site.url("/metadata", host="a.test"))
    assert info.value.result.error == (
        "refused by the web policy: 169.254.169.254 resolves to 169.254.169.254, a link-local (cloud metadata "
        "lives here) address, which is refused (allow it with allow_private: [169.254.169.254/32])")


def test_a_denied_host_is_refused_at_submission(parad: Daemon) -> None:
    with parad.client(timeout=60) as c:
        with pytest.raises(InvalidRequest, match=r"fetch: refused by the web policy: denied.test is denied by the deny rule 'denied.test'"):
            c.submit("fetch", url="http://denied.test/x")
        with pytest.raises(InvalidRequest, match="only http and https are fetched"):
            c.submit("fetch", url="file:///etc/passwd")
        with pytest.raises(InvalidRequest, match="header 'Host' may not be set by a task"):
            c.submit("fetch", url="http://a.test/", headers={"Host": "elsewhere"})


def fetch_worker(c: Any) -> str:
    return next(w["id"] for w in c.workers() if w["pool"] == "fetch")


def test_a_page_of_unclosed_title_tags_does_not_stall_the_worker(parad: Daemon, site: WebServer) -> None:
    # 28000 '<title>' and no '</title>': a title search rescanning the page from each opener holds
    # the GIL for tens of seconds, no heartbeat goes out, and parad kills the pool's only worker.
    site.page("/titles", "<html><body><p>first words</p>" + "<title>" * 28000)
    with parad.client(timeout=120) as c:
        worker = fetch_worker(c)
        page = c.run("fetch", url=site.url("/titles"), max_length=100).value
        assert (page["status"], page["title"]) == (200, None) and "first words" in page["content"]
        assert fetch_worker(c) == worker


def test_an_extraction_past_its_deadline_is_killed_and_the_worker_serves_on(
        site: WebServer, tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    # 5 MiB of sibling links: trafilatura's markdown pass spends a minute in lxml calls that hold
    # the GIL; in a thread of the worker that stopped its heartbeats and parad killed it as hung.
    site.page("/index", "<html><body><article>" + '<a href="/x">link text here</a> ' * 150_000 + "</article></body></html>")
    site.page("/small", "<p>small</p>")
    options = {"policy": LOCAL, "extract_timeout": 1, "extract_processes": 1}
    d = make_daemon({"daemon": FAST, "pools": {"fetch": {"options": options}}}, tmp_path)
    try:
        with d.client(timeout=120) as c:
            worker = fetch_worker(c)
            with pytest.raises(TaskError) as info:
                c.run("fetch", url=site.url("/index"))
            assert info.value.result.error == (f"extracting {site.url('/index')} as markdown took more than 1s "
                                               f"(extract_timeout); ask for format raw, or raise the pool's extract_timeout")
            assert c.run("fetch", url=site.url("/index"), format="raw", max_length=21).value["content"] == "<html><body><article>"
            assert c.run("fetch", url=site.url("/small")).value["content"] == "small"   # a new extraction process
            assert fetch_worker(c) == worker
    finally:
        stop_and_check(d)


def test_identical_fetches_from_many_tasks_make_one_request(parad: Daemon, site: WebServer) -> None:
    n = 8
    site.hold("/once")
    with parad.client(timeout=60) as c:
        futures = [c.submit("fetch", url=site.url("/once")) for _ in range(n)]
        wait_until(lambda: site.count("/once") == 1, 30, "the first fetch at the server")
        wait_running(c, count=n, tool="fetch")
        # The worker takes tasks in order: once the marker's request arrives, all n have joined the first.
        marker = c.submit("fetch", url=site.url("/marker"))
        wait_until(lambda: site.count("/marker") == 1, 30, "the marker fetch at the server")
        site.release("/once")
        results = [f.result(timeout=60).value for f in futures]
        marker.result(timeout=60)
    assert [r["content"] for r in results] == ["shared"] * n
    assert sorted(r["cached"] for r in results) == ["fetched"] + ["shared"] * (n - 1)
    assert site.count("/once") == 1
