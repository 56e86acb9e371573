"""The bash tool through a real daemon: output, exit codes, streaming, limits, whole-tree kills."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from para.client import TaskTimeout, ToolError
from para.testing import marked, wait_until


def test_200_parallel_commands_all_correct(daemon) -> None:
    with daemon.client() as c:
        results = list(c.map("bash", ({"command": f"echo $(( {i} * 3 )); echo e{i} >&2"} for i in range(200))))
    assert [r.stdout for r in results] == [f"{i * 3}\n" for i in range(200)]
    assert [r.stderr for r in results] == [f"e{i}\n" for i in range(200)]
    assert all(r.ok and r.exit_code == 0 for r in results)
    assert len({r.worker for r in results}) > 1  # spread over the pool


def test_exit_code_stdout_stderr_and_rusage(daemon) -> None:
    with daemon.client() as c:
        r = c.run("bash", command="echo out; echo err >&2; exit 7")
    assert (r.status, r.exit_code, r.signal, r.stdout, r.stderr) == ("failed", 7, None, "out\n", "err\n")
    assert r.limit is None and r.error is None
    assert r.duration > 0 and "maxrss_kb" in r.rusage and r.worker.startswith("bash-")


def test_killed_by_signal_is_reported(daemon) -> None:
    with daemon.client() as c:
        r = c.run("bash", command="kill -SEGV $$")
    assert r.status == "failed" and r.signal == 11 and r.exit_code is None


def test_cwd_env_stdin(daemon, tmp_path: Path) -> None:
    with daemon.client() as c:
        r = c.run("bash", command="pwd; echo $GREETING; cat", cwd=str(tmp_path),
                  env={"GREETING": "hello"}, stdin="from stdin\n")
        assert r.stdout == f"{tmp_path}\nhello\nfrom stdin\n"
        with pytest.raises(ToolError, match="is not a directory"):
            c.run("bash", command="true", cwd=str(tmp_path / "missing"))


def test_a_command_inherits_only_its_standard_streams_and_default_signals(daemon) -> None:
    """Commands start by posix_spawn, which closes nothing itself: every descriptor
    para holds must be close-on-exec, and Python's ignored SIGPIPE must not carry over."""
    with daemon.client() as c:
        fds = c.run("bash", command="ls /proc/$$/fd; true")  # "; true": bash stays $$, not exec ls
        sigpipe = c.run("bash", command="yes | head -c 10 >/dev/null; echo ${PIPESTATUS[0]}")
    assert fds.ok and sorted(fds.stdout.split()) == ["0", "1", "2"], fds.stdout
    assert sigpipe.stdout == f"{128 + 13}\n"  # `yes` died of SIGPIPE rather than looping on EPIPE


def test_a_task_cwd_does_not_move_the_default_cwd(daemon, tmp_path: Path) -> None:
    with daemon.client() as c:
        home = c.run("bash", command="pwd").stdout
        for _ in range(4):  # reach every worker of the pool
            assert c.run("bash", command="pwd", cwd=str(tmp_path)).stdout == f"{tmp_path}\n"
        assert {c.run("bash", command="pwd").stdout for _ in range(4)} == {home}


def test_secrets_in_the_daemon_environment_do_not_leak(start_daemon, monkeypatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2")
    monkeypatch.setenv("LANG", "C.UTF-8")
    d = start_daemon()
    with d.client() as c:
        r = c.run("bash", command="env")
    assert "hunter2" not in r.stdout and "LANG=C.UTF-8" in r.stdout


def test_streamed_chunks_arrive_before_the_command_ends(daemon, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    with daemon.client() as c:
        future = c.submit("bash", command=f"echo first; while [ ! -e {gate} ]; do sleep 0.01; done; echo second",
                          stream=True)
        chunks = c.stream(future)
        first = next(chunks)
        # The command is still blocked on the gate, so this chunk came while it ran.
        assert first.stream == "stdout" and first.data == b"first\n"
        assert not future.done()
        gate.touch()
        rest = b"".join(ch.data for ch in chunks)
        assert rest == b"second\n"
        assert future.result().stdout == "first\nsecond\n"


def test_output_is_capped_keeping_head_and_tail(start_daemon) -> None:
    d = start_daemon(pools={"bash": {"min_workers": 1, "options": {"sandbox": {"limits": {"output_bytes": 1000}}}}})
    with d.client() as c:
        r = c.run("bash", command="echo START; head -c 100000 /dev/zero | tr '\\0' x; echo; echo END")
        small = c.run("bash", command="seq 1 100", policy={"limits": {"output_bytes": 20}})
    assert r.truncated and r.stdout.startswith("START\n") and r.stdout.endswith("END\n")
    assert "bytes truncated" in r.stdout and r.stdout_bytes == 100000 + 11
    assert small.truncated and small.stdout_bytes == len("".join(f"{i}\n" for i in range(1, 101)))


LEADER_GONE = (  # the main thread exits while another sleeps on: the process shows Z, yet lives
    "import threading, time, ctypes, sys\n"
    "threading.Thread(target=time.sleep, args=(600,)).start()\n"
    "time.sleep(0.1)\n"
    "ctypes.CDLL(None).syscall(60, 0)\n"
)


def test_a_leftover_whose_main_thread_exited_is_killed_and_the_task_ends(daemon) -> None:
    with daemon.client() as c:
        r = c.run("bash", timeout=60, command=(
            f"setsid python3 -c '{LEADER_GONE}' </dev/null >/dev/null 2>&1 & sleep 0.5; echo done"))
    # The command exited at once; what it left must be found alive, killed, and the result sent.
    assert r.ok and r.stdout == "done\n", r


def test_timeout_kills_the_command_and_a_setsid_grandchild(daemon, tmp_path: Path) -> None:
    tag, started = f"para-escapee-{uuid.uuid4().hex[:8]}", tmp_path / "escapee-started"
    with daemon.client() as c:
        with pytest.raises(TaskTimeout) as info:
            # The command waits for its grandchild to start, so a slow machine cannot time out first.
            c.run("bash", timeout=5, command=(
                f"setsid bash -c 'touch {started}; exec -a {tag} sleep 300' & "
                f"while [ ! -e {started} ]; do sleep 0.01; done; sleep 300 & wait"))
    result = info.value.result
    assert result.status == "timed_out" and result.limit == "timeout"
    assert started.exists(), "the setsid grandchild never ran"
    wait_until(lambda: not marked(tag), 10, "the setsid grandchild to be killed")
    with daemon.client() as c:  # and the worker that ran it still serves
        assert c.run("bash", command="echo ok").stdout == "ok\n"


def test_timeout_with_a_grandchild_holding_the_pipe_is_bounded(daemon, tmp_path: Path) -> None:
    tag, started = f"para-holder-{uuid.uuid4().hex[:8]}", tmp_path / "holder-started"
    with daemon.client() as c:
        # The double-forked sleeper inherits stdout and keeps it open after bash exits.
        r = c.run("bash", timeout=30, command=f"(setsid bash -c 'touch {started}; exec -a {tag} sleep 300' &); echo done")
    assert r.ok and r.stdout == "done\n"
    wait_until(started.exists, 10, "the holder to start")
    wait_until(lambda: not marked(tag), 10, "the pipe holder to be killed")


def test_cpu_limit_is_attributed(start_daemon) -> None:
    d = start_daemon(pools={"bash": {"min_workers": 1, "options": {"sandbox": {"limits": {"cpu_seconds": 1}}}}})
    with d.client() as c:
        r = c.run("bash", command="while :; do :; done", timeout=60)
    assert r.status == "failed" and r.limit == "cpu" and r.signal in (24, 9)


def test_file_size_limit_is_attributed(start_daemon, tmp_path: Path) -> None:
    d = start_daemon(pools={"bash": {"min_workers": 1, "options": {"sandbox": {"limits": {"file_size": 4096}}}}})
    with d.client() as c:
        r = c.run("bash", command=f"head -c 100000 /dev/zero > {tmp_path}/big", cwd=str(tmp_path))
    assert r.status == "failed" and r.limit == "file_size"
    assert os.path.getsize(tmp_path / "big") == 4096


def test_cancel_a_running_command(daemon, tmp_path: Path) -> None:
    started_file = tmp_path / "started"
    with daemon.client() as c:
        future = c.submit("bash", command=f"touch {started_file}; exec sleep 300")
        # "running" in ps means assigned: a cancel arriving with the assignment
        # would find the command not yet started. Wait for the command itself.
        wait_until(started_file.exists, what="the command to start")
        started = time.monotonic()
        assert c.cancel(future) == {"cancelled": [future.id], "not_running": []}
        result = future.result(timeout=30)
    assert result.status == "cancelled" and result.signal == 15
    assert time.monotonic() - started < 30


def test_streamed_output_is_whole_and_only_the_result_is_capped(start_daemon) -> None:
    d = start_daemon(pools={"bash": {"min_workers": 1, "options": {"sandbox": {"limits": {"output_bytes": 100_000}}}}})
    with d.client() as c:
        future = c.submit("bash", command="head -c 5000000 /dev/zero", stream=True)
        streamed = sum(len(ch.data) for ch in c.stream(future))
        result = future.result()
    assert streamed == 5_000_000 and result.truncated and result.stdout_bytes == 5_000_000
    assert len(result.stdout) < 100_100


def test_no_output_timeout_ends_a_silent_command(daemon) -> None:
    with daemon.client() as c:
        chatty = c.run("bash", command="for i in 1 2 3 4 5; do echo $i; sleep 0.3; done", no_output_timeout=5)
        with pytest.raises(TaskTimeout) as info:
            c.run("bash", command="echo started; sleep 300", no_output_timeout=1, timeout=120)
    assert chatty.ok and chatty.stdout.split() == ["1", "2", "3", "4", "5"]
    silent = info.value.result
    assert silent.limit == "no_output" and silent.stdout == "started\n"
    assert "1s without output" in silent.error
