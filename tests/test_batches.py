"""Batches through a real daemon: dependency order, references, refusals, failure policies, cancel."""

from __future__ import annotations

from pathlib import Path

import pytest

from para.client import InvalidRequest
from para.testing import wait_running, wait_until

ONE_BASH = {"bash": {"min_workers": 1, "max_workers": 1, "credit": 1}, "echo": {"min_workers": 1, "max_workers": 1},
            "glob": {"min_workers": 1, "max_workers": 1}}


def test_dependencies_order_the_tasks_and_references_carry_output(start_daemon, tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_text("1")
    (tmp_path / "two.txt").write_text("2")
    d = start_daemon(pools={**ONE_BASH, "bash": {"min_workers": 2, "max_workers": 2}})
    with d.client() as c:
        h = c.batch({"tasks": [
            {"id": "a", "tool": "bash", "args": {"command": "sleep 0.2; echo A"}},
            {"id": "b", "tool": "bash", "after": ["a"], "args": {"command": "echo ${a.stdout}B"}},
            {"id": "c", "tool": "bash", "after": ["a"], "args": {"command": "echo ${a.stdout}C"}},
            {"id": "d", "tool": "bash", "after": ["b", "c"], "args": {"command": "echo ${b.stdout}+${c.stdout}"}},
            {"id": "files", "tool": "glob", "args": {"patterns": ["*.txt"], "root": str(tmp_path)}},
            {"id": "echo", "tool": "echo", "after": ["files", "d"],
             "args": {"files": "${files.value.files}", "count": "${files.value.count}", "text": "d said ${d.stdout}"}},
        ]})
        results = h.results(timeout=60)
        progress = h.progress()
    assert results["d"].stdout == "AB+AC\n"
    assert results["echo"].value == {"files": ["one.txt", "two.txt"], "count": 2, "text": "d said AB+AC"}
    assert progress["complete"] and progress["done"] == 6 and progress["failed"] == 0 and progress["eta"] == 0.0


@pytest.mark.parametrize(("tasks", "message"), [
    ([{"id": "a", "tool": "echo", "after": ["c"]}, {"id": "b", "tool": "echo", "after": ["a"]},
      {"id": "c", "tool": "echo", "after": ["b"]}, {"id": "free", "tool": "echo"}], "dependency cycle among a, b, c"),
    ([{"id": "a", "tool": "echo"}, {"id": "a", "tool": "echo"}], "duplicate task ids a"),
    ([{"id": "a", "tool": "echo", "after": ["ghost", "phantom"]}], "unknown task ids ghost, phantom"),
    ([{"id": "a", "tool": "echo"}, {"id": "b", "tool": "echo", "args": {"x": "${a.stdout}"}}],
     "task b refers to a, which it does not wait for"),
    ([{"id": "a", "tool": "nope"}], "unknown tool 'nope'"),
    ([{"id": "a", "tool": "bash", "args": {"command": 5}}], "command"),
])
def test_a_malformed_batch_is_refused_before_anything_runs(start_daemon, tasks, message, tmp_path: Path) -> None:
    d = start_daemon(pools=ONE_BASH)
    with d.client() as c:
        with pytest.raises(InvalidRequest, match=message):
            c.batch({"tasks": tasks})
        assert c.ps() == [] and c.status()["tasks"].get("succeeded", 0) == 0


def test_fail_fast_skips_what_has_not_started(start_daemon) -> None:
    d = start_daemon(pools=ONE_BASH)
    with d.client() as c:
        h = c.batch({"on_failure": "fail_fast", "tasks": [
            {"id": "bad", "tool": "bash", "priority": 0, "args": {"command": "exit 4"}},
            {"id": "x", "tool": "bash", "args": {"command": "echo x"}},
            {"id": "y", "tool": "bash", "after": ["x"], "args": {"command": "echo y"}},
        ]})
        results = h.results(timeout=60)
    assert results["bad"].status == "failed" and results["bad"].exit_code == 4
    assert results["x"].status == "skipped" and results["y"].status == "skipped"
    assert "fail_fast after bad failed" in results["x"].error
    assert not h.ok


def test_continue_runs_everything_whose_dependencies_succeeded(start_daemon) -> None:
    d = start_daemon(pools=ONE_BASH)
    with d.client() as c:
        h = c.batch({"on_failure": "continue", "tasks": [
            {"id": "bad", "tool": "bash", "args": {"command": "exit 4"}},
            {"id": "child", "tool": "bash", "after": ["bad"], "args": {"command": "echo never"}},
            {"id": "grandchild", "tool": "bash", "after": ["child"], "args": {"command": "echo never"}},
            {"id": "other", "tool": "bash", "args": {"command": "echo other"}},
            {"id": "after_other", "tool": "bash", "after": ["other"], "args": {"command": "echo ${other.stdout} too"}},
        ]})
        results = h.results(timeout=60)
        progress = h.progress()
    assert results["child"].status == "skipped" and "depends on bad failed" in results["child"].error
    assert results["grandchild"].status == "skipped"
    assert results["after_other"].stdout == "other too\n"
    assert progress["failed"] == 1 and progress["skipped"] == 2 and progress["error_rate"] == 0.2


@pytest.mark.parametrize("policy", ["fail_fast", "continue"])
def test_releases_that_cannot_start_end_each_task_once(start_daemon, policy: str) -> None:
    # One success releases four tasks; two of them cannot start (their reference names
    # nothing). Each task must end once, and the pool's queue must count nothing left.
    d = start_daemon(pools=ONE_BASH)
    with d.client() as c:
        h = c.batch({"on_failure": policy, "tasks": [
            {"id": "a", "tool": "echo", "args": {"n": 1}},
            {"id": "b", "tool": "echo", "after": ["a"], "args": {"x": "${a.value.nope}"}},
            {"id": "c", "tool": "echo", "after": ["a"], "args": {"x": "${a.value.nope}"}},
            {"id": "d", "tool": "echo", "after": ["a"], "args": {"n": "${a.value.n}"}},
            {"id": "e", "tool": "echo", "after": ["d"], "args": {"n": 2}},
        ]})
        results = h.results(timeout=60)
        status = {p["name"]: p for p in c.status()["pools"]}
        counts = c.status()["tasks"]
    statuses = {name: r.status for name, r in results.items()}
    if policy == "fail_fast":
        assert statuses == {"a": "succeeded", "b": "failed", "c": "skipped", "d": "skipped", "e": "skipped"}
        assert "fail_fast after b failed" in results["c"].error
    else:
        assert statuses == {"a": "succeeded", "b": "failed", "c": "failed", "d": "succeeded", "e": "succeeded"}
    assert "cannot start" in results["b"].error and "'nope'" in results["b"].error
    assert status["echo"]["queued"] == 0 and counts["live"] == 0
    assert sum(counts.get(s, 0) for s in ("succeeded", "failed", "skipped")) == 5


def test_cancelling_a_running_batch_leaves_nothing_running(start_daemon, tmp_path: Path) -> None:
    d = start_daemon(pools={"bash": {"min_workers": 2, "max_workers": 2}})
    with d.client() as c:
        h = c.batch({"tasks": [
            *({"id": f"sleep{i}", "tool": "bash", "args": {"command": f"exec -a para-batch-{i} sleep 300"}} for i in range(4)),
            {"id": "last", "tool": "bash", "after": ["sleep0", "sleep1"], "args": {"command": "echo done"}},
        ]})
        wait_running(c, count=2, what="two sleeps to run")
        body = h.cancel()
        results = h.results(timeout=30)
        assert len(body["cancelled"]) == 5
        assert {r.status for r in results.values()} == {"cancelled"}
        wait_until(lambda: c.ps() == [], 10, "nothing live")
    wait_until(lambda: not [p for p in d.tree() if p.name() == "sleep"], 10, "the sleeps to be killed")
