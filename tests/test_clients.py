"""Client and AsyncClient, one scenario each, against a real daemon: same calls, same answers.

Each scenario is a coroutine that reads a client's answers through `settle`
and `items`, so the same lines drive Client (plain values, iterators) and
AsyncClient (awaitables, async iterators).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
import pytest

from para.client import core
from para.client import (
    AsyncBatchHandle, AsyncClient, AsyncTask, BatchHandle, Client, DaemonUnavailable, InvalidRequest, Result,
    TaskFuture, ToolError,
)

KINDS = ["sync", "async"]


async def settle(value: Any) -> Any:
    """A sync client's answer as is; an async client's awaited."""
    return await value if inspect.isawaitable(value) else value


async def items(iterable: Any) -> list[Any]:
    """Every item of an iterator or an async iterator."""
    if hasattr(iterable, "__aiter__"):
        return [x async for x in iterable]
    return list(iterable)


def drive(kind: str, runtime_dir: Any, scenario: Callable[[Any], Awaitable[Any]], **kwargs: Any) -> Any:
    """Run `scenario(client)` with a connected Client or AsyncClient."""
    async def main() -> Any:
        if kind == "sync":
            with Client(runtime_dir, **kwargs) as c:
                return await scenario(c)
        async with AsyncClient(runtime_dir, **kwargs) as c:
            return await scenario(c)
    return asyncio.run(asyncio.wait_for(main(), 120))


def public(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_") and callable(getattr(cls, name))}


def test_both_clients_and_their_handles_have_the_same_public_methods() -> None:
    assert public(Client) == public(AsyncClient)
    assert public(TaskFuture) == public(AsyncTask)
    assert public(BatchHandle) == public(AsyncBatchHandle)
    assert {"metrics", "task", "shutdown", "connect"} <= public(AsyncClient)


@pytest.mark.parametrize("kind", KINDS)
def test_run_submit_and_map_in_order(kind, shared_daemon) -> None:
    async def scenario(c):
        echoed = await settle(c.run("echo", greeting="hi", priority=1))
        task = await settle(c.submit("bash", command="echo from submit", timeout=30))
        submitted = await settle(task.result())
        tracked = task.id in c._tasks
        task.close()   # what a long-lived client does with a task it collected
        tracked = (tracked, task.id in c._tasks)
        # More than one Submit frame's worth (128), with task options for every task.
        mapped = await items(c.map("echo", ({"i": i} for i in range(300)), priority=1, timeout=30))
        return echoed, task.done(), submitted, mapped, tracked

    echoed, done, submitted, mapped, tracked = drive(kind, shared_daemon.runtime_dir, scenario)
    assert echoed.value == {"greeting": "hi"}
    assert done and submitted.stdout == "from submit\n"
    assert tracked == (True, False)
    assert [r.value for r in mapped] == [{"i": i} for i in range(300)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("timeout", [1e7, float("inf")])
def test_a_timeout_of_months_or_none_at_all_waits_as_asked(kind, timeout, shared_daemon) -> None:
    # Each wait on the socket is in milliseconds, as a C int: a longer one is taken in steps.
    async def scenario(c):
        return await settle(c.run("echo", long=True))

    assert drive(kind, shared_daemon.runtime_dir, scenario, timeout=timeout).value == {"long": True}


@pytest.mark.parametrize("cls", [Client, AsyncClient])
@pytest.mark.parametrize("timeout", [0, -1, float("nan"), "10", True])
def test_a_timeout_that_is_no_positive_number_is_refused_saying_so(cls, timeout, tmp_path) -> None:
    with pytest.raises(ValueError, match="timeout must be a positive number of seconds"):
        cls(tmp_path, timeout=timeout)


@pytest.mark.parametrize("kind", KINDS)
def test_stream_yields_chunks_then_ends(kind, shared_daemon) -> None:
    async def scenario(c):
        task = await settle(c.submit("bash", command="for i in 1 2 3; do echo $i; done", stream=True))
        chunks = await items(c.stream(task))
        plain = await settle(c.submit("echo", x=1))
        with pytest.raises(ValueError, match="stream=True"):
            await items(c.stream(plain))
        return chunks, await settle(task.result())

    chunks, result = drive(kind, shared_daemon.runtime_dir, scenario)
    assert b"".join(ch.data for ch in chunks if ch.stream == "stdout") == b"1\n2\n3\n"
    assert result.ok


@pytest.mark.parametrize("kind", KINDS)
def test_cancel_a_task_a_session_and_everything(kind, shared_daemon) -> None:
    async def scenario(c):
        one = await settle(c.submit("bash", command="sleep 300"))
        by_task = await settle(c.cancel(one))
        s1 = await settle(c.submit("bash", command="sleep 300", session="s-cancel"))
        s2 = await settle(c.submit("bash", command="sleep 300", session="s-cancel"))
        by_session = await settle(c.cancel(session="s-cancel"))
        e1 = await settle(c.submit("bash", command="sleep 300"))
        by_all = await settle(c.cancel(everything=True))
        ends = [(await settle(t.result())).status for t in (one, s1, s2, e1)]
        again = await settle(c.cancel(one.id))
        return by_task, by_session, by_all, ends, again, one.id, {s1.id, s2.id}, e1.id

    by_task, by_session, by_all, ends, again, one, session, every = drive(kind, shared_daemon.runtime_dir, scenario)
    assert by_task["cancelled"] == [one]
    assert set(by_session["cancelled"]) == session
    assert every in by_all["cancelled"]
    assert ends == ["cancelled"] * 4
    assert again["not_running"] == [one]


@pytest.mark.parametrize("kind", KINDS)
def test_batch_runs_in_dependency_order(kind, shared_daemon) -> None:
    async def scenario(c):
        batch = await settle(c.batch({"on_failure": "continue", "tasks": [
            {"id": "a", "tool": "bash", "args": {"command": "echo one"}},
            {"id": "b", "tool": "echo", "after": ["a"], "args": {"got": "${a.stdout}"}},
            {"id": "bad", "tool": "bash", "args": {"command": "exit 1"}},
            {"id": "never", "tool": "bash", "after": ["bad"], "args": {"command": "echo no"}},
        ]}))
        order = [name for name, _ in await items(batch.as_completed(timeout=60))]
        results = await settle(batch.results(timeout=60))
        progress = await settle(batch.progress())
        with pytest.raises(InvalidRequest, match="unknown batch key"):
            await settle(c.batch({"tasks": [], "nope": 1}))
        return order, results, progress, batch.done(), batch.ok

    order, results, progress, done, ok = drive(kind, shared_daemon.runtime_dir, scenario)
    assert order.index("a") < order.index("b") and order.index("bad") < order.index("never")
    assert results["b"].value == {"got": "one"}
    assert results["bad"].status == "failed" and results["never"].status == "skipped"
    assert progress["complete"] is True
    assert done and not ok


@pytest.mark.parametrize("kind", KINDS)
def test_commands_run_in_the_callers_folder_and_environment(kind, shared_daemon, tmp_path, monkeypatch) -> None:
    # A project folder that is not parad's: the clients send their cwd and environment.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FOO", "bar")
    monkeypatch.setenv("SOME_API_KEY", "k")
    show = 'echo "$PWD|${FOO-unset}|${SOME_API_KEY-unset}|${EXTRA-unset}"'

    async def scenario(c):
        here = await settle(c.run("bash", command=show))
        added = await settle(c.run("bash", command=show, env={"EXTRA": "x", "SOME_API_KEY": "named"}))
        clean = await settle(c.run("bash", command=show, caller_env=None, cwd="/"))
        argv = await settle(c.run("bash", argv=["printf", "[%s]\\n", "a b", "$FOO"]))
        exit7 = await settle(c.run("bash", argv=["sh", "-c", "exit 7"]))
        mapped = [r.stdout for r in await items(c.map("bash", ({"argv": ["echo", str(i), "$FOO"]} for i in range(3))))]
        batch = await settle(c.batch({"tasks": [{"id": "pwd", "tool": "bash", "args": {"command": "pwd"}}]}))
        in_batch = (await settle(batch.results(timeout=60)))["pwd"]
        with pytest.raises(InvalidRequest, match="or argv .*, not both"):
            await settle(c.run("bash", command="true", argv=["true"]))
        return here, added, clean, argv, exit7, mapped, in_batch

    here, added, clean, argv, exit7, mapped, in_batch = drive(kind, shared_daemon.runtime_dir, scenario)
    assert here.stdout == f"{tmp_path}|bar|unset|unset\n"
    assert added.stdout == f"{tmp_path}|bar|named|x\n"   # env= adds, even a name that looks secret
    assert clean.stdout == "/|unset|unset|unset\n"
    assert argv.stdout == "[a b]\n[$FOO]\n"
    assert exit7.exit_code == 7 and exit7.status == "failed"
    assert mapped == [f"{i} $FOO\n" for i in range(3)]
    assert in_batch.stdout == f"{tmp_path}\n"


@pytest.mark.parametrize("kind", KINDS)
def test_map_splits_frames_of_large_tasks_to_fit_the_message_size(kind, start_daemon) -> None:
    # 40 tasks of 50 KB (a large environment each) are 2 MB: past max_message_size in one Submit frame.
    d = start_daemon(daemon={"max_message_size": 256 << 10})
    big = {"PAD": "x" * 50_000}

    async def scenario(c):
        return [r.stdout for r in await items(c.map("bash", ({"argv": ["echo", str(i)], "env": big} for i in range(40))))]

    assert drive(kind, d.runtime_dir, scenario) == [f"{i}\n" for i in range(40)]


@pytest.mark.parametrize("kind", KINDS)
def test_a_stream_brings_every_byte_and_the_result_keeps_the_capped_part(kind, shared_daemon) -> None:
    async def scenario(c):
        task = await settle(c.submit("bash", command="head -c 3000000 /dev/zero | tr '\\0' a", stream=True))
        streamed = sum(len(ch.data) for ch in await items(c.stream(task)))
        return streamed, await settle(task.result())

    streamed, result = drive(kind, shared_daemon.runtime_dir, scenario)
    assert streamed == 3_000_000
    assert result.truncated and result.stdout_bytes == 3_000_000 and len(result.stdout) < 1_100_000


@pytest.mark.parametrize("kind", KINDS)
def test_errors_are_the_same_exceptions(kind, shared_daemon) -> None:
    async def scenario(c):
        with pytest.raises(InvalidRequest, match="unknown tool 'nope'"):
            await settle(c.submit("nope"))
        with pytest.raises(InvalidRequest, match="unknown tool 'nope'"):
            await settle(c.run("nope"))
        with pytest.raises(ToolError, match="is not a directory"):
            await settle(c.run("bash", command="true", cwd="/nonexistent-dir"))
        # A misspelt task option of map() must not become a tool argument of every task.
        with pytest.raises(InvalidRequest, match="unknown task option.*priorty"):
            await items(c.map("echo", [{"x": 1}], priorty=1))
        mixed = await items(c.map("bash", [{"command": "true"}, {"command": 3}], return_exceptions=True))
        failed = await settle(c.run("bash", command="exit 5"))
        return mixed, failed

    mixed, failed = drive(kind, shared_daemon.runtime_dir, scenario)
    assert mixed[0].ok and isinstance(mixed[1], InvalidRequest)
    assert failed.status == "failed" and failed.exit_code == 5


@pytest.mark.parametrize("kind", KINDS)
def test_a_submit_parad_cannot_read_fails_its_tasks_instead_of_hanging(kind, shared_daemon) -> None:
    # An argument msgpack encodes and parad cannot decode (an extension type it does not know):
    # parad refuses the frame naming its request number, read without decoding the rest, and each
    # task of that Submit fails with the refusal. Before, the refusal had no number: run() and map()
    # waited on, their pings answered, for an end that could not come.
    unreadable = msgpack.ExtType(99, b"?")

    async def scenario(c):
        with pytest.raises(InvalidRequest, match="unknown message type tag 99"):
            await settle(c.run("echo", x=unreadable))
        mapped = await items(c.map("echo", [{"x": 1}, {"x": unreadable}], return_exceptions=True))
        return mapped, await settle(c.run("echo", x=2))

    mapped, after = drive(kind, shared_daemon.runtime_dir, scenario)
    assert [type(r) for r in mapped] == [InvalidRequest, InvalidRequest]   # one frame: refused whole
    assert after.value == {"x": 2}


def test_a_request_to_a_hung_daemon_waits_without_spinning(start_daemon, monkeypatch) -> None:
    # A request waits on its own deadline: the silence clock, whose pings only task waits send,
    # must not wake it. It did, every millisecond, once PING_EVERY had passed.
    monkeypatch.setattr(core, "PING_EVERY", 0.2)
    d = start_daemon()
    with Client(d.runtime_dir, timeout=2.0) as c:
        reads = 0
        read = c._read

        def counted(wait: int) -> Any:
            nonlocal reads
            reads += 1
            return read(wait)

        c._read = counted
        os.kill(d.pid, signal.SIGSTOP)
        try:
            with pytest.raises(DaemonUnavailable, match="waited 2s for the daemon's answer"):
                c.status()
        finally:
            os.kill(d.pid, signal.SIGCONT)
    assert reads < 10, f"{reads} reads of the socket while one request waited 2 s"


def test_a_refusal_of_one_task_fails_no_other_task_of_its_submit(shared_daemon) -> None:
    # Two run() calls of one turn share a Submit; the first is given up on before its refusal
    # (which names it) comes. The second must not take that refusal for a refusal of the whole Submit.
    async def main() -> Any:
        async with AsyncClient(shared_daemon.runtime_dir) as c:
            bad = asyncio.create_task(c.run("bash", command=3))
            good = asyncio.create_task(c.run("echo", x=1))
            await asyncio.sleep(0)
            bad.cancel()
            return await good

    assert asyncio.run(asyncio.wait_for(main(), 60)).value == {"x": 1}


@pytest.mark.parametrize("kind", KINDS)
def test_queries_metrics_task_and_shutdown(kind, start_daemon) -> None:
    d = start_daemon()

    async def scenario(c):
        done = await settle(c.run("echo", x=1))
        status = await settle(c.status())
        ps, workers = await settle(c.ps()), await settle(c.workers())
        metrics = await settle(c.metrics())
        task = await settle(c.task(done.id))
        scaled = await settle(c.scale("echo", 1))
        return status, ps, workers, metrics, task, scaled, await settle(c.shutdown())

    status, ps, workers, metrics, task, scaled, stopping = drive(kind, d.runtime_dir, scenario)
    assert status["daemon"]["pid"] == d.pid
    assert ps == [] and len(workers) == 3
    assert "para_" in metrics
    assert isinstance(task["result"], Result) and task["result"].value == {"x": 1}
    assert scaled
    assert stopping["stopping"] is True
    assert d.proc.wait(timeout=30) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_a_hung_daemon_is_given_up_on_the_same_way(kind, start_daemon) -> None:
    d = start_daemon()

    async def scenario(c):
        os.kill(d.pid, signal.SIGSTOP)
        try:
            with pytest.raises(DaemonUnavailable, match=f"not answering at {d.runtime_dir}.*silent for"):
                await settle(c.run("echo", x=1))
            with pytest.raises(DaemonUnavailable, match="not answering.*waited 1s for the daemon's answer"):
                await settle(c.status())
        finally:
            os.kill(d.pid, signal.SIGCONT)
        return await settle(c.status())

    assert drive(kind, d.runtime_dir, scenario, timeout=1.0, reconnect=1.0)["daemon"]["pid"] == d.pid
