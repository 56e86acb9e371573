"""para-mcp over streamable HTTP admits only requests with its bearer token, with a real parad.

Any user of the host can reach a loopback port; the token is what keeps them from
running commands as the user who runs para-mcp. Requests are plain HTTP (httpx2),
so that a refused one is seen as the server answered it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from para.testing import FAST, Daemon, paractl_argv, stop_and_check, wait_until

URL = re.compile(r"serving MCP at (http://\S+)")
TOKEN_FILE = re.compile(r"TOKEN being the contents of (\S+)")
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def parad(tmp_path_factory: pytest.TempPathFactory, make_daemon: Callable[..., Daemon]) -> Iterator[Daemon]:
    d = make_daemon({"daemon": FAST, "pools": {"bash": {"min_workers": 1, "max_workers": 1}}},
                    tmp_path_factory.mktemp("mcp-auth-parad"))
    yield d
    stop_and_check(d)


def argv(parad: Daemon, *extra: str) -> list[str]:
    return paractl_argv("--runtime-dir", str(parad.runtime_dir), "--no-autostart", "mcp", "--http", "127.0.0.1:0", *extra)


@contextlib.contextmanager
def http_server(parad: Daemon, tmp: Path, *extra: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, Path]]:
    """A `paractl mcp --http` started in tmp/ws: its URL and stderr log; stopped (exit 0) on leaving."""
    (tmp / "ws").mkdir(parents=True)
    log = tmp / "para-mcp.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv(parad, *extra), cwd=tmp / "ws", stdin=subprocess.DEVNULL, stderr=out,
                                env={**os.environ, **(env or {})})
    try:
        found = wait_until(lambda: URL.search(log.read_text()) or proc.poll() is not None, 30, "para-mcp to listen")
        assert proc.poll() is None, f"paractl mcp exited {proc.returncode}: {log.read_text()}"
        yield found.group(1), log
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0 and "Traceback" not in log.read_text(), log.read_text()


def generated_file(log: Path) -> Path:
    return Path(TOKEN_FILE.search(log.read_text()).group(1))


def post(url: str, message: dict[str, Any], token: str | None, session: str | None = None) -> httpx2.Response:
    headers = {**HEADERS, **({"Authorization": f"Bearer {token}"} if token else {}),
               **({"Mcp-Session-Id": session} if session else {})}
    return httpx2.post(url, json={"jsonrpc": "2.0", **message}, headers=headers, timeout=60)


def session_of(url: str, token: str) -> str:
    """An initialized MCP session's id."""
    init = post(url, {"id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}}}, token)
    assert init.status_code == 200, init.text
    session = init.headers["mcp-session-id"]
    post(url, {"method": "notifications/initialized"}, token, session)
    return session


def test_a_request_without_the_token_or_with_a_wrong_one_gets_401_and_runs_nothing(parad: Daemon,
                                                                                   tmp_path: Path) -> None:
    with http_server(parad, tmp_path) as (url, log):
        token_file = generated_file(log)
        token = token_file.read_text().strip()
        session = session_of(url, token)
        marker = tmp_path / "ws" / "ran"
        call = {"id": 2, "method": "tools/call", "params": {"name": "bash", "arguments": {"command": "touch ran"}}}
        for wrong in (None, "x" * len(token), token[:-1]):
            refused = post(url, call, wrong, session)
            assert refused.status_code == 401, f"{refused.status_code}: {refused.text}"
            assert "Authorization: Bearer" in refused.text and str(token_file) in refused.text, refused.text
            assert refused.headers["www-authenticate"].startswith("Bearer")
        assert not marker.exists(), "a request without the token ran a command"
        assert post(url, call, token, session).status_code == 200   # the same call with it runs
        wait_until(marker.exists, 30, "the call with the token to run")
        assert token not in log.read_text(), "the token was logged"


def test_the_generated_token_file_is_the_users_alone_and_gone_after_exit(parad: Daemon, tmp_path: Path) -> None:
    with http_server(parad, tmp_path) as (url, log):
        token_file = generated_file(log)
        assert token_file.parent == parad.runtime_dir and token_file.name == f"mcp-token-{url.split(':')[2].split('/')[0]}"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert not token_file.exists()


def test_a_token_file_others_may_read_is_refused(parad: Daemon, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("a-token-long-enough-to-pass\n")
    token_file.chmod(0o644)
    out = subprocess.run(argv(parad, "--token-file", str(token_file)), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert f"--token-file {token_file}: other users may read" in out.stderr and "chmod 600" in out.stderr, out.stderr
    assert "a-token" not in out.stderr


def test_a_token_file_or_variable_gives_the_token_and_tasks_do_not_see_the_variable(parad: Daemon,
                                                                                    tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-the-file-0123456789\n")
    token_file.chmod(0o600)
    with http_server(parad, tmp_path / "file", "--token-file", str(token_file)) as (url, log):
        assert post(url, {"id": 1, "method": "ping"}, "wrong-token-0123456789").status_code == 401
        session_of(url, "from-the-file-0123456789")
        assert not TOKEN_FILE.search(log.read_text())   # none generated
    with http_server(parad, tmp_path / "env", env={"PARA_MCP_TOKEN": "from-the-env-0123456789"}) as (url, _):
        session = session_of(url, "from-the-env-0123456789")
        call = {"id": 2, "method": "tools/call", "params": {"name": "bash", "arguments": {
            "command": "echo token=${PARA_MCP_TOKEN:-unset}"}}}
        answer = post(url, call, "from-the-env-0123456789", session)
        assert "token=unset" in answer.text, answer.text
