"""A worker left holding processes no kill could end retires: parad sends it no more tasks.

No test can put a process in D state; the cgroup v1 freezer comes close: a
frozen process takes no signal, SIGKILL included, until it is thawed, so the
worker's sweeps give up on it as they would on a tree stuck in the kernel.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from para.testing import marked, wait_running, wait_until

FREEZER = Path("/sys/fs/cgroup/freezer")


@pytest.fixture
def freezer() -> Path:
    """A freezer cgroup of this test's own, thawed and removed after it."""
    if not (FREEZER / "cgroup.procs").exists() or not os.access(FREEZER, os.W_OK):
        pytest.skip("needs a writable cgroup v1 freezer hierarchy at /sys/fs/cgroup/freezer")
    group = FREEZER / f"para-test-{os.getpid()}"
    group.mkdir()
    try:
        yield group
    finally:
        (group / "freezer.state").write_text("THAWED")   # the pending SIGKILLs land now
        wait_until(lambda: not (group / "cgroup.procs").read_text().split(), timeout=30, what="the frozen processes to die")
        group.rmdir()


def freeze(group: Path, pids: list[int]) -> None:
    for pid in pids:
        (group / "cgroup.procs").write_text(str(pid))
    (group / "freezer.state").write_text("FROZEN")
    wait_until(lambda: (group / "freezer.state").read_text().strip() == "FROZEN", what="the command to freeze")


def test_a_worker_holding_an_unkillable_command_takes_no_new_task(start_daemon, tmp_path: Path, freezer: Path) -> None:
    d = start_daemon(pools={"bash": {"min_workers": 1, "max_workers": 2, "credit": 4}})
    tag, flag = f"para-unkillable-{os.getpid()}", tmp_path / "go"
    with d.client() as c:
        stuck = c.submit("bash", command=f"exec -a {tag} sleep 300", timeout=300)
        # A sibling still running keeps the retiring worker alive while new tasks come.
        sibling = c.submit("bash", command=f"until [ -e {flag} ]; do sleep 0.01; done", timeout=300)
        wait_running(c, count=2, what="both commands to run")
        freeze(freezer, wait_until(lambda: marked(tag), what="the command's process"))
        c.cancel(stuck)
        gave_up = stuck.result(timeout=120)   # after the worker's sweeps give up (SWEEP_GIVE_UP)
        assert gave_up.status == "cancelled"
        later = [c.submit("bash", command=f"echo {i}", timeout=120) for i in range(8)]
        results = [f.result(timeout=120) for f in later]
        flag.touch()
        assert sibling.result(timeout=60).ok
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(8)]
    assert gave_up.worker not in {r.worker for r in results}, "the retiring worker took new tasks"
    wait_until(lambda: gave_up.worker not in {w["id"] for w in d.workers("bash")}, what="the worker to retire")
