"""Credit-based dispatch: idle workers get work before busy ones queue more."""

from __future__ import annotations

from para.testing import wait_until


def test_a_task_never_waits_behind_a_long_one_while_a_worker_is_idle(start_daemon) -> None:
    # Credit 2 lets a worker hold a second task; the dispatcher must still pick the idle worker.
    d = start_daemon(pools={"bash": {"min_workers": 2, "max_workers": 2, "credit": 2}})
    with d.client() as c:
        long = c.submit("bash", command="sleep 300")
        busy = wait_until(lambda: next((w["id"] for w in c.workers() if w["tasks"]), None), what="the long task to run")
        quick = c.submit("bash", command="echo quick").result(timeout=60)
        assert quick.ok and quick.worker != busy
        assert not long.done()
        c.cancel(long)
        assert long.result(timeout=30).status == "cancelled"


def test_pipelined_tasks_spread_over_the_pool(start_daemon) -> None:
    d = start_daemon(pools={"echo": {"min_workers": 2, "max_workers": 2, "credit": 64}})
    with d.client() as c:
        results = list(c.map("echo", ({"i": i} for i in range(2000))))
    assert [r.value["i"] for r in results] == list(range(2000))
    assert {r.worker for r in results} == {"echo-1", "echo-2"}
