"""AsyncClient against a real daemon: the same calls as Client, as coroutines."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from para.client import AsyncClient, DaemonUnavailable, InvalidRequest, ToolError


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


def test_run_submit_map_and_concurrent_awaits(daemon) -> None:
    async def main():
        async with AsyncClient(daemon.runtime_dir) as c:
            echoed = await c.run("echo", greeting="hi")
            task = await c.submit("bash", command="echo from submit")
            mapped = [r.stdout async for r in c.map("bash", ({"command": f"echo {i}"} for i in range(50)))]
            many = await asyncio.gather(*(c.run("bash", command=f"sleep 0.1; echo {i}") for i in range(8)))
            return echoed, await task, mapped, many, await c.status()

    echoed, submitted, mapped, many, status = run(main())
    assert echoed.value == {"greeting": "hi"}
    assert submitted.stdout == "from submit\n"
    assert mapped == [f"{i}\n" for i in range(50)]
    assert [r.stdout for r in many] == [f"{i}\n" for i in range(8)]
    assert status["daemon"]["pid"] == daemon.pid


def test_errors_are_the_same_as_the_sync_clients(daemon) -> None:
    async def main():
        async with AsyncClient(daemon.runtime_dir) as c:
            with pytest.raises(InvalidRequest, match="unknown tool 'nope'"):
                await c.submit("nope")
            with pytest.raises(ToolError, match="is not a directory"):
                await c.run("bash", command="true", cwd="/nonexistent-dir")
            failed = await c.run("bash", command="exit 5")
            results = [r async for r in c.map("bash", [{"command": "true"}, {"command": 3}], return_exceptions=True)]
            return failed, results

    failed, results = run(main())
    assert failed.status == "failed" and failed.exit_code == 5
    assert results[0].ok and isinstance(results[1], InvalidRequest)


def test_batch_and_cancel(start_daemon) -> None:
    d = start_daemon(pools={"bash": {"min_workers": 2, "max_workers": 2}, "echo": {"min_workers": 1}})

    async def main():
        async with AsyncClient(d.runtime_dir) as c:
            batch = await c.batch({"tasks": [
                {"id": "a", "tool": "bash", "args": {"command": "echo one"}},
                {"id": "b", "tool": "echo", "after": ["a"], "args": {"got": "${a.stdout}"}},
            ]})
            seen = [name async for name, _ in batch.as_completed()]
            results = await batch.results()
            sleeper = await c.submit("bash", command="sleep 300")
            while not [t for t in await c.ps() if t["state"] == "running"]:
                await asyncio.sleep(0.02)
            cancelled = await sleeper.cancel()
            return seen, results, cancelled, sleeper.outcome() if sleeper.done() else await sleeper.result()

    seen, results, cancelled, slept = run(main())
    assert seen == ["a", "b"] and results["b"].value == {"got": "one"}
    assert cancelled["cancelled"] and slept.status == "cancelled"


def test_a_hung_daemon_fails_waiters_instead_of_hanging(start_daemon) -> None:
    d = start_daemon()

    async def main():
        # reconnect: how long it then tries to reach a parad again (30 s by default): the same path, shorter.
        async with AsyncClient(d.runtime_dir, timeout=1.0, reconnect=2.0) as c:
            os.kill(d.pid, signal.SIGSTOP)
            try:
                with pytest.raises(DaemonUnavailable, match="not answering"):
                    await c.run("echo", x=1)
            finally:
                os.kill(d.pid, signal.SIGCONT)

    run(main())


def test_runs_started_together_share_a_frame_but_fail_alone(daemon) -> None:
    # run() calls made in one turn of the loop leave in one Submit: a task too large to send, or
    # refused by parad, fails by itself, as it would have alone, and the others run.
    async def main():
        async with AsyncClient(daemon.runtime_dir) as c:
            return await asyncio.gather(c.run("echo", n=1), c.run("echo", big="x" * (9 << 20)), c.run("nope"),
                                        c.run("echo", bad={1, 2}), c.run("echo", n=2), return_exceptions=True)

    first, too_large, unknown, unencodable, last = run(main())
    assert first.value == {"n": 1} and last.value == {"n": 2}
    assert isinstance(too_large, InvalidRequest) and "max_message_size" in str(too_large)
    assert isinstance(unknown, InvalidRequest) and "unknown tool 'nope'" in str(unknown)
    assert isinstance(unencodable, TypeError)
