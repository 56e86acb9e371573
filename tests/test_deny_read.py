"""Credentials stay hidden from commands and read-only tools: those created or replaced after a
worker started, and the host's own secrets, whoever the tools run as."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from para.client import ToolError
from para.sandbox.probe import probe

HOST = probe()
needs_namespaces = pytest.mark.skipif(not HOST.namespaces, reason=f"no namespace isolation here: {HOST.namespaces_error}")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="run_as applies only when parad runs as root")


@needs_namespaces
def test_credentials_created_or_replaced_after_the_workers_started_stay_hidden(start_daemon, tmp_path: Path) -> None:
    home, project = tmp_path / "home", tmp_path / "home" / "project"
    project.mkdir(parents=True)
    (home / "notes.txt").write_text("public words\n")
    (home / ".netrc").write_text("machine old\n")
    # private_tmp off: this home lies under /tmp, which a private /tmp would hide whole.
    fs = {"writable": [str(project)], "private_tmp": False}
    d = start_daemon(pools={"bash": {"min_workers": 1, "max_workers": 1, "options": {"sandbox": {"filesystem": fs}}},
                            "read": {"min_workers": 1, "max_workers": 1}},
                     env={**os.environ, "HOME": str(home)})  # '~' in the deny list is parad's home
    # The workers are ready: now credentials appear, one new, one saved over the old by rename.
    (home / ".kube").mkdir()
    (home / ".kube" / "config").write_text("KUBE-SECRET\n")
    (home / ".netrc.new").write_text("NETRC-SECRET\n")
    os.rename(home / ".netrc.new", home / ".netrc")
    with d.client() as c:
        r = c.run("bash", command=f"cat {home}/.kube/config; cat {home}/.netrc; cat {home}/notes.txt; "
                                  f"echo made > {project}/out && echo wrote")
        with pytest.raises(ToolError, match="no such file"):
            c.run("read", path=str(home / ".kube" / "config"))
        with pytest.raises(ToolError, match="no such file"):
            c.run("read", path=str(home / ".netrc"))
        notes = c.run("read", path=str(home / "notes.txt")).value["lines"]
    assert "SECRET" not in r.stdout, r
    assert r.stdout == "public words\nwrote\n", r
    assert (project / "out").read_text() == "made\n"   # the writable root under the sealed home stays writable
    assert notes == ["public words"]


def test_a_writable_root_holding_denied_paths_is_reported_degraded(make_daemon, tmp_path: Path) -> None:
    """parad started in ~: '.' (the home) is writable, so credentials created there later cannot be
    sealed away; status, the log and the metric say so, naming the root and the paths."""
    from para.testing import FAST, stop_and_check
    home = tmp_path / "home"
    (home / "project").mkdir(parents=True)
    bash = {"min_workers": 1, "max_workers": 1}
    pools = {"bash": {**bash, "options": {"sandbox": {"filesystem": {"writable": ["."]}}}},
             "project": {**bash, "tool": "bash", "options": {"sandbox": {"filesystem": {"writable": [str(home / "project")]}}}}}
    d = make_daemon({"daemon": FAST, "pools": pools}, tmp_path / "d", {**os.environ, "HOME": str(home)}, cwd=home)
    try:
        with d.client() as c:
            status = c.status()
            metrics = c.metrics()
    finally:
        stop_and_check(d)
    reasons = status["sandbox"]["pools"]["bash"]["degraded"]
    held = [r for r in reasons if f"writable root {home} holds denied paths" in r]
    assert held and ".kube" in held[0] and ".ssh" in held[0] and "not hidden" in held[0], reasons
    assert not any("holds denied paths" in r for r in status["sandbox"]["pools"]["project"]["degraded"])
    assert "(degraded)" in status["daemon"]["isolation"]
    assert 'para_sandbox_degraded{pool="bash"} 1.0' in metrics
    assert f"writable root {home} holds denied paths" in d.log()


def read_only_pools(sandbox: dict) -> dict:
    return {tool: {"min_workers": 1, "max_workers": 1, "options": {"sandbox": sandbox}} for tool in ("read", "glob", "grep")}


@needs_root
@pytest.mark.parametrize("isolation", ["namespaces", "none"])
def test_read_only_tools_read_as_run_as(start_daemon, isolation: str) -> None:
    if isolation == "namespaces" and not HOST.namespaces:
        pytest.skip(f"no namespace isolation here: {HOST.namespaces_error}")
    # No deny list: the identity alone must keep root's files root's.
    d = start_daemon(pools=read_only_pools({"isolation": isolation, "run_as": "nobody", "deny_read": []}))
    with d.client() as c:
        with pytest.raises(ToolError, match="permission denied"):
            c.run("read", path="/etc/shadow", limit=1)
        with pytest.raises(ToolError, match="permission denied \\(read as user 'nobody', the pool's sandbox.run_as"):
            c.run("glob", patterns=["*"], root="/root", hidden=True)
        with pytest.raises(ToolError, match="permission denied"):
            c.run("grep", pattern=".", path="/root", hidden=True)
        passwd = c.run("read", path="/etc/passwd").value["lines"]  # world-readable: read as before
    assert any(line.startswith("root:") for line in passwd)
    assert d.pool("read")["state"] == "ok"


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory every user may enter (pytest's own are root's, mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix="para-public-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def real_rg() -> Path | None:
    """rg itself, not a shim in front of it (pyenv puts one under /root, which run_as cannot enter)."""
    for candidate in (Path(sys.executable).resolve().parent / "rg", shutil.which("rg")):
        if candidate and Path(candidate).is_file() and Path(candidate).read_bytes()[:4] == b"\x7fELF":
            return Path(candidate)
    return None


def unreachable_by_nobody(path: Path) -> bool:
    return subprocess.run(["test", "-x", str(path)], user=65534, group=65534, extra_groups=[]).returncode != 0


@needs_root
@pytest.mark.parametrize("isolation", ["namespaces", "none"])
def test_glob_and_grep_run_rg_as_run_as(start_daemon, public_dir: Path, isolation: str) -> None:
    if isolation == "namespaces" and not HOST.namespaces:
        pytest.skip(f"no namespace isolation here: {HOST.namespaces_error}")
    if real_rg() is None:
        pytest.skip("no rg binary found beside the interpreter or on PATH")
    # rg where nobody cannot reach it (as a pyenv or venv under /root is): the
    # worker hands it over as a descriptor it opened as root.
    hidden_bin = public_dir / "root-only"
    hidden_bin.mkdir(mode=0o700)
    shutil.copy(real_rg(), hidden_bin / "rg")
    bundled = Path(sys.executable).parent / "rg"
    used = bundled if bundled.is_file() else hidden_bin / "rg"
    if not unreachable_by_nobody(used):
        pytest.skip(f"the rg para uses here ({used}) is reachable by nobody: nothing to show")
    data = public_dir / "data"
    data.mkdir()
    (data / "public.txt").write_text("needle in public\n")
    (data / "private.txt").write_text("needle in private\n")
    (data / "private.txt").chmod(0o600)
    d = start_daemon(pools=read_only_pools({"isolation": isolation, "run_as": "nobody", "deny_read": []}),
                     env={**os.environ, "PATH": f"{hidden_bin}:{os.environ['PATH']}"})
    with d.client() as c:
        found = c.run("grep", pattern="needle", path=str(data)).value
        listed = c.run("glob", patterns=["*.txt"], root=str(data)).value
    assert [m["path"] for m in found["matches"]] == ["public.txt"]  # rg, as nobody, cannot open private.txt
    assert listed["files"] == ["private.txt", "public.txt"]         # names in a directory nobody may list


@needs_namespaces
def test_the_default_deny_list_hides_the_hosts_secrets_even_from_root(start_daemon) -> None:
    d = start_daemon(pools=read_only_pools({"run_as": None}))
    with d.client() as c:
        with pytest.raises(ToolError, match="no such file"):
            c.run("read", path="/etc/shadow", limit=1)
        with pytest.raises(ToolError, match="does not exist"):
            c.run("grep", pattern="root:", path="/etc/gshadow")
        assert c.run("read", path="/etc/passwd").value["lines"]


def test_an_rg_run_as_may_not_execute_is_named(tmp_path: Path) -> None:
    if real_rg() is None:
        pytest.skip("no rg binary found beside the interpreter or on PATH")
    from para.daemon.tools.ripgrep import executable_by
    rg = tmp_path / "rg"
    shutil.copy(real_rg(), rg)
    for mode, allowed in ((0o700, False), (0o750, False), (0o755, True)):
        rg.chmod(mode)
        fd = os.open(rg, os.O_PATH)
        try:
            assert executable_by(fd, (65534, 65534)) is allowed, oct(mode)
        finally:
            os.close(fd)
