"""The drop-in as an ordinary user: their own parad, started by paractl's autostart, in their project.

CI runs as root; users often do not. This test makes a throwaway user, gives it
a Python it can run with para installed from this checkout (this Python when
another user can reach it, else the system's `python3` in a fresh venv, which
needs pip to reach an index), and drives paractl and the Client as that user
from a project of theirs. It skips, saying why, where the host cannot.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from para.testing import open_to_others, wait_until

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="making a throwaway user needs root"),
    pytest.mark.skipif(shutil.which("useradd") is None or shutil.which("runuser") is None,
                       reason="no useradd/runuser here to make and become a throwaway user"),
]


def python_for_others(base: Path) -> Path:
    """A Python another user can run, with para (this checkout) and its dependencies: a venv in `base`."""
    venv = base / "venv"
    if open_to_others(sys.executable) and open_to_others(ROOT / "pyproject.toml"):
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
        install = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(ROOT)]
    elif os.path.exists(SYSTEM_PYTHON):
        src = base / "src"
        files = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True, check=True).stdout
        for rel in files.split():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], check=True)
        install = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(src)]
    else:
        pytest.skip(f"this Python ({sys.executable}) lies where another user cannot reach it, and there is no {SYSTEM_PYTHON}")
    done = subprocess.run(install, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.skip(f"cannot install para for another user here (pip: {done.stderr.strip()[-200:]})")
    return venv / "bin" / "python"


@pytest.fixture(scope="module")
def user():
    """(name, home, python): a throwaway user with a home, a project in it and a Python with para; all removed after."""
    name = f"pt{uuid.uuid4().hex[:8]}"
    base = Path(tempfile.mkdtemp(prefix="para-user-", dir="/var/tmp"))
    base.chmod(0o755)
    try:
        made = subprocess.run(["useradd", "--create-home", "--user-group", "--shell", "/bin/sh", name],
                              capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f"useradd failed: {made.stderr.strip()}")
        python = python_for_others(base)
        subprocess.run(["chmod", "-R", "o+rX", str(base)], check=True)
        yield name, Path(pwd.getpwnam(name).pw_dir), python
    finally:
        subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
        wait_until(lambda: subprocess.run(["pgrep", "-u", name], capture_output=True).returncode != 0, 30,
                   f"every process of {name} to end")
        subprocess.run(["userdel", "--remove", name], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def as_user(user, script: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `script` with sh as the user, in their project, with the venv's bin first on PATH."""
    name, home, python = user
    env = {"HOME": str(home), "USER": name, "PATH": f"{python.parent}:/usr/bin:/bin", "FOO": "bar", "LANG": "C.UTF-8"}
    return subprocess.run(["runuser", "-u", name, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()),
                           "sh", "-c", f"cd {home}/proj && {script}"],
                          input=stdin, capture_output=True, text=True, timeout=timeout)


def test_an_ordinary_user_gets_a_drop_in_in_their_project(user) -> None:
    name, home, python = user
    made = subprocess.run(["runuser", "-u", name, "--", "sh", "-c", f"mkdir -p {home}/proj/sub && cd {home}/proj && "
                           f"git init -q . 2>/dev/null || mkdir -p .git"], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    try:
        exit7 = as_user(user, "paractl bash -- sh -c 'exit 7'")
        cat = as_user(user, "paractl bash -- cat", stdin="hi\n")
        env = as_user(user, "paractl bash -- 'echo $FOO; id -un'")
        sub = as_user(user, "cd sub && paractl bash -- 'pwd; echo ok > ../made'")
        client = as_user(user, "python -P -c \"from para.client import Client\n"
                               "with Client() as c: print(c.run('bash', command='pwd').stdout, end='')\"")
        batch = as_user(user, "printf 'tasks:\\n  - id: w\\n    tool: bash\\n    args: {command: \"echo b > from-batch\"}\\n'"
                              " > b.yaml && paractl batch b.yaml")
        status = as_user(user, "paractl status")
        assert exit7.returncode == 7, exit7.stderr
        assert cat.stdout == "hi\n", cat.stderr
        assert env.stdout == f"bar\n{name}\n", env.stderr
        assert sub.stdout == f"{home}/proj/sub\n" and (home / "proj" / "made").read_text() == "ok\n", sub.stderr
        assert client.stdout == f"{home}/proj\n", client.stderr
        assert batch.returncode == 0 and (home / "proj" / "from-batch").read_text() == "b\n", batch.stdout + batch.stderr
        assert f"{home}/proj" in status.stdout and "workspaces:" in status.stdout, status.stdout
        if "isolation    namespaces" in status.stdout:   # the host lets an ordinary user make namespaces
            outside = as_user(user, f"paractl bash -- 'echo bad > {home}/outside'")
            assert outside.returncode != 0 and "Read-only file system" in outside.stderr
            assert not (home / "outside").exists()
    finally:
        stop = as_user(user, "paractl shutdown")
    assert stop.returncode == 0, stop.stderr
    wait_until(lambda: subprocess.run(["pgrep", "-u", name, "-f", "para.daemon"], capture_output=True).returncode != 0,
               30, "the user's parad to exit")
