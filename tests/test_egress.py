"""The egress allow-list: sandboxed commands reach the web only through para's proxy, under policy.

A real parad and real bubblewrap; the "web" is an HTTP server the test runs
on 127.0.0.1, whose test names the proxy pins there (`egress.hosts`, with
`allow_private` for loopback). curl inside the sandbox finds the proxy in
HTTP_PROXY, as any program that honours it does.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from para.client import InvalidRequest
from para.ipc import egress
from para.sandbox.probe import probe
from para.testing import Daemon, bwrap_closed_to_run_as, stop_and_check, wait_until

HOST = probe()
pytestmark = [
    pytest.mark.skipif(not HOST.namespaces, reason=f"no namespace isolation here: {HOST.namespaces_error}"),
    pytest.mark.skipif(shutil.which("curl") is None, reason="no curl on this host to run inside the sandbox"),
]
NAMES = ("allowed.test", "other.test", "refused.test")


class Web(ThreadingHTTPServer):
    """An HTTP server on 127.0.0.1 that answers every GET with the Host it was asked for, and counts them."""
    daemon_threads = True

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []   # (Host header, path as received)
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def port(self) -> int:
        return self.server_address[1]


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        host = self.headers.get("Host", "")
        self.server.requests.append((host, self.path))
        body = f"hello from {host.split(':')[0]}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def web() -> Iterator[Web]:
    server = Web()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


class Holder:
    """A TCP server on 127.0.0.1 that accepts connections and holds them, never reading nor closing."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                self.conns.append(self.sock.accept()[0])
            except TimeoutError:
                pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for conn in [self.sock, *self.conns]:
            conn.close()


@pytest.fixture
def holder() -> Iterator[Holder]:
    server = Holder()
    yield server
    server.close()


def egress_pool(allow: list[str], **sandbox: object) -> dict:
    """A bash pool whose network is `allow`, every test name pinned to 127.0.0.1 (and loopback allowed)."""
    egress = {"hosts": {name: "127.0.0.1" for name in NAMES}, "allow_private": ["127.0.0.1/32"]}
    return {"bash": {"min_workers": 1, "max_workers": 1,
                     "options": {"sandbox": {"network": allow, "egress": egress, **sandbox}}}}


def raw(request: str, times: int = 1) -> str:
    """A bash command that sends `request` (printf escapes) to its proxy port `times` times, printing the answers."""
    return (f"for i in $(seq {times}); do exec 3<>/dev/tcp/127.0.0.1/${{HTTP_PROXY##*:}}; "
            f"printf '{request}' >&3; timeout 20 cat <&3; exec 3<&-; done")


def curl(url: str, *flags: str) -> str:
    # -s: no progress; -S: errors still said; -i: the answer's headers too (the refusal's rule is in one).
    return f"curl -sS -i --max-time 20 {' '.join(flags)} {url}"


def test_a_command_reaches_an_allowed_name_through_the_proxy_and_is_refused_another(start_daemon, web) -> None:
    d = start_daemon(pools=egress_pool(["allowed.test", "other.test"]))
    with d.client() as c:
        plain = c.run("bash", command=curl(f"http://allowed.test:{web.port}/plain"), timeout=60)
        # -p: through a CONNECT tunnel, as HTTPS goes (the server behind it speaks plain HTTP).
        tunnel = c.run("bash", command=curl(f"http://other.test:{web.port}/tunnel", "-p"), timeout=60)
        refused = c.run("bash", command=curl(f"http://refused.test:{web.port}/no") + "; "
                        + curl(f"http://refused.test:{web.port}/no-tunnel", "-p"), timeout=60)
        direct = c.run("bash", command=curl(f"http://127.0.0.1:{web.port}/direct", "--noproxy '*'"), timeout=60)
        env = c.run("bash", command="echo $HTTP_PROXY $HTTPS_PROXY ${NO_PROXY-unset}", env={"NO_PROXY": "*"})
    assert plain.ok and plain.stdout.endswith("hello from allowed.test\n"), plain
    assert tunnel.ok and "200 Connection established" in tunnel.stdout and tunnel.stdout.endswith("hello from other.test\n"), tunnel
    # The origin got an origin-form request through the proxy, and the tunnelled one as curl sent it.
    assert ("allowed.test:%d" % web.port, "/plain") in web.requests and ("other.test:%d" % web.port, "/tunnel") in web.requests
    rule = "refused.test is not in the allow list (allowed.test, other.test)"
    assert refused.stdout.count("HTTP/1.1 403 Forbidden") == 2 and refused.stdout.count(f"X-Para-Refused: {rule}") == 2, refused
    assert f"refused: {rule}" in refused.stdout
    assert refused.network_refused == [{"host": "refused.test", "port": web.port, "rule": rule}] * 2
    assert plain.network_refused == [] and tunnel.network_refused == []
    assert not any(path.startswith(("/no", "/direct")) for _, path in web.requests), web.requests
    # Its own network namespace: the host's 127.0.0.1 is not there.
    assert not direct.ok and "HTTP/" not in direct.stdout, direct
    url = env.stdout.split()[0]
    assert url.startswith("http://127.0.0.1:") and env.stdout == f"{url} {url} unset\n", env


def test_the_origin_is_asked_for_the_name_the_proxy_checked(start_daemon, web) -> None:
    # A Host header that differs from the URL would let an allowed name's address (a CDN's, a
    # shared host's) serve any other name: the proxy sends the checked URL's authority instead.
    d = start_daemon(pools=egress_pool(["allowed.test"]))
    with d.client() as c:
        r = c.run("bash", command=curl(f"http://allowed.test:{web.port}/fronted", "-H 'Host: refused.test'"), timeout=60)
    assert r.ok and r.stdout.endswith("hello from allowed.test\n"), r
    assert [host for host, path in web.requests if path == "/fronted"] == [f"allowed.test:{web.port}"], web.requests


def test_what_a_task_was_refused_is_bounded_and_reported(start_daemon) -> None:
    # Host names of 60 kB once made the proxy's report longer than the relay reads, and the
    # result said nothing was refused (None): each entry is cut, and there are at most 100.
    d = start_daemon(pools=egress_pool(["allowed.test"]))
    long_name = "a" * 60_000
    with d.client() as c:
        r = c.run("bash", command=raw(f"CONNECT {long_name}.test:443 HTTP/1.1\\r\\n\\r\\n", 150) + " | grep -c 403",
                  timeout=300)
    assert r.stdout == "150\n", r.stdout[-300:]
    assert r.network_refused is not None and len(r.network_refused) == egress.MAX_REFUSALS, r.network_refused
    first = r.network_refused[0]
    assert first["host"] == long_name[:egress.MAX_HOST - 1] + "…" and first["port"] == 443, first
    assert first["rule"].startswith(long_name[:100]) and len(first["rule"]) == egress.MAX_RULE, first


def test_a_tunnel_ends_with_its_task(start_daemon, holder) -> None:
    # The command is gone, but its tunnel was only half closed: an origin that keeps its side
    # open held the proxy's connections (and the relay's) for good, task after task.
    d = start_daemon(pools=egress_pool(["allowed.test"]))
    [proxy] = [p for p in d.tree() if "para.web.egress_proxy" in " ".join(p.cmdline())]
    idle_fds = proxy.num_fds()
    tunnel = (f"exec 3<>/dev/tcp/127.0.0.1/${{HTTP_PROXY##*:}}; "
              f"printf 'CONNECT allowed.test:{holder.port} HTTP/1.1\\r\\n\\r\\n' >&3; read -r answer <&3; echo $answer")
    with d.client() as c:
        r = c.run("bash", command=tunnel, timeout=60)
    assert r.stdout.startswith("HTTP/1.1 200 Connection established") and len(holder.conns) == 1, r
    wait_until(lambda: not [x for x in proxy.net_connections("tcp") if x.raddr and x.raddr.port == holder.port],
               30, "the proxy to close the tunnel its ended task left")
    wait_until(lambda: proxy.num_fds() == idle_fds, 30, "the proxy to hold no connection of the ended task")


def test_a_task_narrows_the_list_and_cannot_widen_it(start_daemon, web) -> None:
    d = start_daemon(pools=egress_pool(["allowed.test", "other.test"]))
    with d.client() as c:
        narrowed = c.run("bash", command=curl(f"http://allowed.test:{web.port}/a") + "; "
                         + curl(f"http://other.test:{web.port}/b"), policy={"network": ["allowed.test"]}, timeout=60)
        with pytest.raises(InvalidRequest, match="'refused.test' is not within the pool's allow list"):
            c.run("bash", command="true", policy={"network": ["allowed.test", "refused.test"]})
        with pytest.raises(InvalidRequest, match="network true is refused: the pool's network is the allow-list"):
            c.run("bash", command="true", policy={"network": True})
        with pytest.raises(InvalidRequest, match="allows nothing"):
            c.run("bash", command="true", policy={"network": []})
        whole = c.run("bash", command=curl(f"http://other.test:{web.port}/c"), timeout=60)
    assert "hello from allowed.test" in narrowed.stdout and "hello from other.test" not in narrowed.stdout, narrowed
    rule = "other.test is not in the allow list (allowed.test)"
    assert narrowed.network_refused == [{"host": "other.test", "port": web.port, "rule": rule}], narrowed
    # The narrowing was that task's: the pool's list holds for the next.
    assert whole.ok and whole.stdout.endswith("hello from other.test\n"), whole


def test_a_task_may_turn_the_list_off(start_daemon, web) -> None:
    # As root, a nested sandbox needs commands run as a user (bash.py): nobody, in /.
    if why := bwrap_closed_to_run_as():
        pytest.skip(why)
    d = start_daemon(pools=egress_pool(["allowed.test"], run_as="nobody" if os.geteuid() == 0 else None))
    with d.client() as c:
        off = c.run("bash", command=curl(f"http://allowed.test:{web.port}/off"), policy={"network": False}, timeout=60, cwd="/")
    assert not off.ok and "hello" not in off.stdout and off.network_refused is None, off


def test_the_proxy_is_parads_child_and_leaves_nothing(make_daemon, tmp_path: Path, web) -> None:
    d: Daemon = make_daemon({"daemon": {"heartbeat_interval": 0.1, "log_level": "debug"},
                             "pools": egress_pool(["allowed.test"])}, tmp_path)
    try:
        proxies = [p for p in d.tree() if "para.web.egress_proxy" in " ".join(p.cmdline())]
        assert len(proxies) == 1
        [sock] = (d.runtime_dir / "egress").glob("*.sock")
        with d.client() as c:
            assert c.run("bash", command=curl(f"http://allowed.test:{web.port}/x"), timeout=60).ok
            # Commands cannot see the proxy's socket: only their port, which writes the opening line itself.
            hidden = c.run("bash", command=f"test -e {sock} || echo hidden")
        assert hidden.stdout == "hidden\n", hidden
        # And a line that asks for more than the socket's policy (as no worker sends) is refused.
        assert "is not within the pool's allow list" in ask_proxy(sock, ["refused.test"], f"http://refused.test:{web.port}/")
    finally:
        stop_and_check(d)   # no socket file, no process (the proxy among them) outlives parad
    assert not proxies[0].is_running()


def ask_proxy(sock: Path, allow: list[str], url: str) -> str:
    """One request straight to the proxy's socket, opened by the line a worker's relay sends."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(str(sock))
        s.sendall(egress.connect_line("t-direct", allow) + f"GET {url} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return answer.decode()


def test_no_proxy_without_an_allow_list(start_daemon) -> None:
    d = start_daemon(pools={"bash": {"min_workers": 1, "max_workers": 1, "options": {"sandbox": {"network": False}}}})
    wait_until(lambda: d.tree(), 10, "parad's children")
    assert not any("para.web.egress_proxy" in " ".join(p.cmdline()) for p in d.tree())
    assert not (d.runtime_dir / "egress").exists()
    with d.client() as c:
        r = c.run("bash", command="echo ${HTTP_PROXY-none}")
    assert r.stdout == "none\n" and r.network_refused is None
