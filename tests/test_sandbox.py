"""Hostile commands through a real daemon: each is contained, attributed, and leaves nothing behind.

Every test checks three things: the command failed for the right reason
(`result.limit`, or the kernel's refusal), no process of it survived, and the
pool went on serving.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import tempfile
import uuid
from pathlib import Path

import psutil
import pytest

from para.client import InvalidRequest, ToolError
from para.sandbox.probe import probe
from para.testing import bwrap_closed_to_run_as, marked, wait_until

HOST = probe()
needs_namespaces = pytest.mark.skipif(not HOST.namespaces, reason=f"no namespace isolation here: {HOST.namespaces_error}")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="run_as applies only when parad runs as root")


@pytest.fixture
def request_cleanup():
    paths: list[Path] = []
    yield paths.append
    for p in paths:
        shutil.rmtree(p, ignore_errors=True)


def sandboxed(sandbox: dict | None = None, **pool) -> dict:
    return {"bash": {"min_workers": 2, "max_workers": 2, **pool, "options": {"sandbox": sandbox or {}}}}


def command_processes(d) -> list[psutil.Process]:
    """Processes under parad that are neither para (python) nor its sandboxes (bwrap)."""
    out = []
    for p in d.tree():
        try:
            if p.name() not in ("bwrap",) and not p.name().startswith("python"):
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def still_serves(d) -> None:
    with d.client() as c:
        results = list(c.map("bash", [{"command": f"echo {i}"} for i in range(4)]))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(4)]
    wait_until(lambda: not command_processes(d), 10, "every command process to end")


# ---- limits: attributed, and the tree is gone ---------------------------------------

def test_fork_bomb_is_stopped_by_the_process_limit(start_daemon) -> None:
    # A bomb loads a 2-core host hard while it is killed: 5s (the default is 15s)
    # keeps hang detection in the test without making it a race with the load.
    d = start_daemon(pools=sandboxed({"limits": {"processes": 64}}), daemon={"failure_detection_timeout": 5.0})
    with d.client() as c:
        r = c.run("bash", command="bomb() { bomb | bomb & }; bomb; wait", timeout=60)
    assert r.status == "failed" and r.limit == "pids", r
    assert "pids limit (64 processes)" in r.error
    still_serves(d)


def test_memory_hog_is_stopped_by_the_memory_limit(start_daemon) -> None:
    d = start_daemon(pools=sandboxed({"limits": {"memory": "128MiB"}}))
    hog = "python3 -c 'x = []\nwhile True: x.append(b\"x\" * (8 << 20))'"
    with d.client() as c:
        r = c.run("bash", command=hog, timeout=60)
    assert r.status == "failed" and r.limit == "memory", r
    assert "memory limit (128 MiB)" in r.error
    still_serves(d)


def test_cpu_spin_is_stopped_by_the_cpu_limit(start_daemon) -> None:
    d = start_daemon(pools=sandboxed({"limits": {"cpu_seconds": 1}}))
    with d.client() as c:
        r = c.run("bash", command="while :; do :; done", timeout=60)
    assert r.status == "failed" and r.limit == "cpu" and (r.exit_code != 0 or r.signal), r
    still_serves(d)


def test_yes_flood_is_capped_and_stopped_by_the_output_limit(start_daemon) -> None:
    d = start_daemon(pools=sandboxed({"limits": {"output_bytes": 4096, "output_kill_bytes": "8MiB"}}))
    with d.client() as c:
        r = c.run("bash", command="yes", timeout=60)
    assert r.status == "failed" and r.limit == "output", r
    assert r.truncated and r.stdout_bytes > 8 << 20
    assert r.stdout.startswith("y\ny\n") and "bytes truncated" in r.stdout and len(r.stdout) < 4096 + 100
    still_serves(d)


def test_a_double_forked_daemon_does_not_outlive_its_command(start_daemon, tmp_path: Path) -> None:
    d = start_daemon(pools=sandboxed())
    tag, started = f"para-daemon-{uuid.uuid4().hex[:8]}", tmp_path / "started"
    with d.client() as c:
        # Detached from the pipes and the session: nothing ties it to the command but ancestry.
        r = c.run("bash", command=f"(setsid bash -c 'exec </dev/null >/dev/null 2>&1; touch {started}; "
                                  f"exec -a {tag} sleep 300' &); echo launched")
    assert r.ok and r.stdout == "launched\n"
    wait_until(lambda: started.exists() or not marked(tag), 10, "the daemon to start")
    wait_until(lambda: not marked(tag), 10, "the escaped daemon to be killed")
    still_serves(d)


# ---- namespaces: filesystem, network, processes ----------------------------------------

@needs_namespaces
def test_writes_outside_the_writable_roots_fail(start_daemon, tmp_path: Path, request_cleanup) -> None:
    writable = tmp_path / "project"
    writable.mkdir()
    # Not under /tmp, which the sandbox replaces with its own.
    other = Path(tempfile.mkdtemp(prefix="para-test-", dir="/var/tmp"))
    request_cleanup(other)
    d = start_daemon(pools=sandboxed({"filesystem": {"writable": [str(writable)]}}))
    with d.client() as c:
        inside = c.run("bash", command=f"echo ok > {writable}/file && cat {writable}/file")
        outside = c.run("bash", command=f"echo bad > {other}/file")
        hooks = c.run("bash", command=f"mkdir -p {writable}/.git/hooks 2>&1; echo x > {writable}/.git/hooks/pre-commit")
        etc = c.run("bash", command="touch /etc/para-sandbox-test")
    assert inside.ok and inside.stdout == "ok\n"
    assert outside.exit_code != 0 and "Read-only file system" in outside.stderr
    assert not (other / "file").exists()
    assert etc.exit_code != 0 and not Path("/etc/para-sandbox-test").exists()
    # .git/hooks did not exist when the sandbox was made, so it could be created:
    # the read-only rule covers what exists at worker start (tested next).
    assert hooks.ok
    still_serves(d)


@needs_namespaces
def test_existing_git_hooks_stay_read_only_inside_a_writable_root(start_daemon, tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / ".git" / "hooks").mkdir(parents=True)
    (project / ".git" / "config").write_text("[core]\n")  # protected: it exists when the workers start
    d = start_daemon(pools=sandboxed({"filesystem": {"writable": [str(project)]}}))
    with d.client() as c:
        r = c.run("bash", command=f"echo evil > {project}/.git/hooks/pre-commit")
        config = c.run("bash", command=f"echo '[core] fsmonitor = evil' >> {project}/.git/config")
        renamed = c.run("bash", command=f"mv {project}/.git {project}/.git-old")
        ok = c.run("bash", command=f"echo fine > {project}/notes.txt")
    assert r.exit_code != 0 and "Read-only file system" in r.stderr
    assert not (project / ".git" / "hooks" / "pre-commit").exists()
    assert config.exit_code != 0 and (project / ".git" / "config").read_text() == "[core]\n"
    # Renaming .git away (to put a writable copy in its place) fails: it is a mount point.
    assert renamed.exit_code != 0 and "busy" in renamed.stderr, renamed
    assert not (project / ".git-old").exists()
    assert ok.ok and (project / "notes.txt").read_text() == "fine\n"


@needs_namespaces
def test_denied_paths_cannot_be_read(start_daemon, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "id_rsa").write_text("PRIVATE-KEY-MATERIAL\n")
    token = tmp_path / "token.txt"
    token.write_text("TOKEN-MATERIAL\n")
    d = start_daemon(pools=sandboxed({"filesystem": {"writable": [str(tmp_path)], "deny_read": [str(secrets), str(token)]}}))
    with d.client() as c:
        r = c.run("bash", command=f"cat {secrets}/id_rsa; ls -A {secrets}; cat {token}; echo end")
    assert "PRIVATE-KEY-MATERIAL" not in r.stdout and "TOKEN-MATERIAL" not in r.stdout
    assert r.stdout == "end\n" and "No such file or directory" in r.stderr
    still_serves(d)


@pytest.fixture
def listener():
    """A TCP listener on the host's 127.0.0.1, outside any sandbox; never accepts on its own."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(0)
    yield sock
    sock.close()


def connect_command(sock: socket.socket) -> str:
    return f"exec 3<>/dev/tcp/127.0.0.1/{sock.getsockname()[1]} && echo connected"


@needs_namespaces
def test_network_off_cannot_reach_a_listener_on_the_host(start_daemon, listener) -> None:
    d = start_daemon(pools=sandboxed({"network": False}))
    with d.client() as c:
        r = c.run("bash", command=connect_command(listener), timeout=30)
    assert r.exit_code != 0 and "connected" not in r.stdout, r
    with pytest.raises(BlockingIOError):
        listener.accept()
    still_serves(d)


@needs_namespaces
def test_network_on_reaches_the_listener(start_daemon, listener) -> None:
    """The control for the test above: the same command connects when the policy allows it."""
    d = start_daemon(pools=sandboxed({"network": True}))
    with d.client() as c:
        r = c.run("bash", command=connect_command(listener), timeout=30)
    assert r.ok and r.stdout == "connected\n"


@needs_namespaces
def test_host_processes_are_invisible_in_proc(start_daemon) -> None:
    d = start_daemon(pools=sandboxed())
    with d.client() as c:
        r = c.run("bash", command="for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done")
    visible = [line for line in r.stdout.splitlines() if line.strip()]
    # The sandbox's init (bubblewrap), the worker, and this command: nothing of the host.
    others = [line for line in visible if not line.startswith(HOST.bwrap) and "para.daemon.worker" not in line
              and not line.startswith(("bash -c for p", "tr "))]
    assert r.ok and len(visible) >= 2 and others == [], visible
    assert not any("para.daemon --config" in line for line in visible), visible


@needs_namespaces
def test_environment_secrets_do_not_leak(start_daemon) -> None:
    env = dict(os.environ, MY_API_TOKEN="s3cret-token", DEPLOY_KEY="s3cret-key", NAMED_SECRET="shared-ok")
    d = start_daemon(pools=sandboxed({"env": {"secrets": ["NAMED_SECRET"], "set": {"FROM_POLICY": "1"}}}), env=env)
    with d.client() as c:
        r = c.run("bash", command="env; cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'",
                  env={"EXTRA": "per-task"})
    assert "s3cret" not in r.stdout + r.stderr
    assert "NAMED_SECRET=shared-ok" in r.stdout and "FROM_POLICY=1" in r.stdout and "EXTRA=per-task" in r.stdout


@needs_root
def test_commands_run_as_the_configured_user_when_parad_is_root(start_daemon) -> None:
    d = start_daemon(pools=sandboxed({"run_as": "nobody", "filesystem": {"writable": []}}))
    with d.client() as c:
        r = c.run("bash", command="grep -E '^(Uid|Gid|Groups|CapPrm|CapEff|NoNewPrivs):' /proc/$$/status", cwd="/")
    assert r.ok, r
    status = {line.split(":")[0]: line.split()[1:] for line in r.stdout.splitlines()}
    nobody = pwd.getpwnam("nobody")
    # Real, effective, saved and filesystem ids all nobody's: nothing left to switch back to.
    assert status["Uid"] == [str(nobody.pw_uid)] * 4, status
    assert status["Gid"] == [str(nobody.pw_gid)] * 4, status
    assert status["Groups"] == [] and status["NoNewPrivs"] == ["1"], status
    assert int(status["CapPrm"][0], 16) == 0 and int(status["CapEff"][0], 16) == 0, status
    if HOST.namespaces:  # the worker lent nobody its real uid, so commands start by posix_spawn
        worker = Path(f"/proc/{d.workers('bash')[0]['pid']}/status").read_text()
        uids = next(line.split()[1:] for line in worker.splitlines() if line.startswith("Uid:"))
        assert uids == [str(nobody.pw_uid), "0", "0", "0"], uids


@needs_root
def test_without_a_pid_namespace_commands_cannot_signal_their_worker(start_daemon) -> None:
    """In its own pid namespace a worker lends its commands' user its real ids (a cheaper
    spawn); sharing the host's, it must not, or any command could kill every bash worker."""
    d = start_daemon(pools=sandboxed({"run_as": "nobody", "isolation": "none"}))
    with d.client() as c:
        r = c.run("bash", command="id -u; kill -0 $PPID", cwd="/")
    assert r.stdout == f"{pwd.getpwnam('nobody').pw_uid}\n", r
    assert r.exit_code != 0 and "not permitted" in r.stderr, r


@needs_root
@needs_namespaces
def test_a_pool_outside_a_pid_namespace_cannot_signal_another_pools_worker(start_daemon) -> None:
    """Both pools run commands as nobody; had the namespaced pool's workers lent nobody their
    real ids, the other pool's commands, which see the host's pids, could stop them all."""
    pools = {**sandboxed({"run_as": "nobody"}),
             "plain": {"tool": "bash", "min_workers": 1, "max_workers": 1,
                       "options": {"sandbox": {"run_as": "nobody", "isolation": "none"}}}}
    d = start_daemon(pools=pools)
    target = d.workers("bash")[0]["pid"]
    with d.client() as c:
        r = c.run("plain", command=f"kill -0 {target}", cwd="/")
        assert r.exit_code != 0 and "not permitted" in r.stderr, r
        assert c.run("bash", command="id -u", cwd="/").stdout == f"{pwd.getpwnam('nobody').pw_uid}\n"


# ---- per-task policies ----------------------------------------------------------------------

def test_a_task_may_not_loosen_its_pools_policy(start_daemon) -> None:
    d = start_daemon(pools=sandboxed({"network": False, "limits": {"memory": "256MiB"}}))
    with d.client() as c:
        with pytest.raises(InvalidRequest, match="network true is refused"):
            c.run("bash", command="true", policy={"network": True})
        with pytest.raises(InvalidRequest, match=r"limits.memory .* exceeds the pool's"):
            c.run("bash", command="true", policy={"limits": {"memory": "1GiB"}})
        with pytest.raises(InvalidRequest, match="outside the pool's writable roots"):
            c.run("bash", command="true", policy={"writable": ["/etc"]})
        with pytest.raises(InvalidRequest, match="exceeds the sandbox policy's limits.timeout"):
            c.run("bash", command="true", timeout=10 ** 6)
        tighter = c.run("bash", command="seq 1000", policy={"limits": {"output_bytes": 100}})
    assert tighter.ok and tighter.truncated and tighter.stdout_bytes == len("".join(f"{i}\n" for i in range(1, 1001)))


@needs_namespaces
def test_a_task_may_narrow_the_network_and_writable_roots(start_daemon, request_cleanup, listener) -> None:
    # As root, narrowing needs run_as: writable roots the user `nobody` can reach.
    if why := bwrap_closed_to_run_as():
        pytest.skip(why)
    base = Path(tempfile.mkdtemp(prefix="para-test-", dir="/var/tmp"))
    request_cleanup(base)
    a, b = base / "a", base / "b"
    for d in (base, a, b):
        d.mkdir(exist_ok=True)
        d.chmod(0o777)
    run_as = "nobody" if os.geteuid() == 0 else None
    d = start_daemon(pools=sandboxed({"network": True, "run_as": run_as, "filesystem": {"writable": [str(a), str(b)]}}))
    with d.client() as c:
        r = c.run("bash", command=f"echo 1 > {a}/x; echo 2 > {b}/x; {connect_command(listener)}",
                  policy={"network": False, "writable": [str(a)]}, timeout=30, cwd="/")
    assert (a / "x").read_text() == "1\n" and not (b / "x").exists()
    assert "connected" not in r.stdout and r.exit_code != 0


# ---- startup: honest about what the host gives ------------------------------------------------

def test_parad_refuses_a_policy_the_host_cannot_meet(tmp_path: Path) -> None:
    import subprocess
    import sys

    import yaml

    config = tmp_path / "parad.yaml"
    config.write_text(yaml.safe_dump({"pools": {"bash": {"options": {"sandbox": {
        "isolation": "namespaces", "allow_degraded": False, "run_as": "nobody"}}}}}))
    # A bubblewrap that is not there, and named so that neither PATH's nor the wheel's replaces it.
    env = dict(os.environ, PARA_BWRAP=str(tmp_path / "no-bwrap"))
    r = subprocess.run([sys.executable, "-m", "para.daemon", "--config", str(config), "--runtime-dir", str(tmp_path / "rt"),
                        "--state-dir", str(tmp_path / "st")], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "bubblewrap" in r.stderr and "allow_degraded: true" in r.stderr
    assert not list(tmp_path.glob("rt/**/*.sock"))


def test_degraded_mode_is_logged_reported_and_measured(start_daemon, tmp_path: Path) -> None:
    env = dict(os.environ, PARA_BWRAP=str(tmp_path / "bwrap"))  # named, so neither PATH's nor the wheel's replaces it
    (tmp_path / "bwrap").write_text("#!/bin/sh\nexit 1\n")  # present, but broken
    (tmp_path / "bwrap").chmod(0o755)
    d = start_daemon(pools=sandboxed({"isolation": "namespaces", "allow_degraded": True}), env=env)
    with d.client() as c:
        status = c.status()
        metrics = c.metrics()
        r = c.run("bash", command="echo still runs", cwd="/")
    bash = status["sandbox"]["pools"]["bash"]
    assert bash["requested"] == "namespaces" and bash["effective"] == "none"
    assert any("no namespaces" in reason for reason in bash["degraded"])
    assert "(degraded)" in status["daemon"]["isolation"]
    assert 'para_sandbox_degraded{pool="bash"} 1.0' in metrics
    assert "DEGRADED" in d.log()
    assert r.ok and r.stdout == "still runs\n"


@needs_namespaces
def test_read_only_tools_cannot_see_denied_paths(start_daemon, tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "key").write_text("PRIVATE-MATERIAL\n")
    (tmp_path / "notes.txt").write_text("public words\n")
    deny = {"options": {"sandbox": {"deny_read": [str(creds)]}}}
    d = start_daemon(pools={"read": {"min_workers": 1, **deny}, "grep": {"min_workers": 1, **deny}})
    with d.client() as c:
        with pytest.raises(ToolError, match="no such file"):
            c.run("read", path=str(creds / "key"))
        assert "public words" in "".join(c.run("read", path=str(tmp_path / "notes.txt")).value["lines"])
        found = c.run("grep", pattern="PRIVATE-MATERIAL|public", path=str(tmp_path)).value
    assert [m["path"] for m in found["matches"]] == ["notes.txt"]
    assert d.pool("read")["state"] == "ok"
