"""Pool sizing through a real daemon: growth under load, shrink when idle, recycling, operators' scale and drain."""

from __future__ import annotations

from pathlib import Path

import pytest

from para.client import PoolUnavailable
from para.daemon.config import PoolSection
from para.daemon.pool import Pool
from para.daemon.tasks import TaskRecord
from para.daemon.tools import TOOLS
from para.ipc import messages as m
from para.testing import paractl as paractl_run, wait_running, wait_until


def test_a_pool_grows_under_load_and_shrinks_when_idle(start_daemon, tmp_path: Path) -> None:
    # A worker per `credit` tasks: 10 tasks at credit 2 want 5 workers, and get the 4 allowed.
    d = start_daemon(pools={"bash": {"min_workers": 1, "max_workers": 4, "credit": 2, "idle_timeout": 0.5}})
    flag = tmp_path / "go"
    with d.client() as c:
        futures = [c.submit("bash", command=f"while [ ! -e {flag} ]; do sleep 0.01; done") for _ in range(10)]
        wait_until(lambda: d.pool("bash")["ready"] == 4, 30, "the pool to grow to max_workers")
        wait_until(lambda: len([t for t in c.ps() if t["state"] == "running"]) == 8, 30, "each worker to run two")
        assert len([t for t in c.ps() if t["state"] == "queued"]) == 2
        flag.touch()
        assert all(f.result(timeout=60).ok for f in futures)
    wait_until(lambda: d.pool("bash")["workers"] == 1, 30, "idle workers to be stopped down to min_workers")
    assert d.pool("bash")["crashes"] == 0  # stopping idle workers is not crashing


def test_host_pressure_holds_growth_but_not_min_workers() -> None:
    pool = Pool("bash", TOOLS["bash"], PoolSection(min_workers=1, max_workers=8), TOOLS["bash"].Options())
    for i in range(8 * pool.credit + 1):   # more than 8 workers' credit
        pool.queue.push(TaskRecord(m.TaskSpec(f"t{i}", "bash", {}), "bash", b"c", 1))
    assert pool.wanted() == 8
    pool.pressure = True
    assert pool.wanted() == 1  # no workers yet: min_workers only
    pool.new_worker()
    pool.new_worker()
    assert pool.wanted() == 2  # keeps what it has, grows no further
    pool.pinned = 5
    assert pool.wanted() == 5  # an operator's word wins


def test_workers_are_recycled_after_n_tasks_without_losing_any(start_daemon) -> None:
    d = start_daemon(pools={"echo": {"min_workers": 1, "max_workers": 1, "recycle_after": 5, "credit": 1}})
    with d.client() as c:
        results = [c.run("echo", n=i) for i in range(16)]
    assert [r.value["n"] for r in results] == list(range(16))
    assert len({r.worker for r in results}) >= 3
    pool = d.pool("echo")
    assert pool["crashes"] == 0 and pool["state"] == "ok"


def test_drain_and_scale_from_paractl(start_daemon, tmp_path: Path) -> None:
    d = start_daemon(pools={"bash": {"min_workers": 2, "max_workers": 3}})
    r = paractl_run(d, "drain", "bash")
    assert r.returncode == 0 and "pinned to 0" in r.stdout, r.stderr
    wait_until(lambda: d.pool("bash")["workers"] == 0, 30, "the drained pool to have no workers")
    r = paractl_run(d, "scale", "bash", "3")
    assert r.returncode == 0 and "pinned to 3" in r.stdout, r.stderr
    wait_until(lambda: d.pool("bash")["ready"] == 3, 30, "three workers")
    r = paractl_run(d, "scale", "bash", "9")
    assert r.returncode == 2 and "0..3" in r.stderr
    r = paractl_run(d, "scale", "bash", "auto")
    assert r.returncode == 0 and "automatic" in r.stdout
    assert d.pool("bash")["crashes"] == 0


def test_a_drained_pool_refuses_new_tasks_at_once_while_queued_ones_wait(start_daemon, tmp_path: Path) -> None:
    d = start_daemon(pools={"bash": {"min_workers": 1, "max_workers": 1, "credit": 1}, "grep": {"min_workers": 1, "max_workers": 1}})
    flag = tmp_path / "go"
    with d.client() as c:
        running = c.submit("bash", command=f"while [ ! -e {flag} ]; do sleep 0.01; done")
        wait_running(c, running.id, what="the task to run")
        queued = c.submit("bash", command="echo queued")
        assert paractl_run(d, "drain", "bash").returncode == 0
        # A new task has no worker coming: refused now, naming the way out (bounded waits, not forever).
        with pytest.raises(PoolUnavailable, match="paractl scale bash auto"):
            c.submit("bash", command="echo new").result(timeout=30)
        for batch in ([{"id": "one", "tool": "bash", "args": {"command": "true"}}],
                      # a task with references is checked by its pool alone until its dependencies finish
                      [{"id": "find", "tool": "grep", "args": {"pattern": "x", "path": str(tmp_path)}},
                       {"id": "use", "tool": "bash", "after": ["find"], "args": {"command": "echo ${find.value.count}"}}]):
            with pytest.raises(PoolUnavailable, match="paractl scale bash auto"):
                c.batch({"tasks": batch})
        # Work taken before the drain waits for the pool to come back, as `drain` promises.
        flag.touch()
        assert running.result(timeout=30).ok
        wait_until(lambda: d.pool("bash")["workers"] == 0, 30, "the drained pool to have no workers")
        assert not queued.done() and next(t for t in c.ps() if t["id"] == queued.id)["state"] == "queued"
        assert paractl_run(d, "scale", "bash", "auto").returncode == 0
        assert queued.result(timeout=30).stdout == "queued\n"
        assert c.run("bash", command="echo again", timeout=30).stdout == "again\n"


def test_paractl_on_a_drained_pool_says_how_to_undrain_it(start_daemon, tmp_path: Path) -> None:
    d = start_daemon(pools={"grep": {"min_workers": 1, "max_workers": 1}})
    (tmp_path / "notes.txt").write_text("foo\n")
    assert paractl_run(d, "drain", "grep").returncode == 0
    r = paractl_run(d, "grep", "foo", str(tmp_path / "notes.txt"), timeout=60)
    assert r.returncode == 75, r.stderr  # EX_TEMPFAIL, like a failed pool
    assert "drained" in r.stderr and "paractl scale grep auto" in r.stderr
    assert paractl_run(d, "scale", "grep", "auto").returncode == 0
    r = paractl_run(d, "grep", "foo", str(tmp_path / "notes.txt"), timeout=60)
    assert r.returncode == 0 and "foo" in r.stdout, r.stderr
