"""`paractl bash` as a drop-in for typing the command: its argv and its environment;
run from a project folder that is not where parad started (pytest's tmp_path)."""

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


def test_one_word_is_a_shell_string(parad: Daemon, project: Path) -> None:
    r = paractl(parad, "bash", "--", "echo $((6 * 7)) | tr 4 x; pwd", cwd=project)
    assert (r.returncode, r.stdout) == (0, f"x2\n{project}\n"), r.stderr


def test_an_argv_program_that_is_not_there_exits_127_as_a_shell_does(parad: Daemon, project: Path) -> None:
    r = paractl(parad, "bash", "--", "no-such-program-here", "x", cwd=project)
    assert r.returncode == 127
    assert "no-such-program-here: not found" in r.stderr


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
    with parad.client() as c, pytest.raises(InvalidRequest, match="at most .* variables"):
        c.run("bash", command="true", caller_env=many)


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
