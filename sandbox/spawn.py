"""Starting a command's process: the cheapest way that still applies its confinement.

Three ways, cheapest first:

- posix_spawn (a vfork in libc, no Python in the child): when the caller
  already holds the command's rlimits, so the child inherits them, and needs
  no cgroup move, and no user switch beyond what posix_spawn's RESETIDS does
  (see lend_real_ids). It has no chdir, so the caller steps into the
  command's directory for the call and back out at once.
- subprocess with a user switch done in C: a fork, but no Python in the child.
- subprocess with a Python pre-exec step (cgroup move, rlimits, user switch,
  parent-death signal): the slowest, about 2 ms more per command.

Every descriptor para opens is close-on-exec (PEP 446, and libzmq's own), so
the posix_spawn child sees only its three standard streams; a test holds it to that.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from para.sandbox import cgroup, prctl
from para.sandbox.limits import Limits

# Python ignores SIGPIPE and SIGXFSZ, and parad may have been started
# ignoring more (nohup, `&`): a command starts with every handler at default.
_DEFAULT_SIGNALS = signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}
_home: int | None = None  # the directory we started in, to step back to after a spawn


@dataclass(slots=True)
class Started:
    pid: int
    stdout: int           # read ends, owned by the caller
    stderr: int
    popen: subprocess.Popen | None  # kept so subprocess does not reap the pid itself later


def start(argv: list[str], executable: str | None, cwd: str | None, env: dict[str, str] | None, stdin: int | None,
          inherited: bool, limits: Limits, leaf: Path | None, user: tuple[int, int] | None,
          pass_fds: tuple[int, ...] = ()) -> Started:
    """Start `argv` in a new session with stdout/stderr on fresh pipes; stdin from `stdin` (None: /dev/null).

    The read ends are non-blocking. `inherited`: the caller holds every one of
    `limits` itself, so the child needs no setup of its own. `pass_fds` stay
    open in the child (an executable named as /proc/self/fd/N needs N).
    """
    out_r, out_w = _pipe()
    err_r, err_w = _pipe()
    try:
        if inherited and leaf is None and not pass_fds and (user is None or lent(user)):
            pid, popen = _posix_spawn(argv, executable, cwd, env, stdin, out_w, err_w, resetids=user is not None), None
        else:
            popen = _popen(argv, executable, cwd, env, stdin, out_w, err_w, inherited, limits, leaf, user, pass_fds)
            pid = popen.pid
    except BaseException:
        os.close(out_r)
        os.close(err_r)
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
    return Started(pid, out_r, err_r, popen)


def _pipe() -> tuple[int, int]:
    """A close-on-exec pipe whose read end alone is non-blocking (the command writes to a blocking one)."""
    read, write = os.pipe2(os.O_CLOEXEC)
    # A fresh read end's status flags are O_RDONLY alone: one F_SETFL, not set_blocking's get and set.
    fcntl.fcntl(read, fcntl.F_SETFL, os.O_NONBLOCK)
    return read, write


def lend_real_ids(user: tuple[int, int]) -> None:
    """Make `user` this process's real uid and gid; the effective and saved ids stay root.

    The process keeps its privileges (they follow the effective id), and a
    child spawned with RESETIDS takes the real ids as its effective ones, so
    it execs as `user`, with every id `user`'s and no capabilities, without a
    fork-time switch. The price: `user`'s processes may signal this one, so
    only a process alone in its pid namespace with its own commands may do it.
    """
    # The kernel drops ambient capabilities only when no id is left root, and
    # the saved id of a RESETIDS child still is until exec: drop them, or the
    # command would exec holding the worker's SETUID/SETGID/KILL. Ambient sets
    # are per thread: worker_main clears them before any thread starts, this
    # covers a caller that did not.
    prctl.clear_ambient_capabilities()
    os.setgroups([])
    os.setresgid(user[1], -1, -1)
    os.setresuid(user[0], -1, -1)
    prctl.set_not_dumpable()  # still: not ptrace-able by those processes


def lent(user: tuple[int, int]) -> bool:
    """Whether lend_real_ids(user) is in force (the effective ids stay elsewhere)."""
    return os.getuid() == user[0] and os.getgid() == user[1] and os.geteuid() != user[0]


def _posix_spawn(argv: list[str], executable: str | None, cwd: str | None, env: dict[str, str] | None,
                 stdin: int | None, out_w: int, err_w: int, resetids: bool) -> int:
    global _home
    env = dict(os.environ) if env is None else env
    path = executable or resolve(argv[0], env.get("PATH", os.defpath))
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0) if stdin is None else (os.POSIX_SPAWN_DUP2, stdin, 0),
        (os.POSIX_SPAWN_DUP2, out_w, 1),
        (os.POSIX_SPAWN_DUP2, err_w, 2),
    ]
    if cwd is not None:
        if _home is None:
            _home = os.open(".", os.O_PATH | os.O_DIRECTORY)
        os.chdir(cwd)
    try:
        return os.posix_spawn(path, argv, env, file_actions=actions, setsid=True, resetids=resetids,
                              setsigdef=_DEFAULT_SIGNALS, setsigmask=())
    finally:
        if cwd is not None:
            # Relative paths elsewhere in the process (policy roots) mean
            # parad's directory: the process is never left anywhere else.
            os.fchdir(_home)


def resolve(name: str, path: str) -> str:
    """`name` as posix_spawn needs it: a path, looked up on `path` if it has no slash.

    Callers that spawn the same program often pass it resolved (the bash tool
    does, on its pool's PATH, never a task's).
    """
    if "/" in name:
        return name
    found = shutil.which(name, path=path)
    if found is None:
        raise FileNotFoundError(2, f"{name} not found on PATH", name)
    return found


def _popen(argv: list[str], executable: str | None, cwd: str | None, env: dict[str, str] | None, stdin: int | None,
           out_w: int, err_w: int, inherited: bool, limits: Limits, leaf: Path | None,
           user: tuple[int, int] | None, pass_fds: tuple[int, ...]) -> subprocess.Popen:
    # Only the user switch is left: subprocess does it in C (but not root's: its capabilities must go).
    in_c = inherited and leaf is None and (user is None or user[0] != 0)
    return subprocess.Popen(
        argv, executable=executable, cwd=cwd, env=env,
        stdin=subprocess.DEVNULL if stdin is None else stdin, stdout=out_w, stderr=err_w,
        start_new_session=True, close_fds=True, pass_fds=pass_fds,
        preexec_fn=None if in_c else _child_setup(limits, leaf, user),
        user=user[0] if in_c and user else None,
        group=user[1] if in_c and user else None,
        extra_groups=[] if in_c and user else None,
    )


def _child_setup(limits: Limits, leaf: Path | None, user: tuple[int, int] | None) -> Callable[[], None]:
    def setup() -> None:
        # Runs between fork and exec: no locks, no logging, nothing allocated that matters.
        # The order matters: the cgroup and the limits need the worker's
        # privileges, so the switch to `user` comes last.
        if leaf is not None:
            cgroup.enter(leaf)  # before exec, so nothing the command forks escapes the cgroup
        limits.apply()
        if user is not None:
            os.setgroups([])
            os.setresgid(user[1], user[1], user[1])
            os.setresuid(user[0], user[0], user[0])
            if user[0] == 0:
                prctl.drop_capabilities()  # root as a task's identity: none of the worker's capabilities
        prctl.set_parent_death_signal(signal.SIGKILL)  # after the switch, which clears it
    return setup
