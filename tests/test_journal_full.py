"""A journal on a filesystem that fills up: new tasks are refused saying why, nothing is
corrupted, and service resumes by itself once there is space again.

The state directory is a small tmpfs (skipped where mounting is not allowed);
a filler file takes its space and is removed to give it back.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from para.client import ParaError
from para.ipc import messages as m
from para.testing import FAST, Daemon, mount_tmpfs, stop_and_check, unmount, wait_until

POOLS = {"bash": {"min_workers": 1, "max_workers": 1, "credit": 1}, "echo": {"min_workers": 1, "max_workers": 1}}


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, unmounted after the test."""
    mnt = tmp_path / "small"
    reason = mount_tmpfs(mnt, "4m")
    if reason:
        pytest.skip(reason)
    try:
        yield mnt
    finally:
        unmount(mnt)


def test_a_full_disk_refuses_new_tasks_saying_so_and_service_resumes(
        small_fs: Path, tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    (tmp_path / "d").mkdir()
    (small_fs / "state").mkdir()
    (tmp_path / "d" / "state").symlink_to(small_fs / "state")
    d = make_daemon({"daemon": FAST, "pools": POOLS}, tmp_path / "d")
    filler, go = small_fs / "filler", tmp_path / "go"
    try:
        with d.client(timeout=60.0) as c:
            c.run("echo", x=0)
            # A task whose end (an inline result of 60 kB) is written once the disk is full.
            ending = c.submit("bash", command=f"while [ ! -e {go} ]; do sleep 0.05; done; head -c 60000 /dev/zero | tr '\\0' y")
            st = os.statvfs(small_fs)
            filler.write_bytes(b"x" * (st.f_bavail * st.f_frsize - 16_384))
            go.touch()
            wait_until(lambda: c.status()["journal"]["trouble"], 60, "the journal to find its disk full")
            with pytest.raises(ParaError) as refusal:
                c.submit("echo", x=1)
            assert refusal.value.code == m.E_JOURNAL
            assert "disk is full" in str(refusal.value), str(refusal.value)   # what SQLite said, not a ROLLBACK's error
            filler.unlink()
            assert ending.result(timeout=60).stdout == "y" * 60000
            assert c.run("echo", x=2).value == {"x": 2}
    finally:
        stop_and_check(d)
    with sqlite3.connect(small_fs / "state" / "journal.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT count(*) FROM tasks WHERE state = 'succeeded'").fetchone()[0] == 3
