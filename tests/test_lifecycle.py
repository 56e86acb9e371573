"""Starting, serving and stopping a real parad."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from para.client import Client, DaemonUnavailable, PoolUnavailable, ToolError
from para.testing import wait_running, wait_until


def test_start_status_shutdown_leaves_nothing_behind(start_daemon) -> None:
    d = start_daemon()
    with d.client() as c:
        status = c.status()
        assert status["daemon"]["pid"] == d.pid
        assert {p["name"]: p["ready"] for p in status["pools"]} == {"echo": 1, "bash": 2}
        workers = c.workers()
        assert len(workers) == 3 and all(w["pid"] for w in workers)
        tree = {p.pid for p in d.tree()}
        assert {w["pid"] for w in workers} <= tree
        assert c.shutdown()["stopping"] is True
    assert d.proc.wait(timeout=30) == 0
    assert not d.runtime_dir.exists() or not list(d.runtime_dir.glob("**/*.sock"))
    wait_until(lambda: not d.leftovers(), 10, "workers and fork server to exit")


def test_second_daemon_on_the_same_runtime_dir_is_refused(daemon) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "para.daemon", "--config", str(daemon.config_path),
         "--runtime-dir", str(daemon.runtime_dir), "--state-dir", str(daemon.state_dir)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1
    assert f"another parad (pid {daemon.pid}) already owns {daemon.runtime_dir}" in proc.stderr
    with daemon.client() as c:  # the first one is untouched
        assert c.run("echo", still="here").value == {"still": "here"}


def test_sigterm_lets_a_running_task_finish_within_the_grace(daemon) -> None:
    with daemon.client() as c:
        future = c.submit("bash", command="sleep 0.5; echo finished")
        wait_running(c, what="task to start")
        daemon.proc.send_signal(signal.SIGTERM)
        result = future.result(timeout=30)
    assert result.status == "succeeded" and result.stdout == "finished\n"
    assert daemon.proc.wait(timeout=30) == 0


def journal_state(d, task_id: str) -> str:
    with sqlite3.connect(d.state_dir / "journal.sqlite3") as db:
        return db.execute("SELECT state FROM tasks WHERE id = ?", (task_id,)).fetchone()[0]


@pytest.mark.parametrize("durability", ["off", "batched"])
def test_grace_over_kills_the_worker_tree(start_daemon, durability: str) -> None:
    d = start_daemon(daemon={"shutdown_grace": 0.5, "journal": {"durability": durability}})
    with d.client(timeout=2.0) as c:
        future = c.submit("bash", command="sleep 60")
        wait_running(c, what="task to start")
        sleeper = wait_until(lambda: [p for p in d.tree() if p.name() == "sleep"], what="sleep to run")[0]
        d.proc.send_signal(signal.SIGINT)
        if durability == "off":
            with pytest.raises(ToolError) as info:
                future.result(timeout=30)
            assert info.value.result.status == "lost" and "shutdown grace of 0.5s over" in info.value.result.error
    assert d.proc.wait(timeout=30) == 0
    wait_until(lambda: not sleeper.is_running() or sleeper.status() == "zombie", 10, "sleep to be killed")
    if durability == "batched":   # left for the next parad to retry or report (test_journal.py)
        assert journal_state(d, future.id) == "running"


@pytest.mark.parametrize("durability", ["off", "batched"])
def test_submissions_during_shutdown_are_refused_and_queued_tasks_reported(start_daemon, durability: str) -> None:
    d = start_daemon(pools={"bash": {"min_workers": 1, "max_workers": 1, "credit": 1}},
                     daemon={"shutdown_grace": 10, "journal": {"durability": durability}})
    with d.client() as c:
        running = c.submit("bash", command="sleep 1")
        queued = c.submit("bash", command="echo never")
        c.shutdown()
        with pytest.raises(PoolUnavailable, match="shutting down"):
            c.submit("bash", command="echo late")
        if durability == "off":
            assert queued.result(timeout=30).status == "cancelled"
            assert "shut down before the task started" in queued.result().error
        assert running.result(timeout=30).status == "succeeded"
    assert d.proc.wait(timeout=30) == 0
    if durability == "batched":   # kept for the next parad instead of cancelled
        assert journal_state(d, queued.id) == "queued"


def test_client_without_daemon_names_the_socket_path(tmp_path) -> None:
    with pytest.raises(DaemonUnavailable) as info:
        Client(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere" / "control.sock") in str(info.value)


def test_client_times_out_on_a_hung_daemon_instead_of_hanging(daemon) -> None:
    # reconnect: how long it then tries to reach a parad again (30 s by default): the same path, shorter.
    with daemon.client(timeout=1.0, reconnect=2.0) as c:
        os.kill(daemon.pid, signal.SIGSTOP)
        try:
            with pytest.raises(DaemonUnavailable, match=f"not answering at {daemon.runtime_dir}"):
                c.status()
            with pytest.raises(DaemonUnavailable):
                c.run("echo")
        finally:
            os.kill(daemon.pid, signal.SIGCONT)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory under /tmp (socket paths must stay under 108 bytes), removed after."""
    path = Path(tempfile.mkdtemp(prefix="pa", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_client_autostarts_a_daemon(tmp_path, short_dir, monkeypatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    runtime = short_dir / "rt"
    with Client(runtime, autostart=True, timeout=30) as c:
        pid = c.status()["daemon"]["pid"]
        assert c.status()["daemon"]["config"] == "built-in defaults"
        assert c.run("bash", command="echo auto").stdout == "auto\n"
        c.shutdown()
    wait_until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie", 30, "autostarted parad to exit")
    assert not runtime.exists()
    assert (tmp_path / "state" / "para" / "parad.log").exists()


def test_metrics_over_http_and_the_control_socket(start_daemon) -> None:
    import socket
    import urllib.request
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    d = start_daemon(daemon={"metrics_listen": f"127.0.0.1:{port}"})
    with d.client() as c:
        list(c.map("echo", ({"i": i} for i in range(5))))
        c.run("bash", command="exit 1")
        text = c.metrics()
    assert 'para_tasks_total{pool="echo",status="succeeded"} 5.0' in text
    assert 'para_tasks_total{pool="bash",status="failed"} 1.0' in text
    assert 'para_workers{pool="bash",state="ready"} 2.0' in text
    assert 'para_pool_failed{pool="echo"} 0.0' in text
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        scraped = response.read().decode()
    assert response.status == 200 and "para_worker_rss_bytes" in scraped
    assert 'para_tasks_total{pool="echo",status="succeeded"} 5.0' in scraped


def test_autostart_replaces_a_daemon_that_died_leaving_its_socket(tmp_path, short_dir, monkeypatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    runtime = short_dir / "rt"
    with Client(runtime, autostart=True, timeout=30) as c:
        first = c.status()["daemon"]["pid"]
        tree = psutil.Process(first).children(recursive=True)
    os.kill(first, signal.SIGKILL)  # no cleanup: its socket files stay behind
    wait_until(lambda: not psutil.pid_exists(first) or psutil.Process(first).status() == "zombie", 30, "parad to die")
    wait_until(lambda: not any(p.is_running() and p.status() != "zombie" for p in tree), 30, "its workers to follow it")
    assert (runtime / "control.sock").exists()
    with Client(runtime, autostart=True, timeout=30) as c:
        second = c.status()["daemon"]["pid"]
        assert second != first and c.run("echo", x=1).value == {"x": 1}
        c.shutdown()
    wait_until(lambda: not psutil.pid_exists(second) or psutil.Process(second).status() == "zombie", 30, "parad to exit")
