"""`paractl bash` as a drop-in for typing the command: its argv, its environment,
its whole output, and batches in the sender's folder; run from a project
folder that is not where parad started (pytest's tmp_path)."""

from __future__ import annotations

import json
import os
import pwd
import shlex
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import zmq

from para.client import InvalidRequest
from para.ipc import codec
from para.ipc import messages as m
from para.sandbox.environment import MAX_VARS
from para.testing import Daemon, paractl, paractl_argv, silent_client, wait_until

MB = 1_000_000


@pytest.fixture(scope="module")
def parad(shared_daemon: Daemon) -> Daemon:
    return shared_daemon


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder away from parad's start folder, with a program of its own on a bin dir."""
    (tmp_path / "bin").mkdir()
    tool = tmp_path / "bin" / "hello-project"
    tool.write_text("#!/bin/sh\necho hello from the project PATH\n")
    tool.chmod(0o755)
    (tmp_path / "src").mkdir()
    return tmp_path / "src"


def caller_env(project: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PATH": f"{project.parent / 'bin'}:{os.environ['PATH']}", **extra}


# ---- argv --------------------------------------------------------------------------

def test_several_words_are_an_argv_quoted_exactly(parad: Daemon, project: Path) -> None:
    assert paractl(parad, "bash", "--", "sh", "-c", "exit 7", cwd=project).returncode == 7
    r = paractl(parad, "bash", "--", "printf", "[%s]\\n", "a b", "c", cwd=project)
    assert (r.returncode, r.stdout) == (0, "[a b]\n[c]\n"), r.stderr
    r = paractl(parad, "bash", "--", "sh", "-c", 'echo "$0|$1|$PWD"', "it's", "$HOME", cwd=project)
    assert r.stdout == f"it's|$HOME|{project}\n", r.stderr
    # The first word is looked up as at a prompt: a shell builtin works too.
    r = paractl(parad, "bash", "--", "exec", "-a", "renamed", "sh", "-c", 'echo "$0"', cwd=project)
    assert (r.returncode, r.stdout) == (0, "renamed\n"), r.stderr


def test_one_word_is_a_shell_string(parad: Daemon, project: Path) -> None:
    r = paractl(parad, "bash", "--", "echo $((6 * 7)) | tr 4 x; pwd", cwd=project)
    assert (r.returncode, r.stdout) == (0, f"x2\n{project}\n"), r.stderr


def test_an_argv_program_that_is_not_there_exits_127_as_a_shell_does(parad: Daemon, project: Path) -> None:
    r = paractl(parad, "bash", "--", "no-such-program-here", "x", cwd=project)
    assert r.returncode == 127
    assert "no-such-program-here: command not found" in r.stderr


# ---- environment -------------------------------------------------------------------

def test_the_callers_environment_and_path_reach_the_command_but_not_its_secrets(parad: Daemon, project: Path) -> None:
    env = caller_env(project, FOO="bar", GITHUB_TOKEN="tok", DB_PASSWORD="pw", AWS_PROFILE="prod")
    r = paractl(parad, "bash", "--", 'echo "$FOO|${GITHUB_TOKEN-}|${DB_PASSWORD-}|${AWS_PROFILE-}"; hello-project',
                cwd=project, env=env)
    assert (r.returncode, r.stdout) == (0, "bar|||\nhello from the project PATH\n"), r.stderr
    r = paractl(parad, "bash", "--", "printenv", "PATH", cwd=project, env=env)
    assert r.stdout == env["PATH"] + "\n"


def test_clean_env_gives_the_pools_environment(parad: Daemon, project: Path) -> None:
    env = caller_env(project, FOO="bar")
    r = paractl(parad, "bash", "--clean-env", "--", 'echo "${FOO-unset}"; command -v hello-project || echo none',
                cwd=project, env=env)
    assert (r.returncode, r.stdout) == (0, "unset\nnone\n"), r.stderr


def test_an_environment_past_the_bound_is_refused_at_submission(parad: Daemon, project: Path) -> None:
    many = {f"V{i}": "x" for i in range(MAX_VARS + 1)}
    r = paractl(parad, "bash", "--", "true", cwd=project, env={**os.environ, **many})
    assert r.returncode == 2
    assert f"at most {MAX_VARS} variables" in r.stderr and "--clean-env" in r.stderr
    r = paractl(parad, "bash", "--", "true", cwd=project, env={**os.environ, **{f"BIG{i}": "x" * (60 << 10) for i in range(3)}})
    assert r.returncode == 2 and "KiB" in r.stderr
    with parad.client() as c:
        with pytest.raises(InvalidRequest, match="at most .* variables"):
            c.run("bash", command="true", caller_env=many)
        with pytest.raises(InvalidRequest, match="'A=B' cannot be set"):
            c.run("bash", command="true", env={"A=B": "x"})


def test_the_pool_policy_may_let_a_secret_through_and_drop_more(start_daemon, project: Path) -> None:
    d = start_daemon(pools={"bash": {"min_workers": 1, "options": {"sandbox": {
        "env": {"secrets": ["GITHUB_TOKEN"], "drop": ["INTERNAL_*"], "set": {"FROM_POOL": "1"}}}}}})
    env = caller_env(project, GITHUB_TOKEN="tok", INTERNAL_URL="u", FOO="bar")
    r = paractl(d, "bash", "--", 'echo "$GITHUB_TOKEN|${INTERNAL_URL-}|$FOO|$FROM_POOL"', cwd=project, env=env)
    assert r.stdout == "tok||bar|1\n", r.stderr


def test_a_pool_may_refuse_the_callers_environment(start_daemon, project: Path) -> None:
    d = start_daemon(pools={"bash": {"min_workers": 1, "options": {"sandbox": {"env": {"from_caller": False}}}}})
    r = paractl(d, "bash", "--", 'echo "${FOO-unset}"', cwd=project, env=caller_env(project, FOO="bar"))
    assert r.stdout == "unset\n", r.stderr


# ---- live output -------------------------------------------------------------------

def test_live_output_reaches_the_caller_whole(parad: Daemon, project: Path) -> None:
    command = shlex.join(paractl_argv("--runtime-dir", str(parad.runtime_dir), "--no-autostart", "bash", "--",
                                      "head -c 5000000 /dev/zero | tr '\\0' a"))
    r = subprocess.run(f"set -o pipefail; {command} | wc -c", shell=True, executable="/bin/bash",
                       capture_output=True, text=True, cwd=project, timeout=120)
    assert (r.returncode, r.stdout.strip()) == (0, "5000000"), r.stderr
    assert "truncated" not in r.stderr  # nothing was dropped from what was printed


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and line[len(name)] in " {")


def test_a_50mb_stream_to_a_reader_that_waits_is_held_back_not_buffered(start_daemon) -> None:
    """The command is paused while its reader does not read: parad and the worker hold a
    bounded number of bytes, and the reader, once it reads, gets every byte."""
    d = start_daemon(daemon={"client_output_budget": 4 << 20},
                     pools={"bash": {"min_workers": 1, "max_workers": 1}, "echo": {"min_workers": 1}})
    parad_rss = psutil.Process(d.pid).memory_info
    ctx = zmq.Context()
    reader = silent_client(ctx, d.runtime_dir)
    task = m.TaskSpec("big", "bash", {"command": f"head -c {50 * MB} /dev/zero"}, stream=True)
    try:
        with d.client() as c:
            worker_rss = lambda: max(w["rss"] for w in c.workers() if w["pool"] == "bash")  # noqa: E731
            wait_until(worker_rss, 20, "the bash worker's first heartbeat")
            base, worker_base = parad_rss().rss, worker_rss()
            reader.send(codec.encode(m.Submit(1, [task])))
            wait_until(lambda: _metric(c.metrics(), "para_tasks_paused") > 0 or _finished(c), 60,
                       "the stream to be paused (or the task to end)")
            assert not _finished(c), "the whole stream went out to a reader that read nothing"
            held = _metric(c.metrics(), "para_client_backlog_bytes")
            peak, worker_peak = parad_rss().rss, worker_rss()
            received, result, read_peak = _read_all(reader, "big", lambda: parad_rss().rss)
            worker_peak = max(worker_peak, worker_rss())
    finally:
        reader.close()
        ctx.term()
    grown, worker_grown = max(peak, read_peak) - base, worker_peak - worker_base
    print(f"held {held / 2**20:.1f} MiB unread; parad grew {grown / 2**20:.1f} MiB (paused: {(peak - base) / 2**20:.1f}), the worker {worker_grown / 2**20:.1f} MiB")
    assert received == 50 * MB and result.stdout_bytes == 50 * MB and result.truncated
    assert held < 16 << 20, f"parad held {held} bytes for a reader with a 4 MiB budget"
    assert grown < 32 << 20, f"parad's RSS grew {grown / 2**20:.0f} MiB for a 50 MB stream"
    assert worker_grown < 24 << 20, f"the worker's RSS grew {worker_grown / 2**20:.0f} MiB"


def test_paractl_holds_little_of_a_stream_its_reader_is_not_reading(start_daemon) -> None:
    # paractl reads its socket only between writes to stdout; blocked on a full pipe,
    # what parad sent queued unread in its ZeroMQ socket: 1000 messages deep, ~170 MB of 200 MB.
    d = start_daemon(pools={"bash": {"min_workers": 1, "max_workers": 1}, "echo": {"min_workers": 1}})
    argv = paractl_argv("--runtime-dir", str(d.runtime_dir), "--no-autostart", "bash", "--", f"head -c {200 * MB} /dev/zero")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        with d.client() as c:
            wait_until(lambda: _metric(c.metrics(), "para_tasks_paused") > 0 or _finished(c), 60,
                       "the stream to be paused (or the task to end)")
            paused = not _finished(c)
            rss = psutil.Process(proc.pid).memory_info().rss
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert paused, f"the whole stream went to a paractl whose stdout nobody read (its RSS: {rss >> 20} MiB)"
    assert rss < 80 << 20, f"paractl's RSS was {rss >> 20} MiB while its stdout was not read"
    assert (proc.returncode, len(out)) == (0, 200 * MB), err


def _finished(c) -> bool:
    return _metric(c.metrics(), 'para_tasks_total{pool="bash",status="succeeded"}') > 0


def _read_all(sock: zmq.Socket, task_id: str, rss) -> tuple[int, m.TaskResult, int]:
    """Read the stream to its end: (bytes of output, the result, the highest `rss()` seen meanwhile)."""
    received, peak, deadline = 0, 0, time.monotonic() + 120
    while time.monotonic() < deadline:
        if not sock.poll(1000):
            continue
        peak = max(peak, rss())
        for part in codec.split(sock.recv()):
            msg = codec.decode(part)
            if isinstance(msg, m.Chunk) and msg.task_id == task_id:
                received += len(msg.data)
            elif isinstance(msg, m.Done) and msg.result.id == task_id:
                return received, msg.result, peak
    pytest.fail(f"the stream did not end within 120 s ({received} bytes read)")


# ---- batches -----------------------------------------------------------------------

def test_batch_tasks_run_in_the_folder_the_batch_was_sent_from(parad: Daemon, project: Path) -> None:
    plan = project / "plan.yaml"
    plan.write_text(json.dumps({"tasks": [
        {"id": "here", "tool": "bash", "args": {"command": "pwd; touch made-here"}},
        {"id": "named", "tool": "bash", "args": {"command": "pwd", "cwd": "/"}},
    ]}))
    r = paractl(parad, "--json", "batch", "plan.yaml", cwd=project)
    assert r.returncode == 0, r.stderr
    results = {line["task"]: line["result"] for line in map(json.loads, r.stdout.splitlines()) if "task" in line}
    assert results["here"]["stdout"] == f"{project}\n"
    assert results["named"]["stdout"] == "/\n"
    assert (project / "made-here").exists()


# ---- as another user ----------------------------------------------------------------

def _user(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


@pytest.mark.skipif(os.geteuid() != 0, reason="commands run as another user (run_as) only when parad runs as root")
@pytest.mark.skipif(_user("nobody") is None, reason="no user 'nobody' on this host")
def test_argv_and_environment_reach_a_command_run_as_an_unprivileged_user(start_daemon) -> None:
    d = start_daemon(pools={"bash": {"min_workers": 1, "options": {"sandbox": {"run_as": "nobody"}}}})
    nobody = _user("nobody")
    env = {**os.environ, "FOO": "bar", "MY_SECRET": "s"}
    r = paractl(d, "bash", "--cwd", "/", "--", "sh", "-c", 'echo "$(id -u) $FOO ${MY_SECRET-none} $1"', "sh", "a b",
                cwd="/", env=env)
    assert (r.returncode, r.stdout) == (0, f"{nobody.pw_uid} bar none a b\n"), r.stderr
    with d.client() as c:
        out = c.run("bash", argv=["sh", "-c", 'echo "$(id -u) $FOO"'], cwd="/", caller_env=env).stdout
    assert out == f"{nobody.pw_uid} bar\n"
