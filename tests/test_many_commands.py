"""One worker drives many commands at once: each is confined, ended and reported on its own.

A pool of one bash worker with a credit of 8 runs every command it is given
side by side, so each test here knows which worker drives what.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from para.client import TaskTimeout, ToolError
from para.testing import Daemon, wait_running, wait_until

ONE_WORKER = {"bash": {"min_workers": 1, "max_workers": 1, "credit": 8}}
PARACTL = f"{sys.executable} -m para.client.paractl"


def barrier(folder: Path, n: int, name: str) -> str:
    """A command that arrives at a barrier of `n` and leaves only once all `n` are there."""
    return f"touch {folder}/{name}; until [ $(ls {folder} | wc -l) -ge {n} ]; do sleep 0.01; done; echo {name}"


def test_one_worker_runs_the_commands_it_is_given_at_once(start_daemon, tmp_path: Path) -> None:
    d = start_daemon(pools=ONE_WORKER)
    with d.client() as c:
        # Eight commands that each wait for all eight: run one after another, none would end.
        results = list(c.map("bash", ({"command": barrier(tmp_path, 8, f"c{i}")} for i in range(8))))
    assert [r.stdout for r in results] == [f"c{i}\n" for i in range(8)]
    assert len({r.worker for r in results}) == 1


def test_cancelling_one_command_leaves_its_siblings_and_their_children_running(start_daemon, tmp_path: Path) -> None:
    d = start_daemon(pools=ONE_WORKER)
    flag = tmp_path / "go"
    # Each sibling leaves a background child that must live until the sibling itself ends.
    sibling = f"sleep 300 & child=$!; until [ -e {flag} ]; do sleep 0.01; done; kill -0 $child && echo child-alive; kill $child"
    with d.client() as c:
        siblings = [c.submit("bash", command=sibling, timeout=120) for _ in range(3)]
        victim = c.submit("bash", command="sleep 300 & sleep 300", timeout=120)
        running = wait_running(c, count=4, what="all four commands to run")
        assert len({t["worker"] for t in running}) == 1
        c.cancel(victim)
        assert victim.result(timeout=30).status == "cancelled"
        flag.touch()
        results = [s.result(timeout=60) for s in siblings]
    assert [(r.exit_code, r.stdout) for r in results] == [(0, "child-alive\n")] * 3


def test_a_command_that_times_out_ends_alone(start_daemon, tmp_path: Path) -> None:
    d = start_daemon(pools=ONE_WORKER)
    flag = tmp_path / "go"
    with d.client() as c:
        siblings = [c.submit("bash", command=f"until [ -e {flag} ]; do sleep 0.01; done; echo done-{i}", timeout=120)
                    for i in range(3)]
        wait_running(c, count=3, what="the siblings to run")
        slow = c.submit("bash", command="sleep 300", timeout=0.5)
        with pytest.raises(TaskTimeout) as info:
            slow.result(timeout=30)
        assert info.value.result.status == "timed_out"
        assert all(not s.done() for s in siblings)
        flag.touch()
        results = [s.result(timeout=60) for s in siblings]
    assert [r.stdout for r in results] == [f"done-{i}\n" for i in range(3)]
    assert len({r.worker for r in results} | {info.value.result.worker}) == 1


def test_a_worker_killed_while_it_drives_several_commands_reports_or_retries_each(start_daemon, tmp_path: Path) -> None:
    d = start_daemon(pools=ONE_WORKER)
    marker = tmp_path / "first-attempt"
    with d.client() as c:
        lost = [c.submit("bash", command="sleep 300", timeout=120) for _ in range(3)]
        retried = c.submit("bash", retries=1, timeout=120, command=(
            f"if [ -e {marker} ]; then echo second; else touch {marker}; sleep 300; fi"))
        running = wait_running(c, count=4, what="all four commands to run")
        wait_until(marker.exists, what="the retried task's first attempt")
        worker = {w["id"]: w for w in d.workers("bash")}[running[0]["worker"]]
        os.kill(worker["pid"], signal.SIGKILL)
        errors = []
        for future in lost:
            with pytest.raises(ToolError) as info:
                future.result(timeout=60)
            errors.append(info.value.result)
        again = retried.result(timeout=60)
    assert [e.status for e in errors] == ["lost"] * 3
    assert all(f"worker {worker['id']} (pid {worker['pid']}) killed by SIGKILL" in e.error for e in errors)
    assert again.stdout == "second\n" and again.attempts == 2 and again.worker != worker["id"]


def test_streams_of_commands_side_by_side_reach_their_own_task(start_daemon) -> None:
    d = start_daemon(pools=ONE_WORKER)
    with d.client() as c:
        futures = [c.submit("bash", stream=True, timeout=60,
                            command=f"for i in $(seq 50); do echo t{n}-$i; sleep 0.005; done") for n in range(4)]
        streams = {f.id: b"".join(chunk.data for chunk in c.stream(f)) for f in futures}
        results = [f.result(timeout=60) for f in futures]
    for n, f in enumerate(futures):
        assert streams[f.id].decode().split() == [f"t{n}-{i}" for i in range(1, 51)]
    assert len({r.worker for r in results}) == 1


def test_nested_clients_of_commands_side_by_side_speak_for_their_own_task(start_daemon, tmp_path: Path) -> None:
    d = start_daemon(pools={"bash": {"min_workers": 1, "max_workers": 2, "credit": 8}})
    first_done = tmp_path / "first-done"
    with d.client() as c:
        # The second command's child starts after the first command (and its token) ended.
        first = c.submit("bash", timeout=120, command=f"{PARACTL} bash -- echo child-of-first; touch {first_done}")
        second = c.submit("bash", timeout=120, command=(
            f"until [ -e {first_done} ]; do sleep 0.01; done; {PARACTL} bash -- echo child-of-second"))
        results = [first.result(timeout=120), second.result(timeout=120)]
    assert [r.stdout for r in results] == ["child-of-first\n", "child-of-second\n"], [r.stderr for r in results]
    assert results[0].worker == results[1].worker


def test_sessions_take_turns_for_a_worker_s_commands(start_daemon, tmp_path: Path) -> None:
    d = start_daemon(pools={"bash": {"min_workers": 1, "max_workers": 1, "credit": 2}})
    log, flag = tmp_path / "order", tmp_path / "go"
    with d.client() as batcher, d.client() as single:
        gates = [batcher.submit("bash", command=f"until [ -e {flag} ]; do sleep 0.01; done") for _ in range(2)]
        wait_running(batcher, count=2, what="both gates to hold the worker's two slots")
        batch = [batcher.submit("bash", command=f"echo a >> {log}") for _ in range(20)]
        call = single.submit("bash", command=f"echo b >> {log}")
        wait_until(lambda: len([t for t in single.ps() if t["state"] == "queued"]) == 21, what="all queued")
        flag.touch()
        assert call.result(timeout=60).ok
        assert all(f.result(timeout=60).ok for f in batch + gates)
    # The two slots freed by the gates go one to each session, not both to the batch. Judged by
    # when parad started each task (the journal's history), not by whose echo wrote first: two
    # commands started together may write in either order on a loaded machine.
    started = started_at(d, [f.id for f in batch] + [call.id])
    before = [task_id for task_id in started if started[task_id] < started[call.id]]
    assert len(before) <= 1, f"{len(before)} of the batch's tasks started before the other session's one"


def started_at(d: Daemon, ids: list[str]) -> dict[str, float]:
    """When parad started each task (its first `running` line in the journal's history)."""
    with sqlite3.connect(d.state_dir / "journal.sqlite3") as db:
        rows = db.execute(f"SELECT id, history FROM tasks WHERE id IN ({','.join('?' * len(ids))})", ids).fetchall()
    found = {task_id: min(float(line.split()[0]) for line in history.splitlines() if line.split()[1] == "running")
             for task_id, history in rows}
    assert sorted(found) == sorted(ids), "a task's row is missing from the journal"
    return found


def test_a_worker_whose_commands_have_no_near_timer_still_sends_heartbeats(start_daemon) -> None:
    # No sampled limits (a cgroup host samples nothing either): a command's next timer is its
    # timeout. The worker must still wake for its heartbeats, or parad kills it as hung.
    unsampled = {"sandbox": {"limits": {"memory": None, "processes": None}}}
    d = start_daemon(daemon={"heartbeat_interval": 0.2, "failure_detection_timeout": 1.0},
                     pools={"bash": {**ONE_WORKER["bash"], "options": unsampled}})
    with d.client() as c:
        results = [c.submit("bash", command="sleep 3; echo slept", timeout=120) for _ in range(2)]
        assert [r.result(timeout=60).stdout for r in results] == ["slept\n"] * 2
    assert d.pool("bash")["crashes"] == 0
