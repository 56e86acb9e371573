"""When parad commits its journal: when a client waits for it, else within commit_interval.

A real parad; what it committed is read from its status (`journal.commits`)
and from the journal itself.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

from para.testing import Daemon, wait_until

BASH = {"bash": {"min_workers": 1, "max_workers": 1}}


def journal_rows(d: Daemon, sql: str, *args: Any) -> list[tuple]:
    with sqlite3.connect(d.state_dir / "journal.sqlite3") as db:
        return db.execute(sql, args).fetchall()


def test_a_run_costs_one_commit_its_row_written_once_with_its_end(start_daemon) -> None:
    # A run() is not acknowledged before its Done, and a task with a retry left may run twice: its
    # acceptance need not be committed on its own. A command (not echo) so that its Done never comes
    # within the turn that dispatched it; commit_interval 1 s, far more than `true` takes even under load.
    d = start_daemon(pools=BASH, daemon={"journal": {"commit_interval": 1.0}})
    n = 20
    with d.client() as c:
        c.run("bash", argv=["true"], retries=1)
        before = c.status()["journal"]
        ids = [c.run("bash", argv=["true"], retries=1).id for _ in range(n)]
        after = c.status()["journal"]
    # One each (a few more if a run outlasts commit_interval); two each when the acceptance was committed alone.
    commits = after["commits"] - before["commits"]
    assert commits <= n * 1.25, f"{commits} commits for {n} runs"
    assert after["rows_written"] - before["rows_written"] <= n * 1.25
    rows = journal_rows(d, f"SELECT state, history FROM tasks WHERE id IN ({','.join('?' * n)})", *ids)
    assert len(rows) == n and all(state == "succeeded" for state, _ in rows)
    assert all([line.split()[1] for line in history.splitlines()] == ["queued", "running", "succeeded"]
               for _, history in rows)


def test_an_unacknowledged_task_is_committed_within_commit_interval(start_daemon) -> None:
    # Nothing waits for this commit (run() sends no ack, and the task may run twice): a timer brings it.
    d = start_daemon(pools=BASH, daemon={"journal": {"commit_interval": 0.2}})
    with d.client() as c:
        box: list[Any] = []
        runner = threading.Thread(target=lambda: box.append(c.run("bash", command="sleep 2", retries=1)))
        runner.start()
        try:
            wait_until(lambda: journal_rows(d, "SELECT state FROM tasks WHERE pool = 'bash'"), 20,
                       "the run's row to be committed without anything else happening")
        finally:
            runner.join(60)
    assert box and box[0].ok
