"""Chaos: parad and its workers killed with real signals, and what is left afterwards."""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import random
import re
import signal
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from para.client import Client, InvalidRequest
from para.testing import FAST, Daemon, marked, mount_tmpfs, stop_and_check, unmount, wait_until

# A command, a background child, and a grandchild that left for a session of its own:
# each found by its argv[0] tag, whatever pid namespace it runs in.
TAGS = ("chaos-main", "chaos-child", "chaos-grandchild")
TREE = ("(setsid bash -c 'exec -a chaos-grandchild sleep 300' &); (exec -a chaos-child sleep 300) & "
        "exec -a chaos-main sleep 300")


def _tagged() -> dict[str, list[int]]:
    return {tag: pids for tag in TAGS if (pids := marked(tag))}


@pytest.mark.parametrize("isolation", ["namespaces", "none"])
def test_sigkilled_parad_takes_every_command_tree_with_it_and_a_new_one_serves(start_daemon, isolation: str) -> None:
    d = start_daemon(pools={"bash": {"min_workers": 2, "max_workers": 2,
                                     "options": {"sandbox": {"isolation": isolation}}}})
    with d.client() as c:
        c.submit("bash", command=TREE)
        wait_until(lambda: len(_tagged()) == len(TAGS), 30, f"{', '.join(TAGS)} to run")
        d.kill()   # raises unless the fork server, the workers and all they ran are gone
    wait_until(lambda: not _tagged(), 20, "every tagged command to die with parad")
    d.restart()   # its stale sockets and lock file left where they were
    with d.client() as c:
        assert c.run("bash", command="echo again").stdout == "again\n"


# ---- the journal: nothing accepted is lost when parad dies ------------------------------------

CREDIT = 4   # each worker drives up to 4 commands at once: a worker's death costs all it drove
BASH = {"bash": {"min_workers": 2, "max_workers": 4, "credit": CREDIT}}
RESTARTED = "parad restarted while it ran"


def ran(out: Path) -> collections.Counter:
    """How many times each task wrote its line to `out`."""
    return collections.Counter(out.read_text().split()) if out.exists() else collections.Counter()


def results_by_id(c: Client, ids: list[str], timeout: float = 120) -> dict[str, dict[str, Any]]:
    """Each task's {"task", "result"} once every one of `ids` has its result, asked of the
    daemon by id (a task a restarted parad does not know raises NotFound: it was lost)."""
    found: dict[str, dict[str, Any]] = {}

    def all_done() -> bool:
        for task_id in [i for i in ids if i not in found]:
            body = c.task(task_id)
            if body["result"] is not None:
                found[task_id] = body
        return len(found) == len(ids)
    wait_until(all_done, timeout, f"all {len(ids)} tasks to have a result")
    return found


def every_result(d: Daemon, batch: Any) -> dict[str, dict[str, Any]]:
    """Every result of `batch`, from the client that submitted it (which resumes by itself after a
    restart) and by id from a new one; the two agree. By id, as results_by_id returns them."""
    results = batch.results(timeout=120)
    with d.client() as c:
        found = results_by_id(c, [f.id for f in batch.futures.values()])
    assert {f"{batch.id}:{name}": r.status for name, r in results.items()} == {
        task_id: body["task"]["state"] for task_id, body in found.items()}
    return found


def check_ran_once(found: dict[str, dict[str, Any]], counts: collections.Counter, retries: int) -> collections.Counter:
    """Every task ended once, in a state its line count agrees with; the count of each final state."""
    states = collections.Counter()
    for task_id, body in found.items():
        state, result, lines = body["task"]["state"], body["result"], counts[task_id.rsplit(":", 1)[-1]]
        states[state] += 1
        assert result.status == state, (task_id, state, result.status)
        if state == "succeeded":
            assert 1 <= lines <= 1 + retries, f"{task_id} succeeded after writing {lines} lines"
        elif state == "lost":
            assert lines <= 1, f"{task_id} ran {lines} times and was lost"
            assert RESTARTED in result.error or "killed by SIGKILL" in result.error, result.error
        elif state == "skipped":
            assert lines == 0, f"{task_id} was skipped but ran {lines} times"
        else:
            raise AssertionError(f"{task_id} ended {state}: {result.error}")
    return states


LONG = ("t5", "t6")   # their first attempt sleeps: they are surely running when parad is killed


def command(name: str, out: Path) -> str:
    line = f"echo {name} >> {out}"
    if name in LONG:
        return f"{line}; [ -e {out}.{name} ] || {{ touch {out}.{name}; sleep 300; }}"
    return line


@pytest.mark.parametrize("retries", [0, 1])
def test_sigkill_in_the_middle_of_a_500_task_batch_loses_nothing_and_reruns_nothing(
        start_daemon, tmp_path: Path, retries: int) -> None:
    out = tmp_path / "ran"
    d = start_daemon(pools=BASH)   # durability: batched, the default
    # Every tenth task waits for the one before it: dependencies must survive the restart too.
    tasks = [{"id": f"t{i}", "tool": "bash", "args": {"command": command(f"t{i}", out)},
              **({"retries": retries} if retries else {}), **({"after": [f"t{i - 1}"]} if i % 10 == 9 else {})}
             for i in range(500)]
    with d.client(timeout=5) as c:   # silent for 5 s, it pings, and resumes when nothing answers
        batch = c.batch({"on_failure": "continue", "tasks": tasks})
        wait_until(lambda: sum(ran(out).values()) >= 100 and all(ran(out)[name] for name in LONG), 60,
                   "100 tasks to run, the long ones among them")
        d.kill()
        at_kill = sum(ran(out).values())
        assert at_kill < 450, f"{at_kill} of 500 tasks had run already: the kill came too late to prove anything"
        d.restart()
        found = every_result(d, batch)
    counts = ran(out)
    states = check_ran_once(found, counts, retries)
    print(f"killed after {at_kill} lines; final states {dict(states)}")
    assert sum(states.values()) == 500
    assert not set(counts) - {t["id"] for t in tasks}
    long = {name: found[f"{batch.id}:{name}"] for name in LONG}
    if retries:   # run again after the restart, as they allowed: twice, and succeeded
        assert states["lost"] == 0, states
        assert all(body["task"]["state"] == "succeeded" and counts[name] == 2 for name, body in long.items()), long
    else:         # not retry-safe: lost, saying why, never run again
        assert all(body["task"]["state"] == "lost" and RESTARTED in body["result"].error and counts[name] == 1
                   for name, body in long.items()), long
        assert states["lost"] <= 4 * CREDIT, states   # at most what the four workers were running at the kill


def test_workers_sigkilled_during_a_batch_while_parad_restarts_once_the_counts_add_up(
        start_daemon, tmp_path: Path) -> None:
    out = tmp_path / "ran"
    d = start_daemon(pools=BASH)
    n = 300
    tasks = [{"id": f"t{i}", "tool": "bash", "args": {"command": f"echo t{i} >> {out}; sleep 0.02"}} for i in range(n)]
    rng = random.Random(12)
    killed: list[int] = []

    def kill_a_busy_worker() -> None:
        def kill() -> bool:
            busy = [w for w in d.workers("bash") if w["tasks"] and w["pid"] not in killed]
            if busy:
                victim = rng.choice(busy)["pid"]
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)
            return bool(busy)
        wait_until(kill, 30, "a busy worker to kill")

    def progress_past(lines: int) -> None:
        wait_until(lambda: sum(ran(out).values()) >= lines, 60, f"{lines} tasks to run")

    with d.client(timeout=5) as c:   # silent for 5 s, it pings, and resumes when nothing answers
        batch = c.batch({"on_failure": "continue", "tasks": tasks})
        for lines in (30, 60):
            progress_past(lines)
            kill_a_busy_worker()
        progress_past(100)
        d.kill()
        d.restart()
        for lines in (150, 200):
            progress_past(lines)
            kill_a_busy_worker()
        found = every_result(d, batch)
    counts = ran(out)
    states = check_ran_once(found, counts, retries=0)
    print(f"{len(killed)} workers and parad killed; final states {dict(states)}")
    assert sum(states.values()) == n and set(states) <= {"succeeded", "lost"}, states
    assert sum(counts.values()) >= states["succeeded"]
    assert sum(counts.values()) <= states["succeeded"] + states["lost"]
    # Each worker killed and the parad killed held at most the tasks they were running.
    assert states["lost"] <= (len(killed) + 4) * CREDIT, (states, killed)


# ---- a full disk, a damaged journal ------------------------------------------------------------

ECHO = {"echo": {"min_workers": 1, "max_workers": 1}}


@pytest.fixture
def small_state_dir(tmp_path: Path) -> Iterator[Path]:
    """A 3 MB tmpfs where make_daemon(..., tmp_path / "parad") keeps its state; unmounted after the test."""
    where = tmp_path / "parad" / "state"
    reason = mount_tmpfs(where, "3m")
    if reason:
        pytest.skip(reason)
    try:
        yield where
    finally:
        unmount(where)


def fill(fs: Path) -> Path:
    """Write a file on `fs` until it has not one page left; the file."""
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


def journal_status(c: Client) -> dict[str, Any]:
    return c.status()["journal"]


def integrity(journal: Path) -> str:
    with contextlib.closing(sqlite3.connect(f"file:{journal}?mode=ro", uri=True)) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


def test_a_full_disk_refuses_new_tasks_corrupts_nothing_and_service_resumes(
        make_daemon, small_state_dir: Path, tmp_path: Path) -> None:
    d = make_daemon({"daemon": FAST, "pools": ECHO}, tmp_path / "parad")
    try:
        with d.client() as c:
            before = [c.run("echo", i=i).id for i in range(20)]
            filler = fill(small_state_dir)
            # Its result is larger than inline_bytes: it needs a file, on a full disk.
            big: dict[str, Any] = {}
            thread = threading.Thread(target=_submit_big, args=(d, big))
            thread.start()
            try:
                wait_until(lambda: journal_status(c)["trouble"], 30, "the journal to report it cannot write")
                with pytest.raises(InvalidRequest) as refused:
                    c.submit("echo", i="refused")
                assert refused.value.code == "journal_unavailable"
                # What was wrong (the disk is full) and what to do (free space), in its one line.
                assert re.search(r"disk is full|No space left", str(refused.value)), refused.value
                assert "free space" in str(refused.value), refused.value
                with pytest.raises(InvalidRequest) as refused:
                    c.batch({"tasks": [{"id": "a", "tool": "echo", "args": {"i": "refused"}}]})
                assert refused.value.code == "journal_unavailable"
                assert integrity(d.state_dir / "journal.sqlite3") == "ok"
            finally:
                filler.unlink()   # space again, whatever failed: the held task can end and the thread with it
                thread.join(60)
            assert big.get("result") is not None and big["result"].value == {"blob": BLOB}, big
            wait_until(lambda: _accepted(c), 30, "parad to accept tasks again")
            assert journal_status(c)["trouble"] is None
            assert all(c.task(task_id)["result"].ok for task_id in before)
        assert integrity(d.state_dir / "journal.sqlite3") == "ok"
    finally:
        stop_and_check(d)


BLOB = "x" * 100_000   # past inline_bytes (64 KiB): its result needs a file of its own


def _submit_big(d: Daemon, out: dict[str, Any]) -> None:
    """Submit one task whose result will not fit, and wait for it: acknowledged only once journaled."""
    try:
        with d.client(timeout=90) as c:
            out["result"] = c.submit("echo", blob=BLOB).result(timeout=90)
    except Exception as exc:   # the main thread reports it
        out["error"] = exc


def _accepted(c: Client) -> bool:
    try:
        return c.run("echo", i="again").ok
    except InvalidRequest as exc:
        if exc.code != "journal_unavailable":
            raise
        return False


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_journal_is_moved_aside_and_parad_starts_with_a_fresh_one(start_daemon, damage: str) -> None:
    d = start_daemon(pools=ECHO)
    with d.client() as c:
        for i in range(200):
            c.run("echo", i=i, pad="p" * 200)
    assert d.stop() == 0
    journal = d.state_dir / "journal.sqlite3"
    size = journal.stat().st_size
    if damage == "truncated":
        os.truncate(journal, size // 2)
    else:
        journal.write_bytes(random.Random(7).randbytes(size))
    d.restart()
    said = re.search(r"moved it aside to (\S+)", d.log(this_run=True))
    assert said, d.log(this_run=True)
    moved = Path(said.group(1))
    assert moved.exists() and moved.stat().st_size == (size // 2 if damage == "truncated" else size)
    with d.client() as c:
        assert c.run("echo", x="fresh").value == {"x": "fresh"}
    assert integrity(journal) == "ok"
