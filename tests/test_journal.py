"""The journal: what parad keeps across a SIGKILL or a restart, and how it opens what it finds.

Real parads on one state directory, one after the other: the first is killed
with SIGKILL (or stopped with SIGTERM), the second recovers from the journal.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from para.daemon.config import JournalSection
from para.daemon.journal import opening, schema
from para.daemon.tasks import TaskRecord
from para.ipc import codec
from para.ipc import messages as m
from para.testing import Daemon, wait_until

ONE_BASH = {"bash": {"min_workers": 1, "max_workers": 1, "credit": 1}, "echo": {"min_workers": 1, "max_workers": 1}}


@pytest.fixture
def parads(start_daemon):
    """parads(pools, daemon) -> a Daemon; parads.again(d, kill=True, meanwhile=None) -> d restarted in
    place (same state and sockets) after it was killed (or stopped) and `meanwhile` was called."""

    class Parads:
        def __call__(self, pools: dict[str, Any] | None = None, daemon: dict[str, Any] | None = None) -> Daemon:
            return start_daemon(pools=pools or ONE_BASH, daemon=daemon)

        @staticmethod
        def again(d: Daemon, kill: bool = True, meanwhile: Callable[[], None] | None = None) -> Daemon:
            if kill:
                d.kill()
            else:
                assert d.stop() == 0
            if meanwhile is not None:
                meanwhile()
            d.restart()
            return d

    return Parads()


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def occupy_the_worker(c: Any, out: Path) -> Any:
    """A bash task that holds the pool's one worker (it says "blocker" in `out`), started."""
    blocker = c.submit("bash", command=f"echo blocker >> {out}; sleep 60")
    wait_until(lambda: lines(out) == ["blocker"], 20, "the blocker to start")
    return blocker


def test_a_finished_task_is_kept_with_its_history_and_found_after_a_kill(parads) -> None:
    d = parads()
    with d.client() as c:
        result = c.run("bash", command="echo kept")
        journal = c.status()["journal"]
        metrics = c.metrics()
    assert journal["durability"] == "batched" and journal["commits"] >= 1 and not journal["trouble"]
    assert "para_journal_commits_total" in metrics and "para_journal_unwritable 0.0" in metrics
    history = d.journal_rows("SELECT state, history FROM tasks WHERE id = ?", result.id)
    assert history[0][0] == "succeeded"
    assert [line.split()[1] for line in history[0][1].splitlines()] == ["queued", "running", "succeeded"]
    d = parads.again(d)
    with d.client() as c:
        found = c.task(result.id)
    assert found["task"]["state"] == "succeeded"
    assert found["result"].stdout == "kept\n"


def test_queued_tasks_come_back_in_order_and_a_running_command_is_lost_not_rerun(parads, tmp_path: Path) -> None:
    d = parads()
    out = tmp_path / "order"
    with d.client() as c:
        blocker = occupy_the_worker(c, out)
        queued = [c.submit("bash", command=f"echo {i} >> {out}") for i in range(5)]
        urgent = c.submit("bash", command=f"echo urgent >> {out}", priority=0)
        ids = [f.id for f in queued]
    d = parads.again(d)
    with d.client() as c:
        wait_until(lambda: c.task(ids[-1])["task"]["state"] == "succeeded", 30, "the queued tasks to run after the restart")
        lost = c.task(blocker.id)
    assert lines(out) == ["blocker", "urgent", "0", "1", "2", "3", "4"], "the blocker ran once; the rest in order"
    assert lost["task"]["state"] == "lost"
    assert "parad restarted while it ran" in lost["result"].error
    assert urgent.id in {r[0] for r in d.journal_rows("SELECT id FROM tasks WHERE state = 'succeeded'")}


def test_a_running_task_with_retries_runs_again_after_a_kill(parads, tmp_path: Path) -> None:
    d = parads()
    out = tmp_path / "runs"
    with d.client() as c:
        task = c.submit("bash", command=f"echo run >> {out}; sleep 2; echo done", retries=1)
        wait_until(lambda: lines(out) == ["run"], 20, "the first attempt to start")
    d = parads.again(d)
    with d.client() as c:
        wait_until(lambda: c.task(task.id)["task"]["state"] == "succeeded", 30, "the second attempt to finish")
        found = c.task(task.id)
    assert lines(out) == ["run", "run"]
    assert found["task"]["attempts"] == 2
    history = d.journal_rows("SELECT history FROM tasks WHERE id = ?", task.id)[0][0]
    assert [line.split()[1] for line in history.splitlines()] == ["queued", "running", "queued", "running", "succeeded"]
    assert found["result"].stdout == "done\n"


def spec_in_journal(d: Daemon, task_id: str) -> m.TaskSpec:
    return codec.decode(d.journal_rows("SELECT spec FROM tasks WHERE id = ?", task_id)[0][0])


def test_a_command_that_cannot_run_again_is_journaled_without_the_callers_environment(parads,
                                                                                     tmp_path: Path) -> None:
    # Its row is read back only to end it `lost` or show its summary: the caller's environment (tokens, keys)
    # has no business on disk then. A queued command may run again after a restart: its row keeps it.
    d = parads()
    env = {"PARA_TEST_SECRET": "s3cret-value"}
    with d.client() as c:
        ran = c.run("bash", command="echo ran", caller_env=env)   # no ack: its row is first written at its start
        out = tmp_path / "out"   # acked: written whole at its acceptance, then started
        blocker = c.submit("bash", command=f"echo blocker >> {out}; sleep 60", caller_env=env)
        wait_until(lambda: lines(out) == ["blocker"], 20, "the blocker to start")
        queued = c.submit("bash", command="echo queued", caller_env=env)
        wait_until(lambda: c.task(queued.id)["task"]["state"] == "queued", 30, "the command to be queued")
        assert spec_in_journal(d, queued.id).args["caller_env"] == env
        assert "caller_env" not in spec_in_journal(d, blocker.id).args
        c.cancel(blocker.id)
        assert queued.result(timeout=60).stdout == "queued\n"   # its Done leaves after the commit of its end
    assert ran.stdout == "ran\n"
    assert "caller_env" not in spec_in_journal(d, ran.id).args
    assert spec_in_journal(d, ran.id).args["command"] == "echo ran"
    assert "caller_env" not in spec_in_journal(d, queued.id).args


def test_a_graceful_restart_keeps_queued_tasks_instead_of_cancelling_them(parads, tmp_path: Path) -> None:
    d = parads(daemon={"shutdown_grace": 0.5})
    out = tmp_path / "graceful"
    with d.client() as c:
        occupy_the_worker(c, out)
        queued = c.submit("bash", command=f"echo queued >> {out}")
    d = parads.again(d, kill=False)
    with d.client() as c:
        wait_until(lambda: c.task(queued.id)["task"]["state"] == "succeeded", 30, "the queued task to run")
    assert lines(out) == ["blocker", "queued"]


def test_a_batch_resumes_with_its_dependencies_and_references(parads, tmp_path: Path) -> None:
    d = parads()
    out = tmp_path / "batch"
    with d.client() as c:
        blocker = occupy_the_worker(c, out)
        batch = c.batch({"tasks": [
            {"id": "a", "tool": "echo", "args": {"word": "hello"}},
            {"id": "b", "tool": "bash", "args": {"command": f"echo b-${{a.value.word}} >> {out}; echo from-b"},
             "after": ["a"]},
            {"id": "c", "tool": "bash", "args": {"command": f"echo c-${{b.stdout}} >> {out}"}, "after": ["b"]},
        ]})
        wait_until(lambda: c.task(f"{batch.id}:a")["task"]["state"] == "succeeded", 20, "a to finish")
        assert c.task(f"{batch.id}:c")["task"]["state"] == "pending"
    d = parads.again(d)
    with d.client() as c:
        wait_until(lambda: c.task(f"{batch.id}:c")["task"]["state"] == "succeeded", 30, "the batch to finish")
        assert c.task(blocker.id)["task"]["state"] == "lost"
        status = c._query("batch", batch.id)
    assert lines(out) == ["blocker", "b-hello", "c-from-b"]
    assert status["complete"] and status["done"] == 3


@pytest.mark.parametrize("durability", ["batched", "sync"])
def test_a_large_result_goes_to_a_file_and_back(parads, durability: str) -> None:
    d = parads(daemon={"journal": {"inline_bytes": 1024, "durability": durability}})
    with d.client() as c:
        big = c.run("bash", command="head -c 5000 /dev/zero | tr '\\0' x")
        small = c.run("bash", command="echo small")
    files = list((d.state_dir / "results").iterdir())
    assert len(files) == 1
    assert d.journal_rows("SELECT result IS NULL, result_file IS NOT NULL FROM tasks WHERE id = ?", big.id) == [(1, 1)]
    d = parads.again(d)
    with d.client() as c:
        assert c.task(big.id)["result"].stdout == "x" * 5000
        assert c.task(small.id)["result"].stdout == "small\n"
        gone = c._request(m.Prune(next(c._reqs), 0)).body
    assert gone["tasks"] >= 2 and gone["files"] == 1
    assert not list((d.state_dir / "results").iterdir())


def test_durability_off_keeps_no_journal_and_cancels_queued_work_on_stop(parads, tmp_path: Path) -> None:
    d = parads(daemon={"journal": {"durability": "off"}})
    with d.client() as c:
        done = c.run("echo", x=1)
        assert c.status()["journal"] == {"durability": "off"}
    assert not (d.state_dir / "journal.sqlite3").exists()
    d = parads.again(d)
    with d.client() as c, pytest.raises(Exception, match="no task"):
        c.task(done.id)


def test_a_second_parad_on_the_same_state_dir_is_refused(parads, tmp_path: Path) -> None:
    d = parads()
    proc = subprocess.run(
        [sys.executable, "-m", "para.daemon", "--config", str(d.config_path), "--runtime-dir", str(tmp_path / "rt2"),
         "--state-dir", str(d.state_dir)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "another parad uses the state directory" in proc.stderr


def _v1_journal(path: Path, task_id: str) -> None:
    """A journal as a parad of schema version 1 left it: one finished task."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    schema.migrate(conn, 1)
    result = m.TaskResult(task_id, "echo", m.SUCCEEDED, value={"old": True})
    conn.execute("INSERT INTO tasks (id, pool, state, attempts, max_attempts, retry_on, spec, accepted, ended, result, size) "
                 "VALUES (?, 'echo', 'succeeded', 1, 3, 'lost', ?, ?, ?, ?, 10)",
                 (task_id, codec.encode(m.TaskSpec(task_id, "echo", {})), time.time(), time.time(),
                  codec.encode(m.Done(result))))
    conn.close()


def test_an_older_journal_is_migrated_and_its_tasks_are_kept(parads) -> None:
    d = parads()
    path = d.state_dir / "journal.sqlite3"

    def put_an_old_journal() -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        _v1_journal(path, "old-task")

    d = parads.again(d, kill=False, meanwhile=put_an_old_journal)
    with d.client() as c:
        assert c.task("old-task")["result"].value == {"old": True}
    assert f"schema version 1 migrated to {schema.VERSION}" in d.log(this_run=True)
    assert d.journal_rows("PRAGMA user_version") == [(schema.VERSION,)]


def test_a_journal_of_a_newer_parad_is_moved_aside(parads) -> None:
    d = parads()

    def make_it_newer() -> None:
        with sqlite3.connect(d.state_dir / "journal.sqlite3") as db:
            db.execute(f"PRAGMA user_version = {schema.VERSION + 1}")

    d = parads.again(d, kill=False, meanwhile=make_it_newer)
    assert "moved it aside" in d.log(this_run=True) and f"schema version {schema.VERSION + 1}" in d.log(this_run=True)
    assert list(d.state_dir.glob("journal.sqlite3.unreadable-*"))
    with d.client() as c:
        assert c.run("echo", x=1).value == {"x": 1}


@pytest.mark.parametrize("durability", ["off", "batched"])
def test_retained_results_live_in_the_journal_not_in_parads_memory(parads, durability: str) -> None:
    """With the journal, 60 MB of finished results leave parad's memory; with durability off,
    its in-memory retention (finished_task_bytes: 64 MiB) keeps them. Same tasks, both ways."""
    import psutil
    d = parads(pools={"echo": {"min_workers": 1, "max_workers": 1}}, daemon={"journal": {"durability": durability}})
    blob = "x" * 200_000
    with d.client() as c:
        list(c.map("echo", ({"n": i, "blob": blob} for i in range(10))))
        before = psutil.Process(d.pid).memory_info().rss
        results = c.map("echo", ({"n": i, "blob": blob} for i in range(300)))
        assert sum(1 for r in results if r.value["n"] >= 0) == 300
        grown = psutil.Process(d.pid).memory_info().rss - before
        # The last rows of untold tasks follow their Dones within a moment (journal/store.py QUIET_WAIT).
        wait_until(lambda: c.status()["retained"]["results"] >= 300, 10, "the results to be retained")
        kept = c.status()["retained"]
    assert kept["results"] >= 300 and kept["bytes"] >= 300 * 200_000
    # Seen here: batched 22-35 MiB (results in flight to the client), off 121-127 MiB.
    if durability == "batched":
        assert grown < 64 << 20, f"parad grew by {grown >> 20} MiB holding results the journal keeps"
    else:
        assert grown > 80 << 20, f"parad grew by {grown >> 20} MiB: the in-memory retention this test contrasts with"


def test_the_journal_and_its_wal_are_private(parads) -> None:
    # They hold every task's command and output: 0600 like the journal, whatever the state dir's mode.
    d = parads()
    with d.client() as c:
        c.run("echo", secret=1)
        files = [d.state_dir / f"journal.sqlite3{suffix}" for suffix in ("", "-wal", "-shm")]
        assert {f.name: oct(f.stat().st_mode & 0o777) for f in files} == {f.name: "0o600" for f in files}


def test_an_id_reused_before_the_commit_is_journaled_with_its_own_spec(tmp_path: Path) -> None:
    # Task x ends and, in the same group commit, another client submits a new task x (its id is free
    # again): a crash then must recover the new x, not run the old x's command a second time. The
    # window is a few milliseconds in a real parad, so this drives a real Journal directly.
    journal = opening.open_journal(tmp_path, JournalSection())
    try:
        old = TaskRecord(m.TaskSpec(id="x", tool="bash", args={"command": "echo old >> marks"}), "bash", b"a", 1)
        journal.changed(old)
        assert journal.commit()
        old.state, old.ended, old.result = m.SUCCEEDED, time.time(), m.TaskResult("x", "bash", m.SUCCEEDED)
        journal.keep(old, codec.encode(m.Done(old.result)))
        journal.changed(TaskRecord(m.TaskSpec(id="x", tool="bash", args={"command": "echo new"}), "bash", b"b", 1))
        assert journal.commit()
        assert [(r.spec.id, r.spec.args, r.state) for r in journal.live_records()] == \
            [("x", {"command": "echo new"}, m.QUEUED)]
        assert journal.conn.execute("SELECT result FROM tasks WHERE id = 'x'").fetchone() == (None,)
    finally:
        journal.close()


def test_an_idempotency_key_is_remembered_across_a_kill(parads, tmp_path: Path) -> None:
    # A caller repeats a request after parad died (the reason keys exist): within the window it gets the
    # first task's result, whether that had ended or was still queued, and the command does not run again.
    marks, go = tmp_path / "marks", tmp_path / "go"
    d = parads()
    with d.client() as c:
        first = c.run("bash", command=f"echo done >> {marks}; echo first", idempotency_key="deploy-1")
        c.submit("bash", command=f"while [ ! -e {go} ]; do sleep 0.05; done")   # holds the one bash worker
        queued = c.submit("bash", command=f"echo queued >> {marks}; echo second", idempotency_key="deploy-2")
        wait_until(lambda: c.task(queued.id)["task"]["state"] == "queued", 30, "the keyed task to be queued")
    d = parads.again(d)
    go.touch()
    with d.client() as c:
        again = c.run("bash", command=f"echo done >> {marks}; echo first", idempotency_key="deploy-1")
        second = c.run("bash", command=f"echo queued >> {marks}; echo second", idempotency_key="deploy-2")
    assert (again.stdout, second.stdout) == (first.stdout, "second\n")
    assert lines(marks) == ["done", "queued"]


def test_a_keyed_task_that_cannot_be_read_back_does_not_stop_parad(parads) -> None:
    d = parads()
    with d.client() as c:
        task_id = c.run("echo", x=1, idempotency_key="k").id

    def spoil_its_spec() -> None:
        with sqlite3.connect(d.state_dir / "journal.sqlite3") as db:
            db.execute("UPDATE tasks SET spec = x'c1c1c1' WHERE id = ?", (task_id,))

    d = parads.again(d, kill=False, meanwhile=spoil_its_spec)
    assert f"task {task_id} cannot be read back" in d.log()
    with d.client() as c:
        assert c.run("echo", x=1, idempotency_key="k").value == {"x": 1}   # the key is forgotten: it runs
