"""Namespace isolation through bubblewrap: the argv that puts a process in a sandbox.

A para worker execs itself through `worker_argv` once and then forks every
command inside that one sandbox, so a command costs a plain fork/exec (a
bubblewrap start per command costs several times that). `command_argv`
wraps a single command in a nested sandbox for a task whose policy differs
from its pool's.
"""

from __future__ import annotations

import os
from pathlib import Path

from para.sandbox import bwrap as bubblewrap, seal, tree
from para.sandbox.policy import SandboxPolicy, network_kind, resolve_path

# Sockets through which a sandboxed process could ask a privileged peer to act
# outside the sandbox: a bind mount or the network namespace does not stop them.
HOST_SOCKETS = ("/run/user", "/run/dbus", "/run/systemd/private", "/run/docker.sock",
                "/run/containerd", "/run/podman", "/run/snapd.socket")


def bwrap_path() -> str | None:
    """The bubblewrap to run (sandbox/bwrap.py chooses), or None when there is none."""
    return bubblewrap.path()


def _resolved(paths: list[str], base: str | None = None) -> list[Path]:
    """Existing paths with symlinks resolved (bubblewrap mounts on the real path), deduplicated."""
    seen: dict[str, Path] = {}
    for p in paths:
        path = Path(resolve_path(p, base))
        if path.exists():
            real = path.resolve()
            seen.setdefault(str(real), real)
    return list(seen.values())


def _read_only_paths(policy: SandboxPolicy, writable: list[Path]) -> list[Path]:
    out: list[str] = []
    for entry in policy.filesystem.read_only:
        if os.path.isabs(os.path.expanduser(entry)):
            out.append(entry)
        else:
            out.extend(str(root / entry) for root in writable)
    return _resolved(out)


def _pinned_ancestors(protected: list[Path], writable: list[Path]) -> list[Path]:
    """Directories between a writable root and a read-only path inside it.

    Bound onto themselves they become mount points, which cannot be renamed:
    otherwise `mv .git .git-old && cp -r .git-old .git` would leave a copy
    of .git/config that is writable again.
    """
    out: list[Path] = []
    for path in protected:
        root = next((w for w in writable if w in path.parents), None)
        if root is None:
            continue
        for ancestor in reversed(path.parents):
            if root in ancestor.parents and ancestor not in out:
                out.append(ancestor)
    return out


def mount_args(policy: SandboxPolicy, hide: list[str] = (), outer: SandboxPolicy | None = None,
               keep: list[str] = ()) -> list[str]:
    """bubblewrap's filesystem arguments for `policy`.

    `hide` lists extra directories to cover (parad's own); `keep` lists
    directories that must stay visible (read-only) even under the private
    /tmp, such as the Python and para code a worker runs. `outer` is the
    policy of the worker's sandbox when this one is nested inside it: its
    writable roots are made read-only again before this policy's own are
    bound, and what it covers already stays covered.
    """
    nested = outer is not None
    outer_writable = _resolved(list(outer.filesystem.writable)) if outer else []
    fs = policy.filesystem
    kept = [] if nested else _resolved(list(keep))
    writable = _resolved(fs.writable)
    protected = _read_only_paths(policy, writable)
    pinned = _pinned_ancestors(protected, writable)
    denied = [p for p in fs.deny_read if p not in outer.filesystem.deny_read] if outer else fs.deny_read
    sealing = seal.plan(denied, writable + outer_writable, [*kept, *outer_writable, *writable, *pinned, *protected],
                        fs.private_tmp, fs.read_only_root)
    args = ["--ro-bind" if fs.read_only_root else "--bind", "/", "/"]
    if nested:
        # A fresh /proc cannot be mounted under the worker's (bubblewrap
        # covers parts of it), and the worker's pid namespace already hides
        # the host: keep its /proc, /dev and private /tmp.
        args += ["--dev-bind", "/dev", "/dev"] + (["--bind", "/tmp", "/tmp"] if fs.private_tmp else [])
    else:
        # /tmp as on any host (mode 1777): commands may run as another user than the worker.
        args += ["--dev", "/dev", "--proc", "/proc"] + (["--perms", "1777", "--tmpfs", "/tmp"] if fs.private_tmp else [])
        for path in kept:
            args += ["--ro-bind", str(path), str(path)]
    # Seals before the writable roots: a writable project under a sealed ~ is bound writable over its copy.
    args += seal.mount_args(sealing.seals)
    for path in outer_writable:
        args += ["--ro-bind", str(path), str(path)]
    for path in writable:
        args += ["--bind", str(path), str(path)]
    for path in pinned:
        args += ["--bind", str(path), str(path)]
    for path in protected:
        args += ["--ro-bind", str(path), str(path)]
    # Covers come last, so no writable root can uncover them; what a seal left out needs none.
    covers = sealing.covers + ([] if nested else [*HOST_SOCKETS, *hide])
    for path in _resolved(covers):
        if sealing.visible(path):
            args += _cover(path)
    return args


def _cover(path: Path) -> list[str]:
    """Hide a path: an empty read-only directory over a directory, /dev/null over anything else."""
    if path.is_dir():
        return ["--perms", "0555", "--tmpfs", str(path), "--remount-ro", str(path)]
    return ["--ro-bind", "/dev/null", str(path)]


# What a root worker keeps to run commands as another user: switch user, then signal them.
RUN_AS_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_KILL")
# What a root worker whose commands run as root keeps: to empty its bounding set, before it drops it too.
AS_ROOT_CAPS = ("CAP_SETPCAP",)


def namespace_args(policy: SandboxPolicy, unshare_user: bool, nested: bool = False,
                   keep_caps: tuple[str, ...] = ()) -> list[str]:
    """bubblewrap's namespace and capability arguments; a root worker keeps `keep_caps` alone."""
    args = ["--die-with-parent", "--new-session"]
    if os.geteuid() == 0 and not nested:
        # bubblewrap run by root keeps every capability but CAP_SYS_ADMIN;
        # a root command could remount / read-write or read any process's fds.
        args += ["--cap-drop", "ALL"]
        for cap in keep_caps:
            args += ["--cap-add", cap]
    if not nested:
        args += ["--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    if unshare_user:
        args.append("--unshare-user")
    kind = network_kind(policy.network)
    # An allow-list's worker has a network namespace of its own (the proxy's relay listens in it);
    # a nested sandbox stays in it, so the task's own proxy port is reachable.
    if kind == "off" or (kind == "proxy" and not nested):
        args.append("--unshare-net")
    return args


def worker_argv(bwrap: str, policy: SandboxPolicy, unshare_user: bool, hide: list[str], command: list[str],
                keep: list[str] = (), binds: list[str] = (), cwd: str | None = None,
                keep_caps: tuple[str, ...] = ()) -> list[str]:
    """The argv that runs `command` (a worker) inside the pool's long-lived sandbox, in `cwd` if given;
    `keep_caps`: the capabilities a root worker keeps (see namespace_args).

    `binds` are bound writable after everything else: the worker's cgroup
    leaf for its commands, which it moves each command into from inside.
    """
    extra = [arg for path in binds for arg in ("--bind", str(path), str(path))]
    if cwd is not None:
        extra += ["--chdir", cwd]
    return [bwrap, *namespace_args(policy, unshare_user, keep_caps=keep_caps),
            *mount_args(policy, hide, keep=keep), *extra, "--", *command]


def command_argv(bwrap: str, policy: SandboxPolicy, outer: SandboxPolicy, command: list[str]) -> list[str]:
    """A nested sandbox for one command whose policy is stricter than its worker's (`outer`).

    It always needs its own user namespace: the worker holds no CAP_SYS_ADMIN.
    """
    mounts = mount_args(policy, outer=outer)
    return [bwrap, *namespace_args(policy, unshare_user=True, nested=True), *mounts, "--", *command]


def host_pid(root: int, inner_pid: int) -> int | None:
    """The pid, as we see it, of the process under `root` that calls itself `inner_pid` in its pid namespace."""
    for pid in tree.subtree(root):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("NSpid:"):
                        if int(line.split()[-1]) == inner_pid:
                            return pid
                        break
        except (OSError, ValueError):
            continue
    return None
