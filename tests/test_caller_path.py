"""A tool on the caller's PATH under /tmp (a virtualenv made there) runs in the sandbox, read-only,
although the sandbox's /tmp is a private, empty one."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from para.sandbox.caller_path import hidden_by_private_tmp
from para.sandbox.probe import probe
from para.testing import paractl

HOST = probe()
needs_namespaces = pytest.mark.skipif(not HOST.namespaces, reason=f"no namespace isolation here: {HOST.namespaces_error}")


@pytest.fixture
def venv() -> Iterator[Path]:
    """A virtualenv-shaped folder under /tmp whose bin/para-hello needs its lib/ too."""
    root = Path(tempfile.mkdtemp(prefix="para-venv-", dir="/tmp"))
    root.chmod(0o755)
    (root / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (root / "bin").mkdir()
    (root / "lib").mkdir()
    (root / "lib" / "greeting").write_text("hello from the venv\n")
    tool = root / "bin" / "para-hello"
    tool.write_text('#!/bin/sh\nexec cat "$(dirname "$0")/../lib/greeting"\n')
    tool.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def project() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="para-proj-", dir="/var/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_only_folders_a_private_tmp_hides_are_shown(venv: Path, project: Path) -> None:
    path = f"{venv}/bin:/usr/bin:relative:/tmp:{project}/bin"
    assert hidden_by_private_tmp(path, str(project)) == [str(venv)]                   # the venv whole
    assert hidden_by_private_tmp(f"{venv}/bin", str(venv)) == []                       # inside the workspace: bound already
    (venv / "pyvenv.cfg").unlink()
    assert hidden_by_private_tmp(f"{venv}/bin", str(project)) == [str(venv / "bin")]   # a plain folder: itself


@needs_namespaces
def test_a_venv_under_tmp_on_the_callers_path_runs_read_only(start_daemon, venv: Path, project: Path) -> None:
    d = start_daemon(pools={"bash": {"min_workers": 1, "max_workers": 2,
                                     "options": {"sandbox": {"filesystem": {"writable": ["."]}}}}})
    path = f"{venv}/bin:/usr/bin:/bin"
    with d.client() as c:
        ran = c.run("bash", argv=["para-hello"], workspace=str(project), caller_env={"PATH": path})
        wrote = c.run("bash", command=f"echo x > {venv}/lib/greeting", workspace=str(project), caller_env={"PATH": path})
    assert (ran.exit_code, ran.stdout) == (0, "hello from the venv\n"), ran
    assert wrote.exit_code != 0 and "Read-only file system" in wrote.stderr, wrote
    assert (venv / "lib" / "greeting").read_text() == "hello from the venv\n"
    out = paractl(d, "bash", "--", "para-hello", cwd=project, env={**os.environ, "PATH": f"{path}:{os.environ['PATH']}"})
    assert (out.returncode, out.stdout) == (0, "hello from the venv\n"), out.stderr
