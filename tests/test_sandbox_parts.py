"""The sandbox's pieces without a daemon: policy tightening, bubblewrap arguments, cgroup files.

cgroup v2 delegation is rare on test hosts, so the cgroup code is driven
against a temporary directory laid out like a cgroup2 mount; a test against
the real hierarchy runs where parad can manage one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from para.daemon import isolation
from para.daemon.tools.bash import BashOptions
from para.sandbox import cgroup, namespaces
from para.sandbox.policy import PolicyError, SandboxPolicy, TaskPolicy, mounts_differ, tighten
from para.sandbox.probe import HostSupport, probe

HOST = probe()


# ---- policy ---------------------------------------------------------------------------

def test_tighten_lowers_limits_and_narrows_roots(tmp_path: Path) -> None:
    pool = SandboxPolicy.model_validate({"network": True, "limits": {"memory": "1GiB"},
                                         "filesystem": {"writable": [str(tmp_path)]}})
    task = TaskPolicy.model_validate({"network": False, "limits": {"memory": "100MiB", "processes": 8},
                                      "writable": [str(tmp_path / "sub")], "deny_read": ["/etc/shadow"]})
    effective = tighten(pool, task)
    assert effective.limits.memory == 100 << 20 and effective.limits.processes == 8
    assert effective.network is False
    assert effective.filesystem.writable == [str(tmp_path / "sub")]
    assert "/etc/shadow" in effective.filesystem.deny_read and "~/.ssh" in effective.filesystem.deny_read
    assert mounts_differ(effective, pool)
    assert pool.limits.memory == 1 << 30  # the pool's own policy is untouched


@pytest.mark.parametrize(("task", "message"), [
    ({"network": True}, "network true is refused"),
    ({"limits": {"memory": "2GiB"}}, "limits.memory 2147483648 exceeds the pool's 1073741824"),
    ({"limits": {"timeout": 10 ** 6}}, "limits.timeout"),
    ({"writable": ["/"]}, "outside the pool's writable roots"),
])
def test_tighten_refuses_to_loosen(task: dict, message: str, tmp_path: Path) -> None:
    pool = SandboxPolicy.model_validate({"limits": {"memory": "1GiB"}, "filesystem": {"writable": [str(tmp_path)]}})
    with pytest.raises(PolicyError, match=message):
        tighten(pool, TaskPolicy.model_validate(task))


def test_a_limit_the_pool_leaves_unset_may_be_set_by_a_task() -> None:
    pool = SandboxPolicy.model_validate({"limits": {"cpu_seconds": None}})
    assert tighten(pool, TaskPolicy.model_validate({"limits": {"cpu_seconds": 5}})).limits.cpu_seconds == 5


def test_same_mounts_need_no_sandbox_of_their_own() -> None:
    pool = SandboxPolicy()
    assert not mounts_differ(tighten(pool, TaskPolicy.model_validate({"limits": {"processes": 4}})), pool)
    assert tighten(pool, None) is pool


# ---- bubblewrap arguments ---------------------------------------------------------------

def _pairs(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


def test_mount_args_bind_writable_roots_and_cover_denied_paths(tmp_path: Path) -> None:
    project, secret, hooks = tmp_path / "project", tmp_path / "secret", tmp_path / "project" / ".git" / "hooks"
    hooks.mkdir(parents=True)
    secret.mkdir()
    (tmp_path / "token").write_text("x")
    policy = SandboxPolicy.model_validate({"filesystem": {
        "writable": [str(project), str(tmp_path / "missing")],
        "deny_read": [str(secret), str(tmp_path / "token"), str(tmp_path / "absent")]}})
    args = namespaces.mount_args(policy, hide=[str(tmp_path / "runtime-does-not-exist")])
    assert args[:3] == ["--ro-bind", "/", "/"] and _pairs(args, "--tmpfs")[0] == "/tmp"
    # A missing root is skipped; .git becomes a mount point, so it cannot be renamed away.
    assert _pairs(args, "--bind") == [str(project), str(project / ".git")]
    assert str(hooks) in _pairs(args, "--ro-bind")                # .git/hooks stays read-only
    assert str(secret) in _pairs(args, "--tmpfs")                  # a directory: covered by an empty one
    assert args[args.index(str(tmp_path / "token")) - 1] == "/dev/null"  # a file: /dev/null over it
    assert str(tmp_path / "absent") not in args
    # Order matters: denied paths after the writable binds, or a bind would uncover them.
    assert args.index(str(secret)) > args.index(str(project))


def test_namespace_args_follow_the_network_policy() -> None:
    assert "--unshare-net" in namespaces.namespace_args(SandboxPolicy(network=False), unshare_user=False)
    on = namespaces.namespace_args(SandboxPolicy(network=True), unshare_user=True)
    assert "--unshare-net" not in on and "--unshare-user" in on and "--unshare-pid" in on


@pytest.mark.skipif(not HOST.namespaces, reason=f"no namespace isolation here: {HOST.namespaces_error}")
def test_worker_argv_runs_a_command_in_the_sandbox(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    policy = SandboxPolicy.model_validate({"filesystem": {"writable": [str(tmp_path / "w")]}})
    argv = namespaces.worker_argv(HOST.bwrap, policy, HOST.unshare_user, [], [
        "sh", "-c", f"echo in > {tmp_path}/w/f && ! touch /etc/x 2>/dev/null && echo $$"])
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) < 10  # a fresh pid namespace
    assert (tmp_path / "w" / "f").read_text() == "in\n"


def _plans(options: dict, cgroup_root: Path | None) -> dict:
    host = HostSupport("/usr/bin/bwrap", True, False, None, True, cgroup_root, None, True)
    return isolation.plan({"bash": BashOptions.model_validate(options)}, host, hide=[])


def test_isolation_builds_the_worker_settings_and_binds_the_command_leaf(fake_cgroup: Path) -> None:
    root = fake_cgroup / "user.slice" / "parad.service"
    common = {"runtime_dir": Path("/run/para"), "heartbeat_interval": 0.5, "credit": 1, "options": {},
              "max_message_size": 1 << 20}
    settings = isolation.worker_settings(_plans({}, root)["bash"], "bash-1", **common)
    leaf = root / "pool-bash" / "bash-1"
    assert (settings.cgroup_worker, settings.cgroup_command) == (str(leaf / "worker"), str(leaf / "command"))
    assert (leaf / "command").is_dir()
    # The leaf is bound last, after every cover, so none can hide it from the worker.
    assert settings.launch[-4:] == ["--bind", str(leaf / "command"), str(leaf / "command"), "--"]
    plain = isolation.worker_settings(_plans({}, None)["bash"], "bash-1", **common)
    assert plain.launch == settings.launch[:-4] + ["--"] and plain.cgroup_command is None
    assert plain.launch[0] == "/usr/bin/bwrap" and plain.runtime_dir == "/run/para" and plain.runtime_fd is None
    none = isolation.worker_settings(_plans({"sandbox": {"isolation": "none"}}, root)["bash"], "bash-2", **common)
    assert none.launch is None and none.cgroup_command == str(root / "pool-bash" / "bash-2" / "command")


# ---- cgroups, against a directory laid out like cgroup2 --------------------------------------

@pytest.fixture
def fake_cgroup(tmp_path: Path) -> Path:
    root = tmp_path / "sys-fs-cgroup"
    (root / "user.slice" / "parad.service").mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    me = root / "user.slice" / "parad.service"
    (me / "cgroup.controllers").write_text("cpu memory pids\n")
    (me / "cgroup.procs").write_text(f"{os.getpid()}\n")
    (me / "cgroup.subtree_control").write_text("")
    (tmp_path / "proc-self-cgroup").write_text("0::/user.slice/parad.service\n")
    return root


def test_delegated_root_found_and_refused_with_reasons(fake_cgroup: Path, tmp_path: Path) -> None:
    proc = str(tmp_path / "proc-self-cgroup")
    root, error = cgroup.delegated_root(fake_cgroup, proc)
    assert root == fake_cgroup / "user.slice" / "parad.service" and error is None
    (root / "cgroup.controllers").write_text("cpu\n")
    assert cgroup.delegated_root(fake_cgroup, proc) == (None, f"controllers memory, pids are not enabled for {root}")
    (fake_cgroup / "cgroup.controllers").unlink()
    none, why = cgroup.delegated_root(fake_cgroup, proc)
    assert none is None and "no cgroup v2 hierarchy" in why
    (tmp_path / "v1").write_text("12:pids:/user.slice\n")
    (fake_cgroup / "cgroup.controllers").write_text("memory\n")
    assert cgroup.delegated_root(fake_cgroup, str(tmp_path / "v1"))[1] == "this process is in no cgroup v2 hierarchy"


def test_adopt_pool_and_worker_layout(fake_cgroup: Path) -> None:
    root = fake_cgroup / "user.slice" / "parad.service"
    cgroup.adopt(root)
    assert (root / "supervisor" / "cgroup.procs").read_text() == str(os.getpid())
    assert (root / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    pool = cgroup.make_pool(root, "bash", cpu_weight=50)
    assert (pool / "cpu.weight").read_text() == "50"
    leaf, command = cgroup.make_worker(pool, "bash-1")
    assert leaf == pool / "bash-1" / "worker" and command == pool / "bash-1" / "command"
    assert (pool / "bash-1" / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    # The commands' leaves go below command/, which holds no process: its controllers are open.
    assert (command / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    (command / "cgroup.subtree_control").unlink()  # on cgroupfs the kernel's files never stop rmdir
    (leaf / "cgroup.procs").write_text("123\n")  # a live worker: rmdir fails, as on a real cgroup
    cgroup.remove(pool / "bash-1")
    assert leaf.exists() and not command.exists()
    (leaf / "cgroup.procs").unlink()
    (pool / "bash-1" / "cgroup.subtree_control").unlink()  # on cgroupfs the kernel's files never stop rmdir
    cgroup.remove(pool / "bash-1")
    assert not (pool / "bash-1").exists()


def test_command_cgroup_limits_attribution_and_kill(tmp_path: Path) -> None:
    commands = tmp_path / "command"
    commands.mkdir()
    cg = cgroup.CommandCgroup(commands)
    leaf = cg.path
    assert leaf.parent == commands
    (leaf / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    (leaf / "pids.events").write_text("max 0\n")
    cg.prepare(memory=256 << 20, processes=64, cpu_max="50000 100000")
    assert (leaf / "memory.max").read_text() == str(256 << 20)
    assert (leaf / "memory.swap.max").read_text() == "0"
    assert (leaf / "pids.max").read_text() == "64" and (leaf / "cpu.max").read_text() == "50000 100000"
    assert cg.limit_hit() is None           # counters as they were before the command
    (leaf / "pids.events").write_text("max 2\n")
    assert cg.limit_hit() == "pids"
    (leaf / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 2\noom_kill 2\n")
    assert cg.limit_hit() == "memory"       # the kernel's OOM kill wins: it is what ended the command
    cg.kill()
    assert (leaf / "cgroup.kill").read_text() == "1"
    cg.prepare(memory=None, processes=None, cpu_max=None)
    assert (leaf / "memory.max").read_text() == "max" and (leaf / "pids.max").read_text() == "max"


def test_each_running_command_has_a_leaf_of_its_own_reused_once_empty(tmp_path: Path) -> None:
    """Several commands of one worker at once: a leaf each (limits and cgroup.kill are per leaf),
    under the worker's command/ directory; an emptied leaf serves the next command."""
    commands = tmp_path / "command"
    commands.mkdir()
    first, second = cgroup.CommandCgroup(commands), cgroup.CommandCgroup(commands)
    assert first.path != second.path and first.path.parent == second.path.parent == commands
    first.prepare(memory=1 << 20, processes=8, cpu_max=None)
    second.prepare(memory=None, processes=None, cpu_max=None)
    assert (first.path / "pids.max").read_text() == "8" and (second.path / "pids.max").read_text() == "max"
    (first.path / "pids.events").write_text("max 1\n")
    (second.path / "cgroup.procs").write_text("4242\n")   # a process outlived its command's kill
    first.release()
    second.release()
    assert first.limit_hit() == "pids"   # as it stood when released: the leaf is someone else's next
    third, fourth = cgroup.CommandCgroup(commands), cgroup.CommandCgroup(commands)
    assert third.path == first.path   # emptied: reused
    assert fourth.path not in (first.path, second.path)   # still holding a process: never reused


@pytest.mark.skipif(HOST.cgroup is None, reason=f"no delegated cgroup v2 subtree: {HOST.cgroup_error}")
def test_real_cgroup_caps_a_memory_hog(tmp_path: Path) -> None:
    root = HOST.cgroup
    cgroup.adopt(root)
    pool = cgroup.make_pool(root, "test", None)
    _, leaf = cgroup.make_worker(pool, f"t{os.getpid()}")
    # In a process of its own: a Command kills every child of its owner, and
    # pytest's children include the daemons other tests share.
    script = (
        "import sys; from pathlib import Path; from para.sandbox.command import Command, CommandSpec\n"
        "cmd = Command(CommandSpec(argv=['python3', '-c', 'x = b\"x\" * (512 << 20)'], memory=64 << 20,"
        " cgroup=Path(sys.argv[1])))\n"
        "cmd._reap_blocking(); cmd.close(); print(cmd.outcome().limit)\n"
    )
    try:
        done = subprocess.run([sys.executable, "-c", script, str(leaf)], capture_output=True, text=True, timeout=60)
        assert done.stdout.strip() == "memory", done.stderr
    finally:
        cgroup.remove(pool)


def test_code_under_tmp_stays_visible_under_the_private_tmp(tmp_path: Path) -> None:
    """A checkout in /tmp installed in editable mode: the worker must still import para in its sandbox."""
    code = tmp_path / "checkout"
    code.mkdir()
    args = namespaces.mount_args(SandboxPolicy(), keep=[str(code)])
    assert args.index(str(code)) > args.index("/tmp")  # bound after the empty /tmp, so it shows through
    assert args[args.index(str(code)) - 1] == "--ro-bind"


SWEEP_DRIVER = r"""
import json, os, select, sys, time
from para.sandbox import command, prctl, tree
from para.sandbox.command import Command, CommandSpec

prctl.set_child_subreaper()
command.SWEEP_SLICE = 0  # the least a sweep does (a pass cut short at once), as on a starved host
sweeps = 0
real_sweep = Command._sweep
def counted(self):
    global sweeps
    sweeps += 1
    real_sweep(self)
Command._sweep = counted

# 100 processes that ignore SIGTERM, each in its own session, so the group kill misses them all.
script = "for i in $(seq 100); do setsid sh -c 'trap \"\" TERM; exec sleep 60' & done; echo up; wait"
cmd = Command(CommandSpec(argv=["bash", "-c", script], kill_grace=0.1))
out = b""
end = time.monotonic() + 60
while not cmd.done and time.monotonic() < end:
    timeout = max(0.0, (cmd.next_deadline() or time.monotonic() + 0.1) - time.monotonic())
    for fd in select.select(cmd.fds(), [], [], timeout)[0]:
        cmd.on_readable(fd)
    if b"up" not in out and cmd._stdout.total:
        out = b"up"
        cmd.cancel()
    cmd.on_timer(time.monotonic())
left = tree.has_children()
cmd.close()
print(json.dumps({"done": cmd.done, "children_when_done": left, "sweeps": sweeps,
                  "cancelled": cmd.outcome().cancelled}))
"""


def test_a_tree_killed_in_slices_is_done_only_when_it_is_gone() -> None:
    """The kill sweeps in bounded passes (the worker's loop heartbeats between them), and the
    command is not done, so its result is not sent, while any of its tree is left."""
    import json
    import sys

    proc = subprocess.run([sys.executable, "-c", SWEEP_DRIVER], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["done"] and report["cancelled"], report
    assert report["children_when_done"] is False, report
    assert report["sweeps"] >= 1, report



GIVE_UP_DRIVER = r"""
import json, os, select, signal, sys, time
from para.sandbox import command, prctl, tree
from para.sandbox.command import Command, CommandSpec

prctl.set_child_subreaper()
command.SWEEP_GIVE_UP = 0.3
real = (os.killpg, signal.pidfd_send_signal, tree.kill_set, tree.signal_pids)
# No kill lands, as when a tree is stuck in the kernel (D state), which a test cannot arrange.
os.killpg = signal.pidfd_send_signal = lambda *args: None
tree.kill_set = lambda *args, **kwargs: None
tree.signal_pids = lambda *args: None

cmd = Command(CommandSpec(argv=["bash", "-c", "sleep 60 & echo up; wait"], kill_grace=0.1))
end = time.monotonic() + 30
while not cmd.done and time.monotonic() < end:
    timeout = max(0.0, (cmd.next_deadline() or time.monotonic() + 0.1) - time.monotonic())
    for fd in select.select(cmd.fds(), [], [], timeout)[0]:
        cmd.on_readable(fd)
    if cmd._stdout.total and not cmd._cancelled:
        cmd.cancel()
    cmd.on_timer(time.monotonic())
outcome = cmd.outcome()
report = {"done": cmd.done, "unkillable": len(cmd.unkillable), "signal": outcome.signal,
          "stdout": outcome.stdout.decode(), "cancelled": outcome.cancelled, "fds": cmd.fds()}
os.killpg, signal.pidfd_send_signal, tree.kill_set, tree.signal_pids = real
tree.kill_tree(os.getpid(), include_root=False)
tree.reap_children()
report["left"] = tree.has_children()
print(json.dumps(report))
"""


def test_a_tree_that_outlives_every_kill_is_given_up_and_the_command_ends() -> None:
    """After SWEEP_GIVE_UP the command is done (as killed, with its output) and names what
    survived, so the worker can report it and retire instead of waiting for ever."""
    import json
    import sys

    proc = subprocess.run([sys.executable, "-c", GIVE_UP_DRIVER], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["done"] and report["cancelled"], report
    assert report["unkillable"] >= 2, report   # bash and its sleep
    assert report["signal"] == 9 and report["stdout"] == "up\n", report
    assert report["fds"] == [], report
    assert report["left"] is False, report


BOUNDED_DRIVER = r"""
import json, os, signal, time
from para.sandbox import prctl, tree

prctl.set_child_subreaper()  # the grandchildren come back to us when their parents die
# Three children with three children each, all asleep: a tree of 12.
for _ in range(3):
    os.posix_spawn("/bin/sh", ["sh", "-c", "sleep 60 & sleep 60 & sleep 60 & wait"], dict(os.environ))
end = time.monotonic() + 20
while len(tree.subtree(os.getpid())) < 12 and time.monotonic() < end:
    time.sleep(0.01)
pids = tree.subtree(os.getpid())
report = {
    "full": len(pids),
    "past_limit": len(tree.subtree(os.getpid(), more_than=2)),
    "out_of_time": len(tree.subtree(os.getpid(), until=time.monotonic() - 1)),
}
tree.signal_pids(pids, signal.SIGKILL)
while tree.subtree(os.getpid()) and any(tree._alive(p) for p in tree.subtree(os.getpid())) and time.monotonic() < end:
    time.sleep(0.01)  # until all twelve are zombies, ours to reap
report["reaped_out_of_time"] = len(tree.reap_children(until=time.monotonic() - 1))
report["reaped"] = len(tree.reap_children())
report["left"] = tree.has_children()
print(json.dumps(report))
"""


def test_tree_walks_and_reaps_stop_early_when_asked() -> None:
    """A fork bomb's thousands must not hold the worker's loop: the walk stops past a
    process limit or a time, and reaping in slices stops at its time."""
    import json
    import sys

    proc = subprocess.run([sys.executable, "-c", BOUNDED_DRIVER], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["full"] == 12, report
    assert 2 < report["past_limit"] < 12, report
    assert report["out_of_time"] == 3, report   # the first level only: the clock had passed
    assert report["reaped_out_of_time"] == 1, report   # a slice always makes some progress
    assert report["reaped"] == 11, report
    assert report["left"] is False, report


def test_a_directory_holding_denied_paths_is_sealed_unless_writable(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "project").mkdir(parents=True)
    (home / ".config").mkdir()
    (home / ".ssh").mkdir()
    (home / "notes").write_text("x")
    (home / "link").symlink_to("notes")
    policy = SandboxPolicy.model_validate({"filesystem": {
        "private_tmp": False, "writable": [str(home / "project")],
        "deny_read": [f"{home}/.ssh", f"{home}/.kube", f"{home}/.config/gcloud", f"{home}/.aws/credentials",
                      f"{home}/project/.env", f"{home}/key*"]}})
    args = namespaces.mount_args(policy)
    # home and .config are sealed (a tmpfs, then every entry but the denied ones bound back, read-only)...
    assert _pairs(args, "--tmpfs")[:2] == [str(home), str(home / ".config")]
    assert _pairs(args, "--ro-bind")[1:4] == [str(home / ".config"), str(home / "notes"), str(home / "project")]
    assert _pairs(args, "--symlink") == ["notes"] and str(home / ".ssh") not in args
    assert args.index("--remount-ro") < args.index("--bind")  # ...before the writable root is bound over its copy
    # A missing path inside a writable root cannot be sealed: it is not hidden (nor is anything else changed there).
    assert str(home / "project" / ".env") not in args
    # A read-write root seals nothing: a writable directory replaced by a tmpfs would lose what is written to it.
    rw = SandboxPolicy.model_validate({"filesystem": {**policy.filesystem.model_dump(), "read_only_root": False}})
    assert str(home) not in _pairs(namespaces.mount_args(rw), "--tmpfs")


PAUSE_DRIVER = r"""
import json, select, time
from para.sandbox import prctl
from para.sandbox.command import Command, CommandSpec

prctl.set_child_subreaper()
streamed = []
cmd = Command(CommandSpec(argv=["head", "-c", "1000000", "/dev/zero"], no_output_timeout=0.5, drain_timeout=0.5),
              on_output=lambda stream, data: streamed.append(len(data)))
cmd.pause_output()
report = {"paused_fds": cmd.fds(), "pidfd": cmd._pidfd}
# Long past the silence and drain clocks: a paused command is not silent, nor done writing.
later = time.monotonic() + 60
report["deadline_ignores_silence"] = (cmd.next_deadline() or later) >= later
cmd.on_timer(later)
report["ended_while_paused"] = cmd._limit
cmd.resume_output()
end = time.monotonic() + 30
while not cmd.done and time.monotonic() < end:
    timeout = max(0.0, (cmd.next_deadline() or time.monotonic() + 0.1) - time.monotonic())
    for fd in select.select(cmd.fds(), [], [], timeout)[0]:
        cmd.on_readable(fd)
    cmd.on_timer(time.monotonic())
outcome = cmd.outcome()
cmd.close()
report.update(limit=outcome.limit, exit_code=outcome.exit_code, streamed=sum(streamed))
print(json.dumps(report))
"""


def test_a_paused_command_is_not_read_nor_ended_as_silent_and_resumes_whole() -> None:
    """Backpressure from a client that does not read: the worker stops reading a command's
    pipes (it blocks on write); the no-output and drain clocks wait, and nothing is lost."""
    import json
    import sys

    proc = subprocess.run([sys.executable, "-c", PAUSE_DRIVER], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["paused_fds"] == [report["pidfd"]], report
    assert report["deadline_ignores_silence"] and report["ended_while_paused"] is None, report
    assert report["limit"] is None and report["exit_code"] == 0 and report["streamed"] == 1_000_000, report
