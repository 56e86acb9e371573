"""paractl against a real parad: real sockets, real workers, paractl run as a subprocess."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import pytest

from para.client import Client
from para.client.paractl import UsageError, parse_value, split_globals
from para.daemon.tools import TOOLS
from para.testing import Daemon, paractl, paractl_argv, wait_running, wait_until
from para.testing import alive as _alive, daemons_serving as _daemons_serving

FS_TOOLS = ("read", "glob", "grep")
needs_fs_tools = pytest.mark.skipif(not all(t in TOOLS for t in FS_TOOLS), reason="read/glob/grep tools not built yet")


@pytest.fixture(scope="module")
def parad(shared_daemon: Daemon) -> Daemon:
    return shared_daemon


def running_task(parad: Daemon, client: Client, command: str = "sleep 30"):
    future = client.submit("bash", command=command)
    wait_running(client, future.id, timeout=10)
    return future


# ---- bash ------------------------------------------------------------------------

def test_bash_exit_code_stdout_and_stderr(parad: Daemon) -> None:
    r = paractl(parad, "bash", "--", "echo hi; echo err >&2; exit 7")
    assert r.returncode == 7, r.stderr
    assert r.stdout == "hi\n"
    assert "err" in r.stderr


def test_bash_runs_in_the_current_directory(parad: Daemon, tmp_path: Path) -> None:
    r = paractl(parad, "bash", "--", "pwd; echo a b", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{tmp_path}\na b\n"


def test_bash_streams_output_before_the_command_ends(parad: Daemon) -> None:
    started = time.monotonic()
    proc = subprocess.Popen(paractl_argv("--runtime-dir", str(parad.runtime_dir), "--no-autostart", "bash", "--",
                                         "echo first; sleep 5; echo second"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        assert ready, "no output within 10s"
        first = proc.stdout.readline()
        arrived = time.monotonic() - started
        still_running = proc.poll() is None
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert first == b"first\n"
    assert still_running, "the first line arrived only after paractl had exited"
    assert arrived < 4, f"the first line took {arrived:.1f}s: it waited for the 5s sleep"
    assert out == b"second\n"
    assert proc.returncode == 0, err


def test_bash_timeout_exits_124(parad: Daemon) -> None:
    started = time.monotonic()
    r = paractl(parad, "bash", "--timeout", "1", "--", "sleep 30")
    assert r.returncode == 124
    assert "timeout" in r.stderr
    assert time.monotonic() - started < 20


def test_bash_killed_by_signal_exits_128_plus_signal(parad: Daemon) -> None:
    r = paractl(parad, "bash", "--", "kill -9 $$")
    assert r.returncode == 128 + 9
    assert "signal 9" in r.stderr


def test_bash_prints_all_output_and_json_says_what_the_result_kept(parad: Daemon) -> None:
    argv = paractl_argv("--runtime-dir", str(parad.runtime_dir), "--no-autostart", "bash", "--", "head -c 3000000 /dev/zero")
    r = subprocess.run(argv, capture_output=True, timeout=60)
    assert r.returncode == 0
    assert len(r.stdout) == 3_000_000 and b"truncated" not in r.stderr  # streamed whole
    r = paractl(parad, "--json", "bash", "--", "head -c 3000000 /dev/zero")
    result = json.loads(r.stdout)  # the stored result keeps sandbox.limits.output_bytes (1 MiB default)
    assert result["truncated"] and result["stdout_bytes"] == 3_000_000


def test_bash_json_prints_the_result_and_keeps_the_exit_code(parad: Daemon) -> None:
    r = paractl(parad, "--json", "bash", "--", "echo hi; exit 3")
    assert r.returncode == 3
    result = json.loads(r.stdout)
    assert (result["status"], result["exit_code"], result["stdout"]) == ("failed", 3, "hi\n")


def test_ctrl_c_cancels_the_task_and_exits_130(parad: Daemon) -> None:
    proc = subprocess.Popen(paractl_argv("--runtime-dir", str(parad.runtime_dir), "--no-autostart", "bash", "--",
                                         "echo started; sleep 30"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        assert ready and proc.stdout.readline() == b"started\n"
        with Client(parad.runtime_dir) as client:
            assert any(t["state"] == "running" for t in client.ps())
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=20)
            assert proc.returncode == 130, err
            assert b"cancelled" in err
            wait_until(lambda: client.ps() == [], 10, "the interrupted task to be cancelled")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bash_task_is_cancelled_when_the_reader_goes_away(parad: Daemon) -> None:
    proc = subprocess.Popen(paractl_argv("--runtime-dir", str(parad.runtime_dir), "--no-autostart", "bash", "--", "yes"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.read(2) == b"y\n"
        proc.stdout.close()  # like `| head -1` exiting
        assert proc.wait(timeout=20) == 128 + signal.SIGPIPE
        assert b"Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with Client(parad.runtime_dir) as client:
        wait_until(lambda: client.ps() == [], 10, "the unread command to be cancelled")


# ---- run -------------------------------------------------------------------------

def test_run_parses_values_as_yaml_scalars(parad: Daemon) -> None:
    r = paractl(parad, "run", "echo", "a=1", "b=x", "c=true", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["value"] == {"a": 1, "b": "x", "c": True}


def test_run_human_output_and_task_options(parad: Daemon) -> None:
    r = paractl(parad, "run", "echo", "items=[a, b]", "timeout=5", "priority=1")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"items": ["a", "b"]}  # options are not tool args


def test_run_bash_prints_output_and_exits_with_its_code(parad: Daemon) -> None:
    r = paractl(parad, "run", "bash", "command=echo out: 1; exit 4")
    assert r.returncode == 4
    assert r.stdout == "out: 1\n"


def test_run_unknown_tool_exits_2_naming_it(parad: Daemon) -> None:
    r = paractl(parad, "run", "nosuchtool")
    assert r.returncode == 2
    assert "nosuchtool" in r.stderr and r.stderr.startswith("paractl: ")


def test_run_refused_argument_exits_2(parad: Daemon) -> None:
    r = paractl(parad, "run", "bash", "comand=true")
    assert r.returncode == 2
    assert "comand" in r.stderr


def test_run_rejects_words_without_equals(parad: Daemon) -> None:
    r = paractl(parad, "run", "echo", "oops")
    assert r.returncode == 2
    assert "key=value" in r.stderr


def test_value_parsing() -> None:
    assert parse_value("1") == 1 and parse_value("2.5") == 2.5 and parse_value("true") is True
    assert parse_value("") is None and parse_value("[a, 1]") == ["a", 1] and parse_value("{k: v}") == {"k": "v"}
    assert parse_value("'123'") == "123"
    # Text that YAML would mangle stays as typed.
    for text in ("echo a: b", "echo hi # not a comment", "- x", "ls *", "2024-01-01", "abc"):
        assert parse_value(text) == text


# ---- global options ------------------------------------------------------------------

def test_global_options_anywhere_before_double_dash() -> None:
    g, rest, after = split_globals(["status", "--json", "--runtime-dir", "/x", "--timeout", "3"])
    assert (g.json, g.runtime_dir, g.timeout, rest, after) == (True, "/x", 3.0, ["status"], None)
    g, rest, after = split_globals(["--timeout=4", "bash", "--timeout", "1", "--", "echo", "--json"])
    assert (g.json, g.timeout, rest, after) == (False, 4.0, ["bash", "--timeout", "1"], ["echo", "--json"])


@pytest.mark.parametrize("text", ["0", "-1", "nan", "soon"])
def test_a_global_timeout_that_is_no_positive_number_is_a_usage_error(text) -> None:
    with pytest.raises(UsageError, match="--timeout"):
        split_globals(["status", "--timeout", text])


def test_json_before_and_after_the_subcommand(parad: Daemon) -> None:
    before = paractl(parad, "--json", "status")
    after = paractl(parad, "status", "--json")
    assert before.returncode == after.returncode == 0
    assert json.loads(before.stdout)["daemon"]["pid"] == json.loads(after.stdout)["daemon"]["pid"] == parad.pid


def test_version() -> None:
    r = paractl(None, "--version")
    assert r.returncode == 0
    assert r.stdout.strip() == f"paractl {version('para')}"


def test_no_command_is_a_usage_error() -> None:
    r = paractl(None)
    assert r.returncode == 2


# ---- queries ---------------------------------------------------------------------

def test_status_human_and_json(parad: Daemon) -> None:
    human = paractl(parad, "status")
    assert human.returncode == 0, human.stderr
    assert str(parad.pid) in human.stdout and str(parad.runtime_dir) in human.stdout
    for pool in parad.pools:
        assert any(line.split()[:1] == [pool] for line in human.stdout.splitlines()), pool
    body = json.loads(paractl(parad, "--json", "status").stdout)
    assert sorted(p["name"] for p in body["pools"]) == parad.pools
    assert f"journal: batched, {body['journal']['path']}" in human.stdout


def test_workers_human_and_json(parad: Daemon) -> None:
    human = paractl(parad, "workers")
    assert human.returncode == 0, human.stderr
    body = json.loads(paractl(parad, "workers", "--json").stdout)
    assert {w["pool"] for w in body} == set(parad.pools)
    for worker in body:
        assert worker["id"] in human.stdout and str(worker["pid"]) in human.stdout


def test_ps_shows_a_running_task(parad: Daemon) -> None:
    with Client(parad.runtime_dir) as client:
        future = running_task(parad, client)
        try:
            human = paractl(parad, "ps")
            body = json.loads(paractl(parad, "ps", "--json").stdout)
        finally:
            client.cancel(future)
            future.result(timeout=20)
    assert human.returncode == 0
    assert any(line.startswith(future.id) and "running" in line for line in human.stdout.splitlines())
    assert [t["id"] for t in body] == [future.id]


def test_cancel_a_running_task(parad: Daemon) -> None:
    with Client(parad.runtime_dir) as client:
        future = running_task(parad, client)
        r = paractl(parad, "cancel", future.id)
        assert r.returncode == 0, r.stderr
        assert f"cancelled {future.id}" in r.stdout
        assert future.result(timeout=20).status == "cancelled"
    again = paractl(parad, "--json", "cancel", future.id)
    assert again.returncode == 1
    assert json.loads(again.stdout) == {"cancelled": [], "not_running": [future.id]}


def test_no_daemon_exits_69_naming_the_socket() -> None:
    r = paractl(None, "--no-autostart", "--runtime-dir", "/tmp/does-not-exist-XYZ", "status")
    assert r.returncode == 69
    assert "/tmp/does-not-exist-XYZ/control.sock" in r.stderr


# ---- shortcuts -----------------------------------------------------------------------

@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.py").write_text("import os\nneedle one\nx\ny\nz\nNeedle two\n")
    (tmp_path / "sub" / "b.py").write_text("needle three\n")
    (tmp_path / "c.txt").write_text("l1\nl2\nl3\nl4\n")
    return tmp_path


@needs_fs_tools
def test_grep_prints_path_line_text(parad: Daemon, tree: Path) -> None:
    r = paractl(parad, "grep", "needle", cwd=tree)
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == ["a.py:2:needle one", "sub/b.py:1:needle three"]
    absolute = paractl(parad, "grep", "-i", "needle", str(tree / "a.py"))
    assert absolute.stdout.splitlines() == [f"{tree}/a.py:2:needle one", f"{tree}/a.py:6:Needle two"]


@needs_fs_tools
def test_grep_context_and_glob(parad: Daemon, tree: Path) -> None:
    r = paractl(parad, "grep", "-i", "-C", "1", "--glob", "*.py", "needle", ".", cwd=tree)
    assert r.returncode == 0, r.stderr
    groups = r.stdout.split("--\n")
    assert "./a.py-1-import os\n./a.py:2:needle one\n./a.py-3-x\n" in groups
    assert "./a.py-5-z\n./a.py:6:Needle two\n" in groups
    assert "c.txt" not in r.stdout


@needs_fs_tools
def test_grep_no_match_exits_1_and_bad_regex_2(parad: Daemon, tree: Path) -> None:
    none = paractl(parad, "grep", "nothing-like-this", str(tree))
    assert (none.returncode, none.stdout) == (1, "")
    bad = paractl(parad, "grep", "(", str(tree))
    assert bad.returncode == 2
    assert "regex" in bad.stderr


@needs_fs_tools
def test_glob_lists_paths_relative_to_root(parad: Daemon, tree: Path) -> None:
    r = paractl(parad, "glob", "**/*.py", str(tree))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["a.py", "sub/b.py"]
    assert paractl(parad, "glob", "*.txt", cwd=tree).stdout == "c.txt\n"


@needs_fs_tools
def test_read_prints_lines(parad: Daemon, tree: Path) -> None:
    r = paractl(parad, "read", "c.txt", "--offset", "1", "--limit", "2", cwd=tree)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "l2\nl3\n"
    body = json.loads(paractl(parad, "--json", "read", str(tree / "c.txt")).stdout)
    assert body["value"]["lines"] == ["l1", "l2", "l3", "l4"]
    missing = paractl(parad, "read", str(tree / "missing"))
    assert missing.returncode == 1
    assert "no such file" in missing.stderr


# ---- autostart -----------------------------------------------------------------------

def test_autostart_then_shutdown(tmp_path: Path) -> None:
    rt = Path(tempfile.mkdtemp(prefix="pa", dir="/tmp"))
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    pid = None
    try:
        r = paractl(None, "--runtime-dir", str(rt), "bash", "--", "echo auto", env=env, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "auto\n"
        status = paractl(None, "--runtime-dir", str(rt), "--json", "status", env=env)
        pid = json.loads(status.stdout)["daemon"]["pid"]
        assert json.loads(status.stdout)["daemon"]["config"] == "built-in defaults"
        down = paractl(None, "--runtime-dir", str(rt), "shutdown", env=env)
        assert down.returncode == 0, down.stderr
        assert str(pid) in down.stdout
        wait_until(lambda: not _alive(pid), 30, f"autostarted parad {pid} to exit")
        wait_until(lambda: not list(rt.glob("**/*.sock")), 10, f"{rt} to hold no sockets")
        after = paractl(None, "--runtime-dir", str(rt), "shutdown", env=env)
        assert after.returncode == 69  # shutdown never starts a daemon just to stop it
    finally:
        for leftover in [pid] if pid is not None else _daemons_serving(rt):
            if _alive(leftover):
                os.kill(leftover, signal.SIGKILL)
        shutil.rmtree(rt, ignore_errors=True)


def test_watch_follows_results_and_progress(parad: Daemon) -> None:
    proc = subprocess.Popen(paractl_argv("--runtime-dir", str(parad.runtime_dir), "--no-autostart", "watch",
                                         "results", "progress", "--count", "4"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with parad.client() as c:
            wait_until(lambda: c.status()["daemon"]["watchers"] >= 2, 20, "the watcher to subscribe")
            first, second = c.run("bash", command="true"), c.run("bash", command="exit 3")
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert f"results   {first.id} succeeded exit 0" in "\n".join(lines)
    assert any(line.startswith(f"results   {second.id} failed exit 3") for line in lines)
    assert any(line.startswith(f"progress  {first.id} started on bash-") for line in lines)
