"""Dead and hung workers: detected, replaced, and their tasks retried or reported, never lost."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from para.client import PoolUnavailable, ToolError
from para.testing import wait_until


def _busy_worker(daemon, client, pool: str = "bash") -> dict:
    return wait_until(lambda: next((w for w in daemon.workers(pool) if w["tasks"]), None), what="a busy worker")


def test_sigkill_busy_worker_reports_lost_and_pool_recovers(daemon) -> None:
    with daemon.client() as c:
        future = c.submit("bash", command="sleep 300")
        victim = _busy_worker(daemon, c)
        os.kill(victim["pid"], signal.SIGKILL)
        with pytest.raises(ToolError) as info:
            future.result(timeout=30)
    result = info.value.result
    assert result.status == "lost" and result.attempts == 1
    assert f"worker {victim['id']} (pid {victim['pid']}) killed by SIGKILL" in result.error
    assert "not retry-safe" in result.error
    wait_until(lambda: daemon.pool("bash")["ready"] >= 2, 20, "the bash pool back at strength")
    assert victim["id"] not in {w["id"] for w in daemon.workers("bash")}
    with daemon.client() as c:
        assert c.run("bash", command="echo back").stdout == "back\n"


def test_task_asking_for_retries_runs_again_on_another_worker(daemon, tmp_path: Path) -> None:
    marker = tmp_path / "first-attempt"
    with daemon.client() as c:
        future = c.submit("bash", retries=1, command=(
            f"if [ -e {marker} ]; then echo second; else touch {marker}; sleep 300; fi"))
        victim = _busy_worker(daemon, c)
        wait_until(marker.exists, what="the first attempt to start")
        os.kill(victim["pid"], signal.SIGKILL)
        result = future.result(timeout=30)
    assert result.ok and result.stdout == "second\n" and result.attempts == 2
    assert result.worker != victim["id"]


def test_sigstop_worker_is_detected_killed_and_replaced(start_daemon) -> None:
    d = start_daemon(daemon={"failure_detection_timeout": 1.0})
    with d.client() as c:
        future = c.submit("bash", command="sleep 300")
        victim = _busy_worker(d, c)
        os.kill(victim["pid"], signal.SIGSTOP)
        with pytest.raises(ToolError) as info:
            future.result(timeout=30)
    error = info.value.result.error
    assert info.value.result.status == "lost"
    assert "hung: no heartbeat for" in error and "killed by SIGKILL" in error
    wait_until(lambda: d.pool("bash")["ready"] >= 2, 20, "a replacement worker")
    assert "sent no heartbeat" in d.log()


def test_idle_sigstopped_worker_is_replaced_too(start_daemon) -> None:
    d = start_daemon(daemon={"failure_detection_timeout": 1.0})
    victim = d.workers("echo")[0]
    os.kill(victim["pid"], signal.SIGSTOP)
    wait_until(lambda: victim["id"] not in {w["id"] for w in d.workers("echo")}, 20, "the hung worker to go")
    wait_until(lambda: d.pool("echo")["ready"] == 1, 20, "a replacement")
    with d.client() as c:
        assert c.run("echo", n=1).value == {"n": 1}


def test_crash_loop_opens_the_circuit_and_submissions_fail_fast(start_daemon) -> None:
    d = start_daemon(pools={"echo": {"min_workers": 1},
                            "bash": {"min_workers": 1, "max_workers": 1, "crash_limit": 3,
                                     "respawn_backoff": 0.05, "respawn_backoff_max": 60}})
    killed: set[int] = set()

    def kill_current() -> bool:
        pool = d.pool("bash")
        if pool["state"] == "failed":
            return True
        for w in d.workers("bash"):
            if w["pid"] and w["pid"] not in killed and w["state"] == "ready":
                killed.add(w["pid"])
                os.kill(w["pid"], signal.SIGKILL)
        return False

    wait_until(kill_current, 30, "the pool to be marked failed")
    assert len(killed) == 3
    with d.client() as c:
        with pytest.raises(PoolUnavailable, match="pool 'bash' is failed: its workers crashed 3 times"):
            c.run("bash", command="true")
        assert c.run("echo", other="pools").value == {"other": "pools"}  # the rest keeps serving


def test_worker_respawn_leaks_nothing(start_daemon) -> None:
    d = start_daemon(pools={"bash": {"min_workers": 1},
                            "echo": {"min_workers": 1, "max_workers": 1, "crash_limit": 1000,
                                     "respawn_backoff": 0.01, "respawn_backoff_max": 0.05}})
    fds_before = len(os.listdir(f"/proc/{d.pid}/fd"))
    for _ in range(30):
        w = wait_until(lambda: next((w for w in d.workers("echo") if w["state"] == "ready"), None), what="a worker")
        os.kill(w["pid"], signal.SIGKILL)
        wait_until(lambda: w["id"] not in {x["id"] for x in d.workers("echo")}, what="the exit to be seen")
    wait_until(lambda: d.pool("echo")["ready"] == 1, what="the last replacement")
    assert len(os.listdir(f"/proc/{d.pid}/fd")) <= fds_before + 2
    # fork server, bash worker, echo worker (a sandboxed worker also has bubblewrap above it)
    assert len([p for p in d.tree() if p.name() != "bwrap"]) == 2 + 1


def test_a_tripped_circuit_recovers_when_workers_come_back(start_daemon) -> None:
    d = start_daemon(pools={"echo": {"min_workers": 1},
                            "bash": {"min_workers": 2, "max_workers": 2, "crash_limit": 3,
                                     "respawn_backoff": 0.05, "respawn_backoff_max": 0.5}})
    with d.client() as c:
        for _ in range(3):  # each command kills the worker running it
            with pytest.raises(ToolError, match="killed by SIGKILL"):
                c.run("bash", command="kill -9 $PPID")
        wait_until(lambda: d.pool("bash")["state"] == "ok" and d.pool("bash")["ready"] == 2, 30,
                   "the circuit to close again")
        assert c.run("bash", command="echo back").stdout == "back\n"


def test_an_unspawnable_command_is_an_error_not_a_worker_crash(daemon) -> None:
    with daemon.client() as c:
        # (An environment variable named A=B is refused at submission now: test_dropin.py.)
        for args in ({"command": "echo a\x00b"}, {"argv": ["echo", "a\x00b"]}, {"argv": ["echo", "x" * 200_000]}):
            with pytest.raises(ToolError, match="cannot start bash"):
                c.run("bash", **args)
    assert daemon.pool("bash")["crashes"] == 0 and daemon.pool("bash")["state"] == "ok"


def test_exit_codes_above_128_are_not_blamed_on_unset_limits(daemon) -> None:
    with daemon.client() as c:
        r = c.run("bash", command="exit 152")  # 128 + SIGXCPU, but no CPU limit is set
    assert r.status == "failed" and r.exit_code == 152 and r.limit is None


def test_tasks_queued_when_the_circuit_opens_end_at_once_naming_the_crash(start_daemon) -> None:
    """They never started, so nothing is lost: they fail with pool_failed instead of waiting in silence."""
    d = start_daemon(pools={"echo": {"min_workers": 1},
                            "bash": {"min_workers": 1, "max_workers": 1, "credit": 1, "crash_limit": 3,
                                     "respawn_backoff": 0.05, "respawn_backoff_max": 60}})
    with d.client() as c:
        killers = [c.submit("bash", command="kill -9 $PPID") for _ in range(2)]   # each kills its worker
        retried = c.submit("bash", command="kill -9 $PPID", retries=3)            # the third crash, to be retried
        queued = [c.submit("bash", command=f"echo never {i}") for i in range(5)]
        for f in killers:
            with pytest.raises(ToolError, match="killed by SIGKILL"):
                f.result(timeout=60)
        wait_until(lambda: d.pool("bash")["state"] == "failed", 30, "the circuit to open")
        # Its retry would have waited in the failed pool's queue: it ends instead.
        again = retried.result(timeout=30)
        assert (again.status, again.error_code) == ("failed", "pool_failed") and "not retried" in again.error
        results = [f.result(timeout=30) for f in queued]
        assert {(r.status, r.error_code) for r in results} == {("failed", "pool_failed")}
        assert all("crashed 3 times" in r.error and "killed by SIGKILL" in r.error for r in results), results[0].error
        assert d.pool("bash")["queued"] == 0
