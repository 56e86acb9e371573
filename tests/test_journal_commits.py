"""What parad's journal writes, and when: a retry-safe task accepted without an ack, with its end.

A real parad; what it committed is read from its status (`journal.commits`)
and from the journal itself. Waits of a second are driven on a real Journal.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from para.daemon.config import JournalSection
from para.daemon.journal import opening
from para.daemon.journal.store import QUIET_WAIT, UNTOLD_WAIT
from para.daemon.tasks import TaskRecord
from para.ipc import codec
from para.ipc import messages as m
from para.testing import wait_until


def test_an_echo_run_costs_at_most_one_commit_its_row_written_once_after_its_end(start_daemon) -> None:
    # run() asks no ack, and echo may run again after a crash: its row waits for its end instead of
    # being committed at its acceptance too, and its Done does not wait for that commit (several
    # runs' rows may share one). commit_interval 0: every turn commits what changed.
    d = start_daemon(pools={"echo": {"min_workers": 1, "max_workers": 1}}, daemon={"journal": {"commit_interval": 0}})
    n = 20
    with d.client() as c:
        c.run("echo", x=0)
        before = c.status()["journal"]
        ids = [c.run("echo", x=i).id for i in range(n)]
        query = f"SELECT state, history FROM tasks WHERE id IN ({','.join('?' * n)})"
        wait_until(lambda: len(d.journal_rows(query, *ids)) == n, 10, "every run's row to be written")
        after = c.status()["journal"]
    # At most one each (a few more if a run outlasts a second); two each when the acceptance was committed alone.
    commits = after["commits"] - before["commits"]
    assert commits <= n * 1.25, f"{commits} commits for {n} runs"
    assert after["rows_written"] - before["rows_written"] <= n * 1.25
    rows = d.journal_rows(query, *ids)
    assert len(rows) == n and all(state == "succeeded" for state, _ in rows)
    assert all([line.split()[1] for line in history.splitlines()] == ["queued", "running", "succeeded"]
               for _, history in rows)


def test_each_task_of_a_map_is_written_once_with_its_end(start_daemon) -> None:
    # map() asks no ack: a task's row waits for its end (up to UNTOLD_WAIT) instead of being written
    # at its acceptance and again at its end, two commits apart.
    d = start_daemon(pools={"echo": {"min_workers": 1, "max_workers": 1}})
    n = 300
    with d.client() as c:
        c.run("echo", x=0)
        before = c.status()["journal"]["rows_written"]
        results = list(c.map("echo", ({"i": i} for i in range(n))))
        wait_until(lambda: d.journal_rows("SELECT count(*) FROM tasks WHERE state = 'succeeded'")[0][0] == n + 1,
                   10, "every task's row to be written")
        rows = c.status()["journal"]["rows_written"] - before
    assert all(r.ok for r in results)
    assert rows <= n * 1.25, f"{rows} rows written for {n} tasks (one each expected)"


def test_an_untold_task_is_written_after_untold_wait_or_with_its_end(tmp_path: Path) -> None:
    # The waits are a second long in a real parad; this drives a real Journal, its clock moved by
    # ageing the records.
    journal = opening.open_journal(tmp_path, JournalSection())
    try:
        def task(task_id: str) -> TaskRecord:
            record = TaskRecord(m.TaskSpec(id=task_id, tool="echo", args={}), "echo", b"a", 3)
            journal.changed(record)
            journal.untold(record)
            return record

        def written() -> list[tuple[str, str]]:
            return journal.conn.execute("SELECT id, state FROM tasks ORDER BY id").fetchall()

        old, young, ends = task("old"), task("young"), task("ends")
        assert journal.commit() and written() == []
        assert 0 < journal.due_in() <= UNTOLD_WAIT
        old.submitted -= UNTOLD_WAIT
        assert journal.due_in() <= 0
        ends.state, ends.ended, ends.result = m.SUCCEEDED, time.time(), m.TaskResult("ends", "echo", m.SUCCEEDED)
        journal.keep(ends, codec.encode(m.Done(ends.result)))
        assert journal.commit()
        assert written() == [("ends", "succeeded"), ("old", "queued")]
        journal.close()   # the rest goes with the last commit
        journal = opening.open_journal(tmp_path, JournalSection())
        assert [r.spec.id for r in journal.live_records()] == ["old", "young"]
    finally:
        journal.close()


def test_a_task_reusing_an_id_in_the_same_commit_is_written_at_once(tmp_path: Path) -> None:
    # Its row replaces the ended task's at this commit, which releases that task's Done: waiting,
    # a crash would leave neither.
    journal = opening.open_journal(tmp_path, JournalSection())
    try:
        first = TaskRecord(m.TaskSpec(id="x", tool="echo", args={"n": 1}), "echo", b"a", 3)
        journal.changed(first)
        assert journal.commit()
        first.state, first.ended, first.result = m.SUCCEEDED, time.time(), m.TaskResult("x", "echo", m.SUCCEEDED)
        journal.keep(first, codec.encode(m.Done(first.result)))
        again = TaskRecord(m.TaskSpec(id="x", tool="echo", args={"n": 2}), "echo", b"b", 3)
        journal.changed(again)
        journal.untold(again)
        assert journal.commit()
        assert [(r.spec.id, r.spec.args, r.state) for r in journal.live_records()] == [("x", {"n": 2}, m.QUEUED)]
    finally:
        journal.close()


def _untold_task(journal: Any, task_id: str) -> TaskRecord:
    record = TaskRecord(m.TaskSpec(id=task_id, tool="echo", args={}), "echo", b"a", 3)
    journal.changed(record)
    journal.untold(record)
    return record


def _end(journal: Any, record: TaskRecord) -> bool:
    record.state, record.ended = m.SUCCEEDED, time.time()
    record.result = m.TaskResult(record.spec.id, "echo", m.SUCCEEDED, value={"id": record.spec.id})
    wire = codec.encode(m.Done(record.result))
    record.size = len(wire)
    return journal.keep(record, wire)


def test_the_end_of_an_untold_task_is_told_at_once_and_written_within_quiet_wait(tmp_path: Path) -> None:
    # Nobody was told of the task and it may run again: its Done need not wait for a commit (keep
    # says False), and its row follows within QUIET_WAIT, or with the next commit that happens anyway.
    journal = opening.open_journal(tmp_path, JournalSection())
    try:
        def written() -> list[str]:
            return [i for (i,) in journal.conn.execute("SELECT id FROM tasks WHERE ended IS NOT NULL ORDER BY id")]

        a, b = _untold_task(journal, "a"), _untold_task(journal, "b")
        assert journal.commit() and written() == []
        assert _end(journal, a) is False
        assert journal.commit() and written() == []
        assert journal.lookup("a")["result"].value == {"id": "a"}   # findable meanwhile
        assert codec.decode(journal.done_frame("a")).result.status == m.SUCCEEDED
        assert 0 < journal.due_in() <= QUIET_WAIT
        journal._quiet_since -= QUIET_WAIT
        assert journal.due_in() <= 0
        assert journal.commit() and written() == ["a"]
        assert _end(journal, b) is False
        told = _untold_task(journal, "c")
        journal.changed(told)   # a change that must be written (e.g. a start kept): b's row joins its commit
        assert journal.commit() and written() == ["a", "b"]
        assert _end(journal, told) is True   # it has a row: its end waits for the commit that updates it
    finally:
        journal.close()


def test_with_sync_durability_every_end_waits_for_its_commit(tmp_path: Path) -> None:
    journal = opening.open_journal(tmp_path, JournalSection(durability="sync"))
    try:
        assert _end(journal, _untold_task(journal, "a")) is True
        assert journal.commit()
        assert journal.conn.execute("SELECT state FROM tasks WHERE id = 'a'").fetchall() == [("succeeded",)]
    finally:
        journal.close()


def test_an_untold_end_waiting_for_its_row_is_replaced_by_a_task_reusing_its_id(tmp_path: Path) -> None:
    journal = opening.open_journal(tmp_path, JournalSection())
    try:
        assert _end(journal, _untold_task(journal, "x")) is False
        again = TaskRecord(m.TaskSpec(id="x", tool="echo", args={"n": 2}), "echo", b"b", 3)
        journal.changed(again)
        assert journal.commit()
        assert [(r.spec.id, r.spec.args, r.state) for r in journal.live_records()] == [("x", {"n": 2}, m.QUEUED)]
        assert journal.commit(everything=True)   # the ended one's row never overwrites the new one's
        assert [(r.spec.id, r.state) for r in journal.live_records()] == [("x", m.QUEUED)]
    finally:
        journal.close()


def test_a_command_submitted_without_an_ack_is_written_at_its_start_and_its_end(start_daemon) -> None:
    # map() asks no ack: a bash task's first write waits for its start (which must be kept before it
    # leaves: bash may not run twice) instead of being written queued first. Most of these wait
    # in the queue (one worker, credit 4), so a write at acceptance would make three per task.
    d = start_daemon(pools={"bash": {"min_workers": 1, "max_workers": 1, "credit": 4}})
    n = 40
    with d.client() as c:
        c.run("bash", command="true")
        before = c.status()["journal"]["rows_written"]
        results = list(c.map("bash", ({"command": "true"} for _ in range(n))))
        rows = c.status()["journal"]["rows_written"] - before
    assert all(r.ok for r in results)
    assert rows <= n * 2.25, f"{rows} rows written for {n} commands (two each expected: start, end)"
    histories = d.journal_rows("SELECT history FROM tasks WHERE pool = 'bash'")
    assert len(histories) == n + 1
    assert all([line.split()[1] for line in h.splitlines()] == ["queued", "running", "succeeded"]
               for (h,) in histories)


def test_a_start_that_may_run_again_rewrites_a_row_written_queued(tmp_path: Path) -> None:
    # A command with retries left, written while it waited queued: its start is not committed before
    # it leaves (a crash may run it again), but its row follows with the next commit. Left saying
    # queued, a crash gave the lost attempt back: it ran again as attempt 1 of 2, not as attempt 2.
    journal = opening.open_journal(tmp_path, JournalSection())
    try:
        record = TaskRecord(m.TaskSpec(id="c", tool="bash", args={}, retries=1), "bash", b"a", 2)
        journal.changed(record)
        assert journal.commit()
        record.attempts, record.state = 1, m.RUNNING
        assert journal.record_starts([record]) and journal.commits == 1   # not a commit of its own
        assert journal.commit()
        journal.close()   # parad dies with the task running
        journal = opening.open_journal(tmp_path, JournalSection())
        assert [(r.spec.id, r.state, r.attempts) for r in journal.live_records()] == [("c", m.RUNNING, 1)]
    finally:
        journal.close()
