"""The scheduler through a real daemon: priorities, fairness, backpressure, retries, poison, cancels.

One bash worker (credit 1) makes the order in which tasks start observable:
each command appends a word to a log file, and a first "gate" command holds
the worker until the test has queued everything.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import zmq

from para.client import InvalidRequest, QueueFull, ToolError
from para.ipc import codec
from para.ipc import messages as m
from para.testing import silent_client, wait_running, wait_until

ONE_WORKER = {"bash": {"min_workers": 1, "max_workers": 1, "credit": 1}}


def gate(c, tmp_path: Path):
    """A running task that ends when the test calls the returned function."""
    flag = tmp_path / "open"
    c.submit("bash", command=f"while [ ! -e {flag} ]; do sleep 0.01; done")
    wait_running(c, what="the gate to run")
    return lambda: flag.touch()


def test_priorities_run_most_urgent_first(start_daemon, tmp_path: Path) -> None:
    d = start_daemon(pools=ONE_WORKER)
    log = tmp_path / "order"
    with d.client() as c:
        release = gate(c, tmp_path)
        futures = [c.submit("bash", command=f"echo {p} >> {log}", priority=p) for p in (4, 2, 3, 0, 1, 2)]
        wait_until(lambda: len([t for t in c.ps() if t["state"] == "queued"]) == 6, what="all queued")
        release()
        assert all(f.result(timeout=60).ok for f in futures)
    assert log.read_text().split() == ["0", "1", "2", "2", "3", "4"]


def test_a_single_call_is_not_stuck_behind_another_clients_batch(start_daemon, tmp_path: Path) -> None:
    d = start_daemon(pools=ONE_WORKER)
    log = tmp_path / "order"
    with d.client() as batcher, d.client() as single:
        release = gate(batcher, tmp_path)
        batch = [batcher.submit("bash", command=f"echo a >> {log}") for _ in range(50)]
        call = single.submit("bash", command=f"echo b >> {log}")
        wait_until(lambda: len([t for t in single.ps() if t["state"] == "queued"]) == 51, what="all queued")
        release()
        assert call.result(timeout=60).ok
        assert all(f.result(timeout=60).ok for f in batch)
    order = log.read_text().split()
    # Sessions take turns: the call runs right after the batch's first task, not after all 50.
    assert order.index("b") <= 1, order
    assert len(order) == 51


def test_sessions_named_by_one_client_also_take_turns(start_daemon, tmp_path: Path) -> None:
    d = start_daemon(pools=ONE_WORKER)
    log = tmp_path / "order"
    with d.client() as c:
        release = gate(c, tmp_path)
        futures = [c.submit("bash", command=f"echo x >> {log}", session="bulk") for _ in range(20)]
        futures += [c.submit("bash", command=f"echo y{i} >> {log}", session="interactive") for i in range(2)]
        wait_until(lambda: len([t for t in c.ps() if t["state"] == "queued"]) == 22, what="all queued")
        release()
        assert all(f.result(timeout=60).ok for f in futures)
    order = log.read_text().split()
    assert order.index("y0") <= 1 and order.index("y1") <= 3, order


def test_a_full_queue_refuses_with_its_depth_and_keeps_what_it_took(start_daemon, tmp_path: Path) -> None:
    d = start_daemon(pools={"bash": {"min_workers": 1, "max_workers": 1, "credit": 1, "max_queue": 5}})
    with d.client() as c:
        release = gate(c, tmp_path)
        accepted = [c.submit("bash", command=f"echo {i}") for i in range(5)]
        with pytest.raises(QueueFull, match=r"pool 'bash' holds 5 queued tasks \(max_queue 5\)"):
            c.submit("bash", command="echo one too many").result(timeout=30)
        release()
        assert [f.result(timeout=60).stdout for f in accepted] == [f"{i}\n" for i in range(5)]


def test_failed_attempts_are_retried_with_growing_backoff(daemon, tmp_path: Path) -> None:
    stamps = tmp_path / "stamps"
    # Fails twice, then succeeds; each attempt records when it started.
    command = (f"date +%s.%N >> {stamps}; "
               f"[ $(wc -l < {stamps}) -ge 3 ] && echo done || exit 7")
    with daemon.client() as c:
        r = c.run("bash", command=command, retries=3, retry_on=["failed"], retry_backoff=0.2)
    assert r.ok and r.stdout == "done\n" and r.attempts == 3
    t = [float(x) for x in stamps.read_text().split()]
    # Backoff 0.2 s then 0.4 s, each times a jitter of at least 0.5: lower bounds only.
    assert t[1] - t[0] >= 0.1 and t[2] - t[1] >= 0.2, t


def test_retries_stop_at_the_attempt_limit(daemon) -> None:
    with daemon.client() as c:
        r = c.run("bash", command="exit 3", retries=2, retry_on=["failed"], retry_backoff=0)
    assert r.status == "failed" and r.exit_code == 3 and r.attempts == 3


def test_a_failure_is_not_retried_unless_asked(daemon) -> None:
    with daemon.client() as c:
        r = c.run("bash", command="exit 3", retries=2, retry_backoff=0)
    assert r.status == "failed" and r.attempts == 1


def test_a_task_that_kills_its_workers_fails_as_poison(start_daemon) -> None:
    d = start_daemon(pools={"bash": {"min_workers": 2, "max_workers": 2, "crash_limit": 100, "retry_backoff": 0}})
    with d.client() as c:
        with pytest.raises(ToolError) as info:
            # $PPID is the worker: the command kills whoever runs it.
            c.run("bash", command="kill -9 $PPID; sleep 5", retries=10)
    result = info.value.result
    assert result.status == "failed" and result.error_code == "poison" and result.attempts == 3
    assert "3 workers in a row died" in result.error
    wait_until(lambda: d.pool("bash")["ready"] == 2, 30, "the pool to be back at strength")
    with d.client() as c:
        assert c.run("bash", command="echo alive").stdout == "alive\n"


def test_cancel_a_whole_session(start_daemon) -> None:
    d = start_daemon(pools={"bash": {"min_workers": 2, "max_workers": 2}})
    with d.client() as c:
        doomed = [c.submit("bash", command="sleep 300", session="doomed") for _ in range(6)]
        kept = c.submit("bash", command="echo kept", session="other")
        wait_running(c, count=2, session="doomed", what="two doomed tasks to run")
        body = c.cancel(session="doomed")
        assert sorted(body["cancelled"]) == sorted(f.id for f in doomed)
        assert all(f.result(timeout=30).status == "cancelled" for f in doomed)
        assert kept.result(timeout=30).stdout == "kept\n"
        wait_until(lambda: not c.ps(), 10, "nothing left running")


def test_cancel_everything_a_client_submitted(start_daemon) -> None:
    d = start_daemon(pools={"bash": {"min_workers": 1, "max_workers": 1}})
    with d.client() as mine, d.client() as theirs:
        other = theirs.submit("bash", command="sleep 0.5; echo theirs")
        own = [mine.submit("bash", command="sleep 300") for _ in range(3)]
        body = mine.cancel(everything=True)
        assert sorted(body["cancelled"]) == sorted(f.id for f in own)
        assert all(f.result(timeout=30).status == "cancelled" for f in own)
        assert other.result(timeout=30).stdout == "theirs\n"


def test_a_repeated_idempotency_key_gets_the_first_result(daemon, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    command = f"echo run >> {runs}; wc -l < {runs}"
    with daemon.client() as c:
        first = c.run("bash", command=command, idempotency_key="k1")
        again = c.run("bash", command=command, idempotency_key="k1")
        # A repeat while the first is still running waits for its result.
        slow = f"sleep 0.5; {command}"
        f1 = c.submit("bash", command=slow, idempotency_key="k2")
        f2 = c.submit("bash", command=slow, idempotency_key="k2")
        r1, r2 = f1.result(timeout=60), f2.result(timeout=60)
        with pytest.raises(InvalidRequest, match="with other arguments"):
            c.run("bash", command="echo something else", idempotency_key="k1")
    assert first.stdout == again.stdout == "1\n" and again.id != first.id
    assert r1.stdout == r2.stdout == "2\n" and r2.id == f2.id
    assert runs.read_text().split() == ["run", "run"]  # ran twice, for four requests


def test_repeats_waiting_for_a_running_task_are_bounded(daemon, tmp_path: Path) -> None:
    """Each waiting repeat of an idempotency key gets its own copy of the result when it
    comes; past MAX_FOLLOWERS (64) more repeats are refused rather than multiplied."""
    go = tmp_path / "go"
    command = f"while [ ! -e {go} ]; do sleep 0.05; done; head -c 1000 /dev/zero"
    with daemon.client() as c:
        first = c.submit("bash", command=command, idempotency_key="many")
        repeats, refused = [], 0
        for _ in range(80):
            try:
                repeats.append(c.submit("bash", command=command, idempotency_key="many"))
            except QueueFull as exc:
                assert "repeats of idempotency key 'many' already wait" in str(exc)
                refused += 1
        go.touch()   # the first may finish now: every repeat that waited gets the result
        results = [f.result(timeout=60) for f in repeats]
        assert first.result(timeout=60).stdout_bytes == 1000
    assert (len(repeats), refused) == (64, 16)
    assert all(r.stdout_bytes == 1000 for r in results)


def test_a_client_over_its_output_budget_does_not_hold_up_a_shared_session(start_daemon) -> None:
    """Client X stops reading and goes over budget with a task queued in session "s"; client Y's
    task in "s", queued behind it, runs: X's tasks wait, the session's others keep their order."""
    d = start_daemon(pools={"echo": {"min_workers": 1, "max_workers": 1},
                            "bash": {"min_workers": 1, "max_workers": 2, "credit": 1}})
    ctx = zmq.Context()
    x = silent_client(ctx, d.runtime_dir)
    try:
        # Results of 1 MB that X never reads fill its budget; its remaining tasks then wait.
        x.send(codec.encode(m.Submit(1, [m.TaskSpec(f"x-{i}", "bash", {"command": "head -c 1000000 /dev/zero"})
                                         for i in range(60)])))
        with d.client() as c:
            wait_until(lambda: c.status()["output"]["clients_over_budget"], 60, "client X to be over its budget")
            x.send(codec.encode(m.Submit(2, [m.TaskSpec("x-in-s", "bash", {"command": "true"}, session="s")])))
            wait_until(lambda: _state(c, "x-in-s") == "queued", 30, "X's task in session s to queue")
            mine = [c.submit("bash", command=f"echo y{i}", session="s") for i in range(3)]
            assert [f.result(timeout=60).stdout for f in mine] == ["y0\n", "y1\n", "y2\n"]
            assert _state(c, "x-in-s") == "queued"   # X's still waits for X to read
    finally:
        x.close()
        ctx.term()


def _state(c, task_id: str) -> str | None:
    """A task's state; None until parad has it (another client's Submit may still be on its way)."""
    try:
        return c.task(task_id)["task"]["state"]
    except InvalidRequest as exc:
        if exc.code != "not_found":
            raise
        return None
