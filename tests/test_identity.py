"""Identity, through a real root parad: a task runs (and reads) as the owner of its workspace.

A workspace of root's (a container's /app) runs commands as root with every
capability dropped and NO_NEW_PRIVS, inside the namespaces; one of user U's
runs as U; a pinned run_as still wins. Each test makes a throwaway user with
useradd and removes it after. The daemons run on the shipped sandbox defaults
(not the test suite's, which runs commands as root), so what they show is what
`pip install .` gives.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from para.client import InvalidRequest, ToolError
from para.sandbox.probe import probe
from para.testing import FAST, Daemon, paractl, stop_and_check

HOST = probe()
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="identity switches only when parad runs as root")
needs_namespaces = pytest.mark.skipif(not HOST.namespaces, reason=f"no namespace isolation here: {HOST.namespaces_error}")
needs_useradd = pytest.mark.skipif(shutil.which("useradd") is None or shutil.which("userdel") is None,
                                   reason="no useradd/userdel here to make a throwaway user")
needs_nobody = pytest.mark.skipif(not any(u.pw_name == "nobody" for u in pwd.getpwall()), reason="no user 'nobody' here")


class Places(NamedTuple):
    user: pwd.struct_passwd   # the throwaway user U
    mine: Path                # a workspace U owns
    roots: Path               # a workspace root owns
    start: Path               # where parad starts (root's)
    base: Path                # daemon.workspaces.roots: U's folder is not parad's user's


@pytest.fixture
def places() -> Iterator[Places]:
    name = f"paraid{uuid.uuid4().hex[:8]}"
    made = subprocess.run(["useradd", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin", name],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot make a throwaway user here: {made.stderr.strip()}")
    base = Path(tempfile.mkdtemp(prefix="para-id-", dir="/var/tmp"))
    try:
        base.chmod(0o755)   # U must be able to reach its own folder
        user = pwd.getpwnam(name)
        mine, roots, start = base / "mine", base / "roots", base / "start"
        for folder in (mine, roots, start):
            folder.mkdir(mode=0o755)
        os.chown(mine, user.pw_uid, user.pw_gid)
        yield Places(user, mine, roots, start, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        subprocess.run(["userdel", name], capture_output=True)


@pytest.fixture
def start_plain(places: Places, tmp_path: Path) -> Iterator:
    """start_plain(pools) -> a parad on the shipped sandbox defaults for `pools`, started in places.start,
    with places.base under daemon.workspaces.roots; stopped and checked after the test."""
    started: list[Daemon] = []

    def start(pools: dict) -> Daemon:
        config = {"daemon": {**FAST, "workspaces": {"roots": [str(places.base)]}}, "pools": pools}
        d = Daemon(config, tmp_path / f"d{len(started)}", cwd=places.start)
        started.append(d)
        return d

    yield start
    for d in started:
        stop_and_check(d)


def bash_pools(sandbox: dict | None = None, **pools: dict) -> dict:
    """A bash pool on the default policy (commands as their workspace's owner, writing there alone), and `pools`."""
    options = {"options": {"sandbox": sandbox}} if sandbox else {}
    return {"bash": {"min_workers": 1, "max_workers": 3, **options}, **pools}


def status_fields(text: str) -> dict[str, str]:
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if v}


CAPS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
SHOW = "id -u; id -g; grep -E '^(Cap|NoNewPrivs)' /proc/self/status; echo made > made"


@needs_root
@needs_useradd
@needs_namespaces
def test_a_workspace_owned_by_root_runs_as_root_with_no_capabilities(start_plain, places: Places) -> None:
    d = start_plain(bash_pools())
    with d.client() as c:
        r = c.run("bash", command=SHOW, workspace=str(places.roots))
    assert r.ok, r
    uid, gid, *rest = r.stdout.splitlines()
    status = status_fields("\n".join(rest))
    assert (uid, gid) == ("0", "0")
    assert {k: int(status[k], 16) for k in CAPS} == dict.fromkeys(CAPS, 0), status
    assert status["NoNewPrivs"] == "1"
    assert (places.roots / "made").stat().st_uid == 0
    assert "runs as: root, without capabilities" in paractl(d, "status").stdout
    # The worker made for it keeps no capability either: it switches to no one.
    (worker,) = [w for w in d.workers("bash") if w["workspace"] == str(places.roots)]
    worker_status = status_fields(Path(f"/proc/{worker['pid']}/status").read_text())
    assert int(worker_status["CapEff"], 16) == 0 and int(worker_status["CapPrm"], 16) == 0, worker_status


@needs_root
@needs_useradd
@needs_namespaces
def test_a_workspace_owned_by_a_user_runs_as_that_user_and_writes_there(start_plain, places: Places) -> None:
    u = places.user
    (places.mine / "private.txt").write_text("only U\n")
    os.chown(places.mine / "private.txt", u.pw_uid, u.pw_gid)
    (places.mine / "private.txt").chmod(0o600)
    d = start_plain(bash_pools())
    with d.client() as c:
        r = c.run("bash", command=f"{SHOW}; cat private.txt", workspace=str(places.mine))
        root_file = c.run("bash", command="cat private.txt", workspace=str(places.roots), cwd=str(places.mine))
    assert r.ok, r
    uid, gid, *_ = r.stdout.splitlines()
    assert (uid, gid) == (str(u.pw_uid), str(u.pw_gid))
    assert r.stdout.endswith("only U\n")
    assert int(status_fields(r.stdout)["CapEff"], 16) == 0
    made = (places.mine / "made").stat()
    assert (made.st_uid, made.st_gid) == (u.pw_uid, u.pw_gid)
    # Root without capabilities may not read U's private file.
    assert root_file.exit_code != 0 and "Permission denied" in root_file.stderr, root_file
    # paractl from U's project: the same identity, found from its cwd; status says who.
    out = paractl(d, "bash", "--", "id", "-u", cwd=places.mine)
    assert (out.returncode, out.stdout) == (0, f"{u.pw_uid}\n"), out.stderr
    assert f"runs as: {u.pw_name} (uid {u.pw_uid}, gid {u.pw_gid})" in paractl(d, "status").stdout


@needs_root
@needs_useradd
@needs_nobody
@needs_namespaces
def test_a_pinned_run_as_wins_over_the_owner(start_plain, places: Places) -> None:
    pinned = {"tool": "bash", "min_workers": 1, "max_workers": 1, "options": {"sandbox": {"run_as": "nobody"}}}
    d = start_plain(bash_pools(pinned=pinned))
    with d.client() as c:
        owner = c.run("bash", command="id -u", workspace=str(places.mine))
        fixed = c.run("pinned", command="id -u", workspace=str(places.mine))
    assert owner.stdout == f"{places.user.pw_uid}\n", owner
    assert fixed.stdout == f"{pwd.getpwnam('nobody').pw_uid}\n", fixed


@needs_root
@needs_useradd
def test_without_namespaces_a_root_workspace_is_refused_unless_the_policy_allows_it(start_plain, places: Places) -> None:
    always = {"tool": "bash", "min_workers": 1, "max_workers": 1,
              "options": {"sandbox": {"isolation": "none", "allow_root": "always"}}}
    d = start_plain(bash_pools({"isolation": "none"}, always=always))
    with d.client() as c:
        with pytest.raises(InvalidRequest, match="belongs to root and this pool has no namespace isolation"):
            c.run("bash", command="id -u", workspace=str(places.roots))
        mine = c.run("bash", command="id -u", workspace=str(places.mine))
        allowed = c.run("always", command=SHOW, workspace=str(places.roots))
    assert mine.stdout == f"{places.user.pw_uid}\n", mine
    assert allowed.ok, allowed
    status = status_fields(allowed.stdout)
    assert allowed.stdout.startswith("0\n0\n") and int(status["CapEff"], 16) == 0 and status["NoNewPrivs"] == "1", status


@needs_root
@needs_useradd
@pytest.mark.parametrize("isolation", ["namespaces", "none"])
def test_read_only_tools_read_as_the_workspace_owner(start_plain, places: Places, isolation: str) -> None:
    if isolation == "namespaces" and not HOST.namespaces:
        pytest.skip(f"no namespace isolation here: {HOST.namespaces_error}")
    u = places.user
    secret = places.mine / "secret.txt"
    secret.write_text("needle of U\n")
    os.chown(secret, u.pw_uid, u.pw_gid)
    secret.chmod(0o600)
    roots_only = places.roots / "roots.txt"
    roots_only.write_text("needle of root\n")
    roots_only.chmod(0o600)
    # Without namespaces, reading as root must be allowed to show it holds no file capability.
    sandbox = {"isolation": isolation, **({"allow_root": "always"} if isolation == "none" else {})}
    pools = {tool: {"min_workers": 1, "max_workers": 1, "options": {"sandbox": sandbox}} for tool in ("read", "grep")}
    d = start_plain(pools)
    with d.client() as c:
        assert c.run("read", path=str(secret), workspace=str(places.mine)).value["lines"] == ["needle of U"]
        with pytest.raises(ToolError, match="permission denied \\(read as uid 0, the owner of the task's workspace"):
            c.run("read", path=str(secret), workspace=str(places.roots))
        with pytest.raises(ToolError, match=f"permission denied \\(read as uid {u.pw_uid}"):
            c.run("read", path=str(roots_only), workspace=str(places.mine))
        found = c.run("grep", pattern="needle", path=str(places.base), workspace=str(places.mine)).value
        found_by_root = c.run("grep", pattern="needle", path=str(places.base), workspace=str(places.roots)).value
    assert [m["text"] for m in found["matches"]] == ["needle of U"]
    assert [m["text"] for m in found_by_root["matches"]] == ["needle of root"]
    # paractl sends its cwd's project as the workspace of a read too.
    out = paractl(d, "read", str(secret), cwd=places.mine)
    assert out.returncode == 0 and "needle of U" in out.stdout, out.stderr


@needs_root
@needs_useradd
@needs_namespaces
def test_a_nested_task_runs_as_its_parent_never_as_another_workspaces_owner(start_plain, places: Places) -> None:
    """A command may submit children through its worker; naming a workspace of another owner's
    must not switch them to that owner (here root's command to U's folder; U's to root's alike)."""
    d = start_plain(bash_pools())
    nested = "cd {} && paractl bash -- id -u; echo exit $?"
    named = "paractl run bash command='id -u' workspace={}; echo exit $?"
    path = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    with d.client() as c:
        same = c.run("bash", command=nested.format(places.start), workspace=str(places.roots), caller_env=path, timeout=60)
        # A nested client sends no workspace: from U's folder its child still works in the parent's, as root.
        from_theirs = c.run("bash", command=nested.format(places.mine), workspace=str(places.roots), caller_env=path,
                            timeout=60)
        other = c.run("bash", command=named.format(places.mine), workspace=str(places.roots), caller_env=path, timeout=60)
    assert same.stdout == "0\nexit 0\n", same
    assert from_theirs.stdout == "0\nexit 0\n", from_theirs
    assert other.stdout == "exit 2\n" and ("a nested task runs as its parent does" in other.stderr
                                           or "outside the parent task's" in other.stderr), other
