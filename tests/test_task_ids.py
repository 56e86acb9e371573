"""A task's id is the client's choice: it names nothing of the worker's own (its sockets)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from para.client import Client
from para.client.client import TaskFuture
from para.testing import wait_running

PARACTL = f"{sys.executable} -m para.client.paractl"


def submit_as(c: Client, task_id: str, command: str) -> TaskFuture:
    """Submit a bash task under an id of our choosing (para's own clients number theirs)."""
    spec = c._spec("bash", {"command": command}, {"timeout": 120})
    spec.id = task_id
    future = c._track(TaskFuture(c, spec))
    c._request(c._submit([spec], ack=True))
    c._accepted(future)
    return future


@pytest.mark.parametrize("task_id, sibling", [
    ("command", "echo sibling"),                         # the worker's channel to parad
    ("relay", f"{PARACTL} bash -- echo sibling"),        # its nested clients' socket
], ids=["command", "relay"])
def test_a_task_named_like_a_worker_socket_leaves_its_siblings_served(start_daemon, tmp_path: Path,
                                                                       task_id: str, sibling: str) -> None:
    d = start_daemon(pools={"bash": {"min_workers": 1, "max_workers": 1, "credit": 4}})
    flag = tmp_path / "go"
    with d.client() as c:
        named = submit_as(c, task_id, f"until [ -e {flag} ]; do sleep 0.01; done; echo named")
        wait_running(c, count=1, what="the named task to run")
        other = c.submit("bash", command=sibling, timeout=20)
        result = other.result(timeout=60)
        flag.touch()
        assert named.result(timeout=60).stdout == "named\n"
        after = c.run("bash", command="echo after", timeout=20)
    assert (result.status, result.stdout) == ("succeeded", "sibling\n"), result.error
    assert after.stdout == "after\n"
