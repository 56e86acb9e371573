"""Results by id against a real parad: a task waited for by another client than its submitter,
finished or still running; an id parad does not know; `paractl result`, `task` and `gc`."""

from __future__ import annotations

import asyncio
import json

import pytest

from para.client import AsyncClient, Client, NotFound, TaskTimeout, ToolError
from para.testing import Daemon, paractl, wait_running


@pytest.fixture(scope="module")
def parad(shared_daemon: Daemon) -> Daemon:
    return shared_daemon


def test_a_finished_task_by_id_from_another_client(parad: Daemon) -> None:
    with parad.client() as first:
        done = first.run("bash", command="echo by-id; exit 3", retries=0)
    with parad.client() as second:
        result = second.result(done.id)
    assert result.id == done.id and result.exit_code == 3 and result.stdout == "by-id\n"


def test_a_running_task_by_id_comes_to_both_clients_when_it_ends(parad: Daemon, tmp_path) -> None:
    gate = tmp_path / "gate"
    with parad.client() as first, parad.client() as second:
        future = first.submit("bash", command=f"while [ ! -e {gate} ]; do sleep 0.05; done; echo live")
        wait_running(first, future.id)
        with pytest.raises(TaskTimeout, match=f"task {future.id}"):
            second.result(future.id, timeout=0.5)
        gate.touch()
        by_id = second.result(future.id, timeout=60)
        own = future.result()
    assert by_id.stdout == own.stdout == "live\n" and by_id.id == own.id == future.id


def test_a_failed_task_by_id_raises_as_its_future_does(parad: Daemon) -> None:
    with parad.client() as first:
        future = first.submit("read", path="/no/such/file")
        with pytest.raises(ToolError) as own:
            future.result()
    with parad.client() as second, pytest.raises(ToolError) as by_id:
        second.result(future.id)
    assert str(by_id.value) == str(own.value)


def test_an_unknown_id_is_not_found(parad: Daemon) -> None:
    with parad.client() as c:
        with pytest.raises(NotFound, match="knows no task 'nobody-1'"):
            c.result("nobody-1")
        assert c.run("echo", x=1).ok  # the client goes on


def test_the_async_client_waits_by_id_too(parad: Daemon) -> None:
    with parad.client() as first:
        future = first.submit("bash", command="sleep 0.5; echo async")

        async def main() -> tuple:
            async with AsyncClient(parad.runtime_dir) as c:
                result = await c.result(future.id, timeout=60)
                with pytest.raises(NotFound):
                    await c.result("nobody-2")
                return result, await c.prune(None)

        result, pruned = asyncio.run(asyncio.wait_for(main(), 60))
        assert future.result().stdout == result.stdout == "async\n"
    assert set(pruned) == {"tasks", "bytes", "files"}


def test_paractl_result_prints_the_output_and_exits_with_the_code(parad: Daemon) -> None:
    with parad.client() as c:
        done = c.run("bash", command="echo out; echo err >&2; exit 4")
    r = paractl(parad, "result", done.id)
    assert (r.returncode, r.stdout, r.stderr) == (4, "out\n", "err\n")
    as_json = paractl(parad, "--json", "result", done.id)
    assert as_json.returncode == 4 and json.loads(as_json.stdout)["stdout"] == "out\n"
    missing = paractl(parad, "result", "nobody-3")
    assert missing.returncode == 2 and "knows no task 'nobody-3'" in missing.stderr


def test_paractl_result_waits_for_a_running_task(parad: Daemon) -> None:
    with parad.client() as c:
        future = c.submit("bash", command="sleep 1; echo late")
        wait_running(c, future.id)
        r = paractl(parad, "result", future.id)
    assert (r.returncode, r.stdout) == (0, "late\n"), r.stderr


def test_paractl_task_shows_its_state_and_result(parad: Daemon) -> None:
    with parad.client() as c:
        future = c.submit("bash", command="sleep 30")
        wait_running(c, future.id)
        live = paractl(parad, "task", future.id)
        c.cancel(future)
        done = c.run("bash", command="echo x")
    assert live.returncode == 0 and "state      running" in live.stdout, live.stderr
    finished = paractl(parad, "task", done.id)
    assert "status     succeeded" in finished.stdout and "exit_code  0" in finished.stdout
    as_json = json.loads(paractl(parad, "--json", "task", done.id).stdout)
    assert as_json["result"]["stdout"] == "x\n" and as_json["task"]["id"] == done.id


def test_paractl_gc_prunes_finished_tasks(start_daemon) -> None:
    d = start_daemon()
    with d.client() as c:
        done = c.run("echo", x=1)
        assert c.task(done.id)["result"].ok
    r = paractl(d, "gc", "--older-than", "0")
    assert r.returncode == 0 and r.stdout.startswith("removed 1 finished tasks"), r.stderr
    with d.client() as c, pytest.raises(NotFound):
        c.task(done.id)
    assert json.loads(paractl(d, "--json", "gc").stdout) == {"tasks": 0, "bytes": 0, "files": 0}
    assert paractl(d, "gc", "--older-than", "-1").returncode == 2
