"""Ending whole process trees, including members that left the process group."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable


def children_of(pid: int) -> list[int]:
    """Direct children of `pid`, read from /proc (cheaper than a scan of every process)."""
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                out.extend(int(c) for c in f.read().split())
    except (OSError, ValueError):
        pass
    return out


def subtree(pid: int, *, more_than: int | None = None, until: float | None = None) -> list[int]:
    """Every descendant of `pid`, by walking /proc/PID/task/TID/children.

    The walk stops early, with what it found so far, once it has found more
    than `more_than` processes or the monotonic clock passes `until`: the
    thousands of a fork bomb must not hold the caller's loop.
    """
    found: list[int] = []
    stack = [pid]
    while stack:
        kids = children_of(stack.pop())
        found.extend(kids)
        stack.extend(kids)
        if (more_than is not None and len(found) > more_than) or (until is not None and time.monotonic() >= until):
            break
    return found


def has_children() -> bool:
    """Whether this process has any child, live or zombie, in one system call.

    For a child subreaper whose command has been reaped, "no children" means
    nothing of the command's tree is left: every orphan is reparented to us.
    """
    try:
        # WNOWAIT leaves a zombie for its reaper; ECHILD means no child at all.
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def signal_pids(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def reap_children(until: float | None = None) -> list[tuple[int, int]]:
    """waitpid every exited child of this process (or, with `until`, at least one
    and as many more as fit before the monotonic clock passes it); returns
    (pid, status) pairs.

    Each waitpid walks the list of children, so thousands of zombies cost
    time quadratic in their number: a loop that must go on reaps in slices.
    """
    reaped = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.append((pid, status))
        if until is not None and time.monotonic() >= until:
            return reaped


def kill_tree(root: int, include_root: bool = True, deadline: float = 5.0, until: float | None = None) -> int:
    """SIGKILL `root`'s whole tree until none is left; returns how many were signalled.

    `deadline` 0 makes one pass and returns at once (for a loop that must not block).
    `until` (a monotonic time) also cuts a pass short: part of the tree is
    killed, and the caller comes back for the rest.
    Called on itself by a child subreaper, it reaps as it goes, so the dead
    do not pile up as zombies in the next scan.
    """
    def find() -> list[int]:
        return ([root] if include_root else []) + subtree(root, until=until)
    reap = (lambda: reap_children(until)) if root == os.getpid() else None
    return kill_set(find, reap, deadline, until)


def kill_set(find: Callable[[], list[int]], reap: Callable[[], object] | None = None, deadline: float = 5.0,
             until: float | None = None) -> int:
    """SIGKILL what `find()` returns, again and again, until it finds nothing alive; returns how many were signalled.

    `find` is asked afresh each pass: a process whose parent was killed moves
    (to a subreaper), and a forking loop adds members. They are stopped before
    they are killed so it cannot add them faster than they die. `reap` (if
    given) runs before each scan and once at the end, so the dead do not pile
    up as zombies. `deadline` and `until` as for kill_tree.
    """
    end = time.monotonic() + deadline
    signalled = 0
    while True:
        if reap is not None:
            reap()  # thousands of dead children make every scan below slow
        live = []
        for pid in find():
            if _alive(pid):
                live.append(pid)
            if until is not None and time.monotonic() >= until:
                break
        if not live:
            if reap is not None and signalled:
                reap()  # what the last pass killed
            return signalled
        signal_pids(live, signal.SIGSTOP)
        signal_pids(live, signal.SIGKILL)
        signalled += len(live)
        if time.monotonic() >= (end if until is None else min(end, until)):
            return signalled
        time.sleep(0.001)


def _alive(pid: int) -> bool:
    """Exists and is not a zombie (read from /proc/PID/stat, cheaper than psutil).

    A process whose main thread exited while others run shows Z too, yet
    lives on: a SIGKILL to its pid ends those threads, so it counts as alive.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    if stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3] not in (b"Z", b"X"):
        return True
    try:
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return False
