"""Which processes under this one belong to which of its running commands.

A worker drives several commands at once. Each starts in a session of its
own (spawn.start), so its top process's pid is its session id; the worker is
a child subreaper, so what a command orphans (a double fork) comes back to
the worker as a direct child: a *stray*. A command's processes are:

- the subtree of its top process, while that is not reaped;
- the strays in its session (orphans that kept it) and their subtrees;
- (cgroup) its own leaf, which Command reads and kills itself.

A stray that left the session (setsid after a double fork) names no owner.
It is condemned, with its subtree, once every command still running started
after it: none of those can be its ancestor, so its own command has ended.

Nothing here waits for "any child": that would reap a sibling's top process
behind its Command's back. Only strays are reaped here; a Command reaps its top.
"""

from __future__ import annotations

import math
import os
import time

from para.sandbox import tree

CLK_TCK = os.sysconf("SC_CLK_TCK")
# /proc starttime is rounded down to a tick; one more tick of slack, so a
# stray is never taken as older than a command that could be its ancestor.
TICK_SLACK = 2


def now_ticks() -> float:
    """CLOCK_BOOTTIME in clock ticks: the clock of /proc/PID/stat starttime."""
    return time.clock_gettime(time.CLOCK_BOOTTIME) * CLK_TCK


def stat(pid: int) -> tuple[int, int] | None:
    """(session id, start time in ticks since boot) of `pid`, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        fields = data[data.rfind(b")") + 2:].split()
        return int(fields[3]), int(fields[19])   # fields 6 and 22 of proc(5)
    except (OSError, IndexError, ValueError):
        return None


def session_of(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


class Family:
    """The running commands of this process and its strays.

    One per process (`default()`): a second Family in the same process would
    take the first one's commands for strays. Pass one explicitly only where
    every command of the process goes through it.
    """

    def __init__(self) -> None:
        self._running: dict[object, tuple[int, float]] = {}  # command -> (top pid, start in ticks)
        self._unreaped: dict[object, int] = {}   # command -> its top, while that is our child
        self.doomed: set[int] = set()   # strays condemned by the start-time rule, until reaped
        self._children_fd = -1   # our main thread's /proc children file, kept open: a pread is 3x cheaper than an open

    def reset(self) -> None:
        """Forget everything: a forked child's commands are none of its parent's."""
        self._running.clear()
        self._unreaped.clear()
        self.doomed.clear()
        if self._children_fd >= 0:
            os.close(self._children_fd)   # the parent's list, not ours
            self._children_fd = -1

    def join(self, command: object, pid: int, started: float) -> None:
        """`command`'s top is `pid`, started no earlier than `started` (now_ticks() before the spawn)."""
        self._running[command] = (pid, started)
        self._unreaped[command] = pid

    def reaped(self, command: object) -> None:
        """`command`'s top is reaped: it is no child of ours any more."""
        self._unreaped.pop(command, None)

    def leave(self, command: object) -> None:
        """`command` has ended: its strays no longer have a running owner (nor does its top, if never reaped)."""
        self._running.pop(command, None)
        self._unreaped.pop(command, None)

    def tops(self) -> set[int]:
        return {pid for pid, _ in self._running.values()}

    def children(self) -> list[int]:
        """Direct children, live or zombie: commands are started by, and orphans come back to, the main thread."""
        return [int(c) for c in self._read_children().split()]

    def _read_children(self) -> bytes:
        try:
            if self._children_fd < 0:
                pid = os.getpid()
                self._children_fd = os.open(f"/proc/{pid}/task/{pid}/children", os.O_RDONLY | os.O_CLOEXEC)
            data = os.pread(self._children_fd, 65536, 0)   # offset 0: the list as it is now
            while len(data) % 65536 == 0 and data:   # thousands of children (a fork bomb's orphans)
                chunk = os.pread(self._children_fd, 65536, len(data))
                if not chunk:
                    break
                data += chunk
            return data
        except OSError:
            return b""

    def strays(self) -> list[int]:
        """Direct children that are no running command's top, nor in our own session.

        A command starts a session of its own, and nothing can join another
        session: a child in ours is this process's own business, not a command's.
        """
        kids = self.children()
        if not kids:
            return kids
        tops = set(self._unreaped.values())
        ours = os.getsid(0)
        return [k for k in kids if k not in tops and session_of(k) != ours]

    def members(self, session: int, top_alive: bool, more_than: int | None = None,
                until: float | None = None) -> list[int]:
        """The processes of the command whose session is `session` (see the module docstring).

        `top_alive`: its top is not reaped yet, so `session` still names it
        (a reaped pid may be anyone's by now). `more_than` and `until` cut the
        walk short as tree.subtree does.
        """
        roots = [session] if top_alive else []
        roots += [s for s in self.strays() if session_of(s) == session]
        return self._walk(roots, more_than, until)

    def doomed_trees(self, until: float | None = None) -> list[int]:
        return self._walk(list(self.doomed), None, until)

    @staticmethod
    def _walk(roots: list[int], more_than: int | None, until: float | None) -> list[int]:
        found = list(roots)
        for root in roots:
            left = None if more_than is None else more_than - len(found)
            found += tree.subtree(root, more_than=left, until=until)
            if (more_than is not None and len(found) > more_than) or (until is not None and time.monotonic() >= until):
                break
        return found

    def reap_strays(self, strays: list[int] | None = None, until: float | None = None) -> list[int]:
        """Reap the strays that have exited (no one needs their status); returns those still there.

        With `until` (a monotonic time) it may stop early, as tree.reap_children does.
        """
        live = []
        for pid in self.strays() if strays is None else strays:
            if until is not None and time.monotonic() >= until:
                break
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self.doomed.discard(pid)
            else:
                live.append(pid)
        return live

    def check(self) -> list[int]:
        """Reap exited strays and condemn (into `doomed`) those no running command can own.

        Returns the strays still there. Cheap when nothing was left behind:
        one system call with no child at all, one /proc read with no stray.
        """
        if not self._running and not tree.has_children():
            self.doomed.clear()
            return []
        # As many children as unreaped tops (each one of them): no stray, and no list to build.
        if self._read_children().count(b" ") == len(self._unreaped):
            self.doomed.clear()
            return []
        strays = self.strays()
        live = self.reap_strays(strays)
        tops = self.tops()
        oldest = min((start for _, start in self._running.values()), default=math.inf)
        for pid in live:
            if pid in self.doomed or session_of(pid) in tops:
                continue   # in a running command's session: that command's own
            found = stat(pid)
            if found is not None and found[1] + TICK_SLACK <= oldest:
                self.doomed.add(pid)
        return live


_DEFAULT = Family()
os.register_at_fork(after_in_child=_DEFAULT.reset)


def default() -> Family:
    """This process's Family, which every Command uses unless given another."""
    return _DEFAULT
