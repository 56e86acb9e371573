"""para-mcp against the MCP SDK's own client, over stdio and over streamable HTTP, with a real parad.

The stdio server is `python -m para.mcp_server.main --cwd WORKSPACE` (para-mcp),
the HTTP one `paractl mcp --http 127.0.0.1:0` started in WORKSPACE: a folder of
their own, which is their tasks' working directory. Waits on the async side are bounded
by anyio.fail_after; waits on parad go through wait_until in a thread, so the
client's event loop keeps delivering messages meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import psutil
import pytest
from mcp import Client, StdioServerParameters
from mcp.client._transport import TransportStreams
from mcp.client.streamable_http import streamable_http_client

from para.mcp_server import results
from para.mcp_server.transports import MAX_LINE
from para.testing import Daemon, paractl_argv, wait_running, wait_until

URL = re.compile(r"serving MCP at (http://\S+)")
TOKEN_FILE = re.compile(r"TOKEN being the contents of (\S+)")
CALL_TIMEOUT = 60   # seconds a scenario may take at most (anyio.fail_after)


@pytest.fixture(scope="module")
def parad(mcp_parad: Daemon) -> Daemon:
    return mcp_parad


@pytest.fixture(scope="module")
def workspace(mcp_workspace: Path) -> Path:
    return mcp_workspace


def server_argv(parad: Daemon, *extra: str) -> list[str]:
    return [sys.executable, "-m", "para.mcp_server.main", "--runtime-dir", str(parad.runtime_dir), "--no-autostart", *extra]


def servers() -> list[psutil.Process]:
    """para-mcp processes this test process started (stdio servers are its children)."""
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "para.mcp_server.main" in p.cmdline():
                found.append(p)
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.fixture(params=["stdio", "http"])
def connect(request: pytest.FixtureRequest, parad: Daemon, workspace: Path, tmp_path: Path) -> Iterator[Callable[[], Client]]:
    """connect() -> an MCP SDK Client of a para-mcp started in `workspace`, over stdio or streamable HTTP."""
    if request.param == "stdio":   # started elsewhere, told its directory (as a client may need to)
        params = StdioServerParameters(command=sys.executable, args=server_argv(parad, "--cwd", str(workspace))[1:],
                                       cwd=str(tmp_path))
        yield lambda: Client(params)
        wait_until(lambda: not servers(), 20, "the stdio para-mcp to exit")
        return
    log = tmp_path / "para-mcp.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(paractl_argv("--runtime-dir", str(parad.runtime_dir), "--no-autostart", "mcp", "--http",
                                             "127.0.0.1:0"), cwd=workspace, stdin=subprocess.DEVNULL, stderr=out)
    try:
        found = wait_until(lambda: URL.search(log.read_text()) or proc.poll() is not None, 30, "para-mcp to listen")
        assert proc.poll() is None, f"paractl mcp exited {proc.returncode}: {log.read_text()}"
        url, token = found.group(1), token_of(log)
        yield lambda: Client(bearer(url, token))
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0 and "Traceback" not in log.read_text(), log.read_text()


def token_of(log: Path) -> str:
    """The token an HTTP para-mcp generated, from the file its stderr names."""
    return Path(TOKEN_FILE.search(log.read_text()).group(1)).read_text().strip()


@contextlib.asynccontextmanager
async def bearer(url: str, token: str | None) -> AsyncIterator[TransportStreams]:
    """The SDK's streamable HTTP transport, sending `Authorization: Bearer TOKEN` (none if None)."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            yield streams


def run(scenario: Callable[..., Any], *args: Any) -> Any:
    """Run an async scenario to its end, within CALL_TIMEOUT."""
    async def bounded() -> Any:
        with anyio.fail_after(CALL_TIMEOUT):
            return await scenario(*args)
    return anyio.run(bounded)


async def until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """wait_until in a thread: the event loop (the MCP session) goes on meanwhile."""
    return await anyio.to_thread.run_sync(lambda: wait_until(condition, timeout, what))


def state_in_parad(parad: Daemon, task_id: str) -> str:
    with parad.client() as c:
        return c.task(task_id)["task"]["state"]


def undescribed(schema: dict[str, Any], where: str = "") -> list[str]:
    """Fields of `schema`, at any depth, that have no description."""
    missing = []
    for name, prop in schema.get("properties", {}).items():
        path = f"{where}{name}"
        if not prop.get("description"):
            missing.append(path)
        for sub in [prop, prop.get("items", {}), *prop.get("anyOf", [])]:
            if isinstance(sub, dict) and sub is not schema:
                missing += undescribed(sub, path + ".")
    return missing


# ---- listing ---------------------------------------------------------------------------

def test_every_tool_is_listed_with_a_described_schema(connect: Callable[[], Client], parad: Daemon) -> None:
    async def scenario() -> dict[str, Any]:
        async with connect() as c:
            return {t.name: t for t in (await c.list_tools()).tools}
    tools = run(scenario)
    assert {"bash", "grep", "glob", "read", "echo", "task_output", "task_cancel", "task_list", "batch"} <= set(tools)
    for tool in tools.values():
        assert tool.description and tool.input_schema["type"] == "object", tool.name
        assert not undescribed(tool.input_schema), f"{tool.name}: fields without a description: {undescribed(tool.input_schema)}"
        assert "$ref" not in json.dumps(tool.input_schema), f"{tool.name}: $refs are inlined for clients that do not follow them"
    assert all(tools[name].annotations.read_only_hint is True for name in ("grep", "glob", "read"))
    assert tools["bash"].annotations.read_only_hint is False
    bash = tools["bash"].input_schema["properties"]
    assert {"command", "argv", "policy", "timeout", "wait"} <= set(bash) and not {"caller_env", "stdin_stream"} & set(bash)
    # The schemas are parad's own (generated from the argument models admission checks).
    with parad.client() as c:
        grep = next(t for t in c.tools() if t["name"] == "grep")["input_schema"]["properties"]
    assert tools["grep"].input_schema["properties"]["pattern"] == grep["pattern"]


# ---- parallel calls ---------------------------------------------------------------------

def test_twenty_grep_and_read_calls_run_at_once(connect: Callable[[], Client], parad: Daemon) -> None:
    """The read and grep workers are stopped while the calls come in, so none can finish before all
    20 are in parad: a server that ran calls one after another would never get there."""
    stopped = [w["pid"] for w in parad.workers() if w["pool"] in ("read", "grep")]
    calls = [("grep", {"pattern": "needle", "path": f"f{i}.txt"}) for i in range(10)]
    calls += [("read", {"path": f"f{i}.txt"}) for i in range(10)]

    def in_parad() -> bool:
        with parad.client() as c:
            return len([t for t in c.ps() if t["tool"] in ("read", "grep")]) >= len(calls)

    async def scenario() -> list[Any]:
        replies: list[Any] = [None] * len(calls)

        async def call(i: int) -> None:
            replies[i] = await c.call_tool(*calls[i])

        async with connect() as c, anyio.create_task_group() as tg:
            for i in range(len(calls)):
                tg.start_soon(call, i)
            try:
                await until(in_parad, 30, "20 calls to be in parad at once")
            finally:
                resume(stopped)
        return replies

    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        replies = run(scenario)
    finally:
        resume(stopped)
    assert not any(r.is_error for r in replies), [r.content[0].text for r in replies if r.is_error]
    for i in range(10):
        assert f"f{i}.txt:2:needle {i}" in replies[i].content[0].text
        assert replies[10 + i].content[0].text == f"line one\nneedle {i}"
    starts = [r.structured_content["started"] for r in replies]
    ends = [r.structured_content["finished"] for r in replies]
    assert max(starts) < min(ends), "every call started before any finished"


def resume(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


# ---- commands that outlive their call ----------------------------------------------------

def test_a_long_command_returns_a_handle_then_task_output_follows_it(connect: Callable[[], Client], tmp_path: Path) -> None:
    go = tmp_path / "go"
    command = f"echo started; while [ ! -e {go} ]; do sleep 0.05; done; echo finished"

    async def scenario() -> tuple[str, Any, Any]:
        progress = anyio.Event()
        messages: list[str] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            messages.append(message or "")
            progress.set()

        async with connect() as c:
            first = await c.call_tool("bash", {"command": command, "wait": 1.5}, progress_callback=on_progress)
            handle = first.structured_content
            assert not first.is_error and handle["state"] == "running", first.content[0].text
            await progress.wait()   # a notification came while it waited (at least one a second)
            assert handle["task_id"] in messages[0]
            output, offset, reply = handle["output"], handle["offset"], None
            while "started" not in output:
                reply = await c.call_tool("task_output", {"task_id": handle["task_id"], "offset": offset, "wait": 5})
                output, offset = output + reply.structured_content["output"], reply.structured_content["offset"]
            go.touch()
            while reply is None or reply.structured_content["state"] == "running" or reply.structured_content["more"]:
                reply = await c.call_tool("task_output", {"task_id": handle["task_id"], "offset": offset, "wait": 5})
                output, offset = output + reply.structured_content["output"], reply.structured_content["offset"]
            listed = await c.call_tool("task_list", {})
        return output, reply.structured_content, listed.structured_content["tasks"]

    output, last, listed = run(scenario)
    assert output == "started\nfinished\n"
    assert last["state"] == "succeeded" and last["exit_code"] == 0
    assert [t["command"] for t in listed if t["task_id"] == last["task_id"]] == [command]


def test_cancelling_a_call_cancels_its_task(connect: Callable[[], Client], parad: Daemon) -> None:
    async def scenario() -> str:
        seen: list[str] = []
        started = anyio.Event()

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            seen.append(message or "")
            started.set()

        async with connect() as c:
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: c.call_tool("bash", {"command": "sleep 300", "wait": 40}, progress_callback=on_progress))
                await started.wait()
                task_id = re.match(r"task (\S+):", seen[0]).group(1)
                with parad.client() as pc:
                    await anyio.to_thread.run_sync(lambda: wait_running(pc, task_id))
                tg.cancel_scope.cancel()   # the SDK sends notifications/cancelled
            await until(lambda: state_in_parad(parad, task_id) == "cancelled", 30, f"task {task_id} to be cancelled")
        return task_id

    run(scenario)


def test_task_cancel_ends_a_running_command(connect: Callable[[], Client], parad: Daemon) -> None:
    async def scenario() -> tuple[Any, Any]:
        async with connect() as c:
            handle = (await c.call_tool("bash", {"command": "sleep 300", "wait": 0})).structured_content
            with parad.client() as pc:
                await anyio.to_thread.run_sync(lambda: wait_running(pc, handle["task_id"]))
            cancelled = await c.call_tool("task_cancel", {"task_id": handle["task_id"]})
            after = await c.call_tool("task_output", {"task_id": handle["task_id"]})
        return cancelled, after

    cancelled, after = run(scenario)
    assert cancelled.structured_content["cancelled"] is True and cancelled.structured_content["state"] == "cancelled"
    assert after.structured_content["state"] == "cancelled"
    assert state_in_parad(parad, after.structured_content["task_id"]) == "cancelled"


# ---- batches -----------------------------------------------------------------------------

def test_a_batch_runs_a_task_on_another_ones_output(connect: Callable[[], Client]) -> None:
    spec = {"tasks": [
        {"id": "first", "tool": "bash", "args": {"command": "echo hello"}},
        {"id": "second", "tool": "bash", "after": ["first"], "args": {"command": "echo ${first.stdout} world"}},
        {"id": "files", "tool": "glob", "args": {"patterns": ["f*.txt"]}},
    ]}

    async def scenario() -> Any:
        async with connect() as c:
            return await c.call_tool("batch", spec)

    reply = run(scenario)
    batch = reply.structured_content
    assert not reply.is_error and batch["state"] == "done" and batch["ok"], reply.content[0].text
    assert batch["results"]["second"]["stdout"] == "hello world\n"
    assert batch["results"]["files"]["value"]["count"] == 10   # glob's root: the server's directory


def test_a_batch_of_big_outputs_answers_within_a_bound_and_task_output_has_the_rest(connect: Callable[[], Client]) -> None:
    """Every task's whole output in one answer would let one call make the server build (and the client
    swallow) an answer of tasks x output_bytes: past a share of the answer's budget a task gives its
    first bytes and the offset task_output goes on from."""
    size, tasks = 200_000, 20
    spec = {"tasks": [{"id": f"t{i}", "tool": "bash", "args": {"command": f"head -c {size} /dev/zero | tr '\\0' a"}}
                      for i in range(tasks)], "wait": 40}

    async def scenario() -> tuple[Any, str]:
        async with connect() as c:
            reply = await c.call_tool("batch", spec)
            first = reply.structured_content["results"]["t0"]
            output, offset, more = first["output"], first["offset"], first["more"]
            while more:
                r = (await c.call_tool("task_output", {"task_id": first["task_id"], "offset": offset})).structured_content
                output, offset, more = output + r["output"], r["offset"], r["more"]
            return reply, output

    reply, output = run(scenario)
    assert not reply.is_error and reply.structured_content["state"] == "done", reply.content[0].text[:500]
    assert len(reply.content[0].text) < results.BATCH_REPLY_BYTES + 200 * tasks
    assert len(json.dumps(reply.structured_content)) < results.BATCH_REPLY_BYTES + 1000 * tasks
    first = reply.structured_content["results"]["t0"]
    assert first["more"] and 0 < first["offset"] < size and "stdout" not in first, first.keys()
    assert f"task_output(task_id={first['task_id']!r}, offset={first['offset']})" in reply.content[0].text
    assert output == "a" * size


# ---- errors ------------------------------------------------------------------------------

ERRORS = [
    # A policy may only narrow the pool's: admission refuses this one, naming the field and both values.
    ("bash", {"command": "touch /etc/x", "policy": {"writable": ["/etc"]}}, ["policy.writable", "/etc", "narrow"]),
    ("grep", {"pattern": "x", "context": "lots"}, ["context", "'lots'", "integer"]),
    ("bash", {"command": "env", "caller_env": {"A": "1"}}, ["unknown argument caller_env"]),
    # Not in a batch either: a command fed by a stdin stream a batch has no way to send would wait forever.
    ("batch", {"tasks": [{"id": "a", "tool": "bash", "args": {"command": "cat", "stdin_stream": True}}], "wait": 0},
     ["tasks[0] (a)", "stdin_stream"]),
    ("bash", {"command": "true", "wait": -1}, ["wait", "minimum"]),
    ("read", {"path": "missing.txt"}, ["missing.txt"]),
    ("no_such_tool", {}, ["unknown tool 'no_such_tool'", "bash"]),
    ("task_output", {"task_id": "no-such-task"}, ["no task 'no-such-task'"]),
]


def test_refusals_and_failures_are_tool_errors_with_paras_message(connect: Callable[[], Client]) -> None:
    async def scenario() -> list[Any]:
        async with connect() as c:
            return [await c.call_tool(tool, args) for tool, args, _ in ERRORS]

    for (tool, args, words), reply in zip(ERRORS, run(scenario)):
        text = reply.content[0].text
        assert reply.is_error, f"{tool} {args}: {text}"
        assert all(w in text for w in words) and "Traceback" not in text, f"{tool} {args}: {text}"
        assert reply.structured_content["error"] in text


# ---- lifetime ----------------------------------------------------------------------------

def rpc(proc: subprocess.Popen, message: dict[str, Any]) -> dict[str, Any] | None:
    """Send one JSON-RPC message on the server's stdin; the answer if it is a request."""
    proc.stdin.write((json.dumps({"jsonrpc": "2.0", **message}) + "\n").encode())
    proc.stdin.flush()
    if "id" not in message:
        return None
    while True:
        answer = json.loads(proc.stdout.readline())
        if answer.get("id") == message["id"]:
            return answer


@contextlib.contextmanager
def stdio_session(parad: Daemon, workspace: Path, stderr: Path) -> Iterator[subprocess.Popen]:
    """A stdio para-mcp on pipes (its stderr to `stderr`) after the MCP handshake; killed if it outlives the block."""
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(server_argv(parad), cwd=workspace, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=err)
    try:
        initialize(proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def initialize(proc: subprocess.Popen) -> None:
    """The MCP handshake, as a client opens a session."""
    rpc(proc, {"id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}}})
    rpc(proc, {"method": "notifications/initialized"})


@pytest.mark.parametrize("how", ["eof", "sigterm"])
def test_the_stdio_server_stops_cleanly_and_cancels_what_it_started(parad: Daemon, workspace: Path, tmp_path: Path,
                                                                  how: str) -> None:
    with stdio_session(parad, workspace, tmp_path / "stderr") as proc:
        answer = rpc(proc, {"id": 2, "method": "tools/call", "params": {
            "name": "bash", "arguments": {"command": "sleep 300", "wait": 0}}})
        task_id = answer["result"]["structuredContent"]["task_id"]
        with parad.client() as c:
            wait_running(c, task_id)
        if how == "eof":
            proc.stdin.close()
        else:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert "Traceback" not in (tmp_path / "stderr").read_text()
    wait_until(lambda: state_in_parad(parad, task_id) == "cancelled", 30, f"task {task_id} to be cancelled")


def test_http_only_on_a_loopback_address(parad: Daemon) -> None:
    out = subprocess.run(paractl_argv("--runtime-dir", str(parad.runtime_dir), "mcp", "--http", "0.0.0.0:8765"),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "refusing to serve MCP on 0.0.0.0" in out.stderr and "loopback" in out.stderr


def test_a_client_that_stops_reading_ends_the_stdio_server_quietly(parad: Daemon, workspace: Path,
                                                                    tmp_path: Path) -> None:
    """A client that dies closes the pipe the server writes to: the answer in flight meets EPIPE, which
    is the client leaving (as EOF is), not a traceback and a non-zero exit."""
    with stdio_session(parad, workspace, tmp_path / "stderr") as proc:
        proc.stdout.close()   # the client stops reading (its stdin stays open), then asks: the answer meets EPIPE
        proc.stdin.write(b'{"jsonrpc": "2.0", "id": 2, "method": "ping"}\n')
        proc.stdin.flush()
        code = proc.wait(30)
    stderr = (tmp_path / "stderr").read_text()
    assert code == 0 and "Traceback" not in stderr, f"exit {code}: {stderr}"


def test_a_message_past_the_line_bound_ends_the_stdio_session(parad: Daemon, workspace: Path, tmp_path: Path) -> None:
    """A client that sends more than MAX_LINE bytes without a newline would grow the server's memory
    without bound: the session ends as on EOF, saying why, and the server exits cleanly."""
    with stdio_session(parad, workspace, tmp_path / "stderr") as proc:
        block = b"x" * (1 << 20)
        try:
            for _ in range((MAX_LINE >> 20) + 4):
                proc.stdin.write(block)
            proc.stdin.flush()
        except BrokenPipeError:   # it stopped reading: what the test wants
            pass
        code = proc.wait(30)
    stderr = (tmp_path / "stderr").read_text()
    assert code == 0 and "more than 16 MiB" in stderr and "Traceback" not in stderr, f"exit {code}: {stderr}"
