"""para-mcp against a second, independent MCP client: the MCP Inspector's command-line mode
(Node, from npm; `.ci/run` installs it), over stdio and over streamable HTTP, with a real parad.

The inspector runs one method per invocation and prints the answer as JSON; its `--strict`
tools/list reports tool schemas that other clients may not take (exit 6 on an error).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from para.testing import Daemon, paractl_argv, wait_running, wait_until
from para.testing.inspector import Inspector, inspector

URL = re.compile(r"serving MCP at (http://\S+)")
TOKEN_FILE = re.compile(r"TOKEN being the contents of (\S+)")
INSPECTOR_TIMEOUT = 120   # seconds for one inspector run: Node's start and the call
TOOL_ERROR = 5            # the inspector's exit code for a call answered with isError


@pytest.fixture(scope="module")
def cli() -> Inspector:
    found = inspector()
    if isinstance(found, str):
        pytest.skip(found)
    return found


@pytest.fixture(scope="module")
def parad(mcp_parad: Daemon) -> Daemon:
    return mcp_parad


@pytest.fixture(scope="module")
def workspace(mcp_workspace: Path) -> Path:
    return mcp_workspace


def stdio_target(parad: Daemon, workspace: Path) -> list[str]:
    return [sys.executable, "-m", "para.mcp_server.main", "--runtime-dir", str(parad.runtime_dir), "--no-autostart",
            "--cwd", str(workspace)]


@pytest.fixture(scope="module")
def http_target(parad: Daemon, workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """A `paractl mcp --http` on a free loopback port, started in `workspace`: its URL and the header
    with the token it generated, as the inspector takes them."""
    log = tmp_path_factory.mktemp("inspector-http") / "para-mcp.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(paractl_argv("--runtime-dir", str(parad.runtime_dir), "--no-autostart", "mcp", "--http",
                                             "127.0.0.1:0"), cwd=workspace, stdin=subprocess.DEVNULL, stderr=out)
    try:
        found = wait_until(lambda: URL.search(log.read_text()) or proc.poll() is not None, 30, "para-mcp to listen")
        assert proc.poll() is None, f"paractl mcp exited {proc.returncode}: {log.read_text()}"
        token = Path(TOKEN_FILE.search(log.read_text()).group(1)).read_text().strip()
        yield [found.group(1), "--header", f"Authorization: Bearer {token}"]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0 and "Traceback" not in log.read_text(), log.read_text()


def start(cli: Inspector, target: list[str], tmp: Path, *args: str) -> subprocess.Popen:
    """One inspector invocation against `target` (a command, or [URL]), running."""
    tmp.mkdir(parents=True, exist_ok=True)
    env = dict(cli.env, HOME=str(tmp), MCP_CATALOG_PATH=str(tmp / "catalog.json"))   # it writes a catalog and storage: not in ~
    return subprocess.Popen([*cli.argv, *target, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=tmp, stdin=subprocess.DEVNULL)


def answer(proc: subprocess.Popen, expect: int = 0) -> Any:
    """A started invocation's JSON answer, once it exits with `expect`."""
    try:
        out, err = proc.communicate(timeout=INSPECTOR_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == expect, f"inspector exited {proc.returncode}: {out}\n{err}"
    return json.loads(out)


def run(cli: Inspector, target: list[str], tmp: Path, *args: str, expect: int = 0) -> Any:
    return answer(start(cli, target, tmp, *args), expect)


def tool_args(tool: str, args: dict[str, Any]) -> list[str]:
    pairs = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in args.items()]
    return ["--method", "tools/call", "--tool-name", tool, *(["--tool-arg", *pairs] if pairs else [])]


def call(cli: Inspector, target: list[str], tmp: Path, tool: str, expect: int = 0, **args: Any) -> dict[str, Any]:
    return run(cli, target, tmp, *tool_args(tool, args), expect=expect)


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


def test_a_search_over_http(cli: Inspector, http_target: list[str], tmp_path: Path) -> None:
    answer = call(cli, http_target, tmp_path, "grep", pattern="needle", path=".")
    assert answer["isError"] is False, answer
    assert "notes.txt" in json.dumps(answer["structuredContent"]) and "needle here" in json.dumps(answer["structuredContent"])


def test_a_policy_breach_is_a_tool_error_over_http(cli: Inspector, http_target: list[str], tmp_path: Path) -> None:
    answer = call(cli, http_target, tmp_path, "bash", TOOL_ERROR, command="touch /etc/x", policy={"writable": ["/etc"]})
    text = " ".join(c.get("text", "") for c in answer["content"])
    assert answer["isError"] is True and "policy.writable" in text and "Traceback" not in text, answer


def test_twenty_searches_and_reads_from_twenty_clients_run_at_once(cli: Inspector, parad: Daemon, http_target: list[str],
                                                                    tmp_path: Path) -> None:
    """The read and grep workers are stopped until all 20 calls are in parad, so none can finish
    before the last one starts: a server that took calls one at a time would never get there."""
    calls = [("grep", {"pattern": "needle", "path": f"f{i}.txt"}) for i in range(10)]
    calls += [("read", {"path": f"f{i}.txt"}) for i in range(10)]
    stopped = [w["pid"] for w in parad.workers() if w["pool"] in ("read", "grep")]

    def in_parad() -> bool:
        with parad.client() as c:
            return len([t for t in c.ps() if t["tool"] in ("read", "grep")]) >= len(calls)

    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    procs: list[subprocess.Popen] = []
    try:
        procs = [start(cli, http_target, tmp_path / str(n), *tool_args(tool, args)) for n, (tool, args) in enumerate(calls)]
        wait_until(in_parad, 90, "20 calls to be in parad at once")
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        replies = [answer(p) for p in procs]
    for i in range(10):
        assert f"needle {i}" in json.dumps(replies[i]["structuredContent"])
        assert replies[10 + i]["content"][0]["text"] == f"line one\nneedle {i}"
    starts = [r["structuredContent"]["started"] for r in replies]
    ends = [r["structuredContent"]["finished"] for r in replies]
    assert max(starts) < min(ends), "every call started before any finished"


def test_a_long_command_is_a_handle_followed_to_its_end(cli: Inspector, http_target: list[str], workspace: Path,
                                                         tmp_path: Path) -> None:
    go = workspace / "go"
    handle = call(cli, http_target, tmp_path, "bash", command=f"echo waiting; while [ ! -e {go} ]; do sleep 0.05; done; echo went",
                  wait=0)["structuredContent"]
    assert handle["state"] == "running" and handle["task_id"], handle
    go.touch()
    try:
        output, offset, state = "", 0, "running"
        for _ in range(10):   # each call waits up to 20 s for more: bounded however slow the machine
            got = call(cli, http_target, tmp_path, "task_output", task_id=handle["task_id"], offset=offset,
                       wait=20)["structuredContent"]
            output, offset, state = output + got["output"], got["offset"], got["state"]
            if state != "running" and not got["more"]:
                break
    finally:
        go.unlink()
    assert state == "succeeded" and got["exit_code"] == 0 and output == "waiting\nwent\n", got


def test_task_cancel_ends_a_command(cli: Inspector, parad: Daemon, http_target: list[str], tmp_path: Path) -> None:
    handle = call(cli, http_target, tmp_path, "bash", command="sleep 300", wait=0)["structuredContent"]
    with parad.client() as c:
        wait_running(c, handle["task_id"])
    cancelled = call(cli, http_target, tmp_path, "task_cancel", task_id=handle["task_id"])["structuredContent"]
    assert cancelled["cancelled"] is True and cancelled["state"] == "cancelled", cancelled
    with parad.client() as c:
        assert c.task(handle["task_id"])["task"]["state"] == "cancelled"


def test_a_batch_with_a_dependency_over_stdio(cli: Inspector, parad: Daemon, workspace: Path, tmp_path: Path) -> None:
    tasks = [{"id": "first", "tool": "bash", "args": {"command": "echo hello"}},
             {"id": "second", "tool": "bash", "after": ["first"], "args": {"command": "echo ${first.stdout} world"}}]
    batch = call(cli, stdio_target(parad, workspace), tmp_path, "batch", tasks=tasks)["structuredContent"]
    assert batch["state"] == "done" and batch["ok"], batch
    assert batch["results"]["second"]["stdout"] == "hello world\n"
