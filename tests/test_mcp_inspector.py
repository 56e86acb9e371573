"""para-mcp against a second, independent MCP client: the MCP Inspector's command-line mode
(Node, from npm; `.ci/run` installs it), over stdio and over streamable HTTP, with a real parad.

The inspector runs one method per invocation and prints the answer as JSON; its `--strict`
tools/list reports tool schemas that other clients may not take (exit 6 on an error).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from para.testing import FAST, Daemon, paractl_argv, stop_and_check, wait_until
from para.testing.inspector import Inspector, inspector

POOLS = {"echo": {"min_workers": 1, "max_workers": 1}, "bash": {"min_workers": 1, "max_workers": 2},
         **{tool: {"min_workers": 1, "max_workers": 1} for tool in ("read", "grep", "glob")}}
URL = re.compile(r"serving MCP at (http://\S+)")
INSPECTOR_TIMEOUT = 120   # seconds for one inspector run: Node's start and the call
TOOL_ERROR = 5            # the inspector's exit code for a call answered with isError


@pytest.fixture(scope="module")
def cli() -> Inspector:
    found = inspector()
    if isinstance(found, str):
        pytest.skip(found)
    return found


@pytest.fixture(scope="module")
def parad(tmp_path_factory: pytest.TempPathFactory, make_daemon: Callable[..., Daemon]) -> Iterator[Daemon]:
    d = make_daemon({"daemon": FAST, "pools": POOLS}, tmp_path_factory.mktemp("inspector-parad"))
    yield d
    stop_and_check(d)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("inspector-ws")
    (ws / "notes.txt").write_text("alpha\nneedle here\nomega\n")
    return ws


def stdio_target(parad: Daemon, workspace: Path) -> list[str]:
    return [sys.executable, "-m", "para.mcp_server.main", "--runtime-dir", str(parad.runtime_dir), "--no-autostart",
            "--cwd", str(workspace)]


@pytest.fixture(scope="module")
def http_url(parad: Daemon, workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A `paractl mcp --http` on a free loopback port, started in `workspace`."""
    log = tmp_path_factory.mktemp("inspector-http") / "para-mcp.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(paractl_argv("--runtime-dir", str(parad.runtime_dir), "--no-autostart", "mcp", "--http",
                                             "127.0.0.1:0"), cwd=workspace, stdin=subprocess.DEVNULL, stderr=out)
    try:
        found = wait_until(lambda: URL.search(log.read_text()) or proc.poll() is not None, 30, "para-mcp to listen")
        assert proc.poll() is None, f"paractl mcp exited {proc.returncode}: {log.read_text()}"
        yield found.group(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0 and "Traceback" not in log.read_text(), log.read_text()


def run(cli: Inspector, target: list[str], tmp: Path, *args: str, expect: int = 0) -> Any:
    """One inspector invocation against `target` (a command, or [URL]); its JSON answer."""
    env = dict(cli.env, HOME=str(tmp), MCP_CATALOG_PATH=str(tmp / "catalog.json"))   # it writes a catalog and storage: not in ~
    proc = subprocess.run([*cli.argv, *target, *args], capture_output=True, text=True, env=env, cwd=tmp,
                          timeout=INSPECTOR_TIMEOUT, stdin=subprocess.DEVNULL)
    assert proc.returncode == expect, f"inspector exited {proc.returncode}: {proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout)


def call(cli: Inspector, target: list[str], tmp: Path, tool: str, expect: int = 0, **args: Any) -> dict[str, Any]:
    pairs = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in args.items()]
    return run(cli, target, tmp, "--method", "tools/call", "--tool-name", tool, *(["--tool-arg", *pairs] if pairs else []),
               expect=expect)


def test_it_lists_every_tool_with_schemas_it_takes_as_portable(cli: Inspector, parad: Daemon, workspace: Path,
                                                                tmp_path: Path) -> None:
    listed = run(cli, stdio_target(parad, workspace), tmp_path, "--method", "tools/list", "--strict")
    tools = {t["name"]: t for t in listed["tools"]}
    assert {"bash", "grep", "glob", "read", "echo", "batch", "task_output", "task_cancel", "task_list"} <= set(tools)
    for name in ("grep", "glob", "read"):
        assert tools[name]["annotations"]["readOnlyHint"] is True, tools[name]
    assert "readOnlyHint" not in tools["bash"].get("annotations", {}) or not tools["bash"]["annotations"]["readOnlyHint"]
    pattern = tools["grep"]["inputSchema"]["properties"]["pattern"]
    assert pattern["type"] == "string" and pattern["description"]


def test_a_command_over_stdio(cli: Inspector, parad: Daemon, workspace: Path, tmp_path: Path) -> None:
    answer = call(cli, stdio_target(parad, workspace), tmp_path, "bash", command="pwd; echo from-inspector; exit 3")
    result = answer["structuredContent"]
    assert result["exit_code"] == 3 and result["stdout"] == f"{workspace}\nfrom-inspector\n", result


def test_a_search_over_http(cli: Inspector, http_url: str, tmp_path: Path) -> None:
    answer = call(cli, [http_url], tmp_path, "grep", pattern="needle", path=".")
    assert answer["isError"] is False, answer
    assert "notes.txt" in json.dumps(answer["structuredContent"]) and "needle here" in json.dumps(answer["structuredContent"])


def test_a_policy_breach_is_a_tool_error_over_http(cli: Inspector, http_url: str, tmp_path: Path) -> None:
    answer = call(cli, [http_url], tmp_path, "bash", TOOL_ERROR, command="touch /etc/x", policy={"writable": ["/etc"]})
    text = " ".join(c.get("text", "") for c in answer["content"])
    assert answer["isError"] is True and "policy.writable" in text and "Traceback" not in text, answer
