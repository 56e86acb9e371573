"""One confined command, driven without blocking by its owner's poll loop.

The owner (a para worker) polls `fds()`, calls `on_readable(fd)` when one is
readable and `on_timer(now)` at `next_deadline()`. The command moves through
running -> (terminating) -> draining -> done; when `done`, `outcome()` tells
how it ended and which limit, if any, ended it. `pause_output()` takes the
pipes out of `fds()` until `resume_output()`: the command blocks on a full
pipe, which is how a reader that does not keep up slows it down.

Several commands may run side by side in one process: each acts on its own
processes only (its Family says which, see family.py), and none waits for
"any child", which could reap a sibling's top process.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from para.sandbox import cgroup, spawn, tree
from para.sandbox import family as families
from para.sandbox.input_pipe import InputPipe
from para.sandbox.limits import Limits
from para.sandbox.output import CappedBuffer
from para.sandbox.watch import TreeWatch

READ_SIZE = 65536
SWEEP_SLICE = 0.05   # longest a kill pass holds the owner's loop
SWEEP_PAUSE = 0.002  # between passes, for the loop's own work
SWEEP_GIVE_UP = 10.0  # a tree still there after this long is unkillable (D state): stop trying
PIDFD_SIGNAL_PROCESS_GROUP = 4  # linux/pidfd.h, Linux 6.9+


@dataclass(slots=True)
class CommandSpec:
    argv: list[str]
    executable: str | None = None      # the program's path, if argv[0] is not how to find it
    pass_fds: tuple[int, ...] = ()     # descriptors the program needs (an executable given as /proc/self/fd/N)
    cwd: str | None = None
    env: dict[str, str] | None = None
    stdin: bytes | None = None
    stdin_stream: bool = False         # stdin is a pipe fed as input arrives (`stdin_pipe`), instead of `stdin`
    limits: Limits = field(default_factory=Limits)
    timeout: float | None = None
    kill_grace: float = 2.0
    drain_timeout: float = 0.5
    output_cap: int = 1 << 20
    output_kill: int | None = None     # a stream past this many bytes ends the command
    no_output_timeout: float | None = None  # seconds of silence on both streams that end the command
    memory: int | None = None          # sampled tree RSS (see watch.py) where no cgroup caps it
    processes: int | None = None       # sampled tree size, likewise
    user: tuple[int, int] | None = None  # (uid, gid) to run as; needs root
    cgroup: Path | None = None         # a leaf that caps memory and processes instead of sampling
    cpu_max: str | None = None         # cgroup cpu.max, when there is a cgroup


@dataclass(slots=True)
class Outcome:
    exit_code: int | None
    signal: int | None
    stdout: bytes
    stderr: bytes
    stdout_bytes: int
    stderr_bytes: int
    truncated: bool
    duration: float
    limit: str | None          # "timeout", "no_output", "cpu", "memory", "pids", "file_size", "output" or None
    limit_detail: str | None   # the limit's value, for people: "256 MiB", "2s"
    cancelled: bool
    rusage: dict[str, float]


_LIMIT_SIGNALS = {signal.SIGXCPU: "cpu", signal.SIGXFSZ: "file_size"}


def _limit_signal(sig: int | None, code: int | None, limits: Limits) -> str | None:
    """The limit a signal stands for, if that limit was set; a shell reports a child killed by N as exit 128+N."""
    if sig is None and code is not None and code > 128:
        sig = code - 128
    limit = _LIMIT_SIGNALS.get(sig)
    was_set = {"cpu": limits.cpu_seconds, "file_size": limits.file_size}
    return limit if limit and was_set[limit] is not None else None


def _size(n: int | None) -> str:
    if n is None:
        return "unset"
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:g} {unit}" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1024
    return str(n)


def limit_detail(limit: str | None, spec: CommandSpec) -> str | None:
    """The value of the limit that ended a command, in words."""
    if limit is None:
        return None
    # Lambdas: only the limit that fired has a value to format.
    words = {
        "timeout": lambda: f"{spec.timeout:g}s",
        "no_output": lambda: f"{spec.no_output_timeout:g}s without output",
        "cpu": lambda: f"{spec.limits.cpu_seconds} CPU seconds",
        "memory": lambda: _size(spec.memory),
        "pids": lambda: f"{spec.processes} processes",
        "file_size": lambda: _size(spec.limits.file_size),
        "output": lambda: f"{_size(spec.output_kill)} on one stream",
    }
    try:
        return words[limit]()
    except (KeyError, TypeError, ValueError):
        return limit


class Command:
    """A started command; see the module docstring for the protocol.

    `held` names the limits the calling process already holds itself
    (Limits.apply_inheritable). When the command's limits are exactly those,
    it is spawned with vfork, which is about 2 ms faster than a fork that
    runs Python code in the child; anything else, a CPU limit included,
    takes that slower path.

    `family` is the registry of this process's running commands (by default
    the process's own): what tells this command's processes from a sibling's.

    `on_close` is called with each descriptor the owner may poll (its pipes,
    its stdin, its pidfd) just before the command closes it: the owner must
    stop polling it then, not after. A closed descriptor's file lives on while
    a copy does (a child between its spawn and its exec holds all of ours),
    and so does its entry in an epoll, which goes on reporting it, at a number
    that may be another descriptor's by then.
    """

    def __init__(self, spec: CommandSpec, on_output: Callable[[str, bytes], None] | None = None,
                 held: Limits | None = None, family: families.Family | None = None,
                 on_close: Callable[[int], None] | None = None):
        self.spec = spec
        self._on_close = on_close
        self._family = family or families.default()
        self._on_output = on_output
        self._stdout = CappedBuffer(spec.output_cap)
        self._stderr = CappedBuffer(spec.output_cap)
        self._limit: str | None = None
        self._cancelled = False
        self._status: int | None = None
        self._rusage = None
        self._kill_at: float | None = None
        self._drain_until: float | None = None
        self._sweep_at: float | None = None
        self._sweep_since: float | None = None
        self._settled = False   # ended, and nothing of it is left: close() has nothing to look for
        self.unkillable: list[int] = []  # what outlived SWEEP_GIVE_UP seconds of kills
        self.paused = False              # its output is not read for now (see pause_output)
        self.started = time.monotonic()
        self._ended: float | None = None
        # Inherited: the worker holds the rlimits, so the child needs no setup
        # of its own (see spawn.py). A CPU limit is set in the child before
        # exec, not by prlimit() after the start: without CAP_SYS_RESOURCE (a
        # sandboxed worker) that needs the worker's real ids to equal all of
        # the child's, never so for a root worker's run_as child, and a race
        # for a worker that lent its real ids (the kernel wakes a vfork parent
        # before exec commits the child's saved id): starts failed with EPERM.
        # Where it is allowed it still lands late: on a loaded host, bash had
        # run its first commands, and could have forked past the limit.
        inherited = held is not None and held == spec.limits
        self._cgroup = cgroup.CommandCgroup(spec.cgroup) if spec.cgroup else None
        if self._cgroup is not None:
            self._cgroup.prepare(spec.memory, spec.processes, spec.cpu_max)
        self.stdin_pipe: InputPipe | None = None
        stdin = self._stdin_file(spec.stdin)
        if spec.stdin_stream:
            stdin, write_end = os.pipe()
            self.stdin_pipe = InputPipe(write_end, on_close)
        born = families.now_ticks()  # before the spawn: no earlier than anything the command starts
        try:
            started = spawn.start(spec.argv, spec.executable, spec.cwd, spec.env, stdin, inherited, spec.limits,
                                  self._cgroup.path if self._cgroup else None, spec.user, spec.pass_fds)
        except BaseException:
            if self.stdin_pipe is not None:
                self.stdin_pipe.close()
            if self._cgroup is not None:
                self._cgroup.release()
            raise
        finally:
            if stdin is not None:
                os.close(stdin)  # the child has its own copy
        self.pid = started.pid
        self._family.join(self, self.pid, born)
        self._popen = started.popen
        self._pidfd = os.pidfd_open(self.pid)
        self._pipes = {started.stdout: "stdout", started.stderr: "stderr"}   # non-blocking (spawn.start)
        self._deadline = self.started + spec.timeout if spec.timeout else None
        self._silent_until = self.started + spec.no_output_timeout if spec.no_output_timeout else None
        # Where a cgroup caps memory and processes, the kernel enforces them; else sample.
        watched = (None, None) if self._cgroup else (spec.memory, spec.processes)
        self._watch = TreeWatch(*watched)
        self._next_sample = self.started + self._watch.interval if self._watch.active else None

    @staticmethod
    def _stdin_file(data: bytes | None) -> int | None:
        if data is None:
            return None
        fd = os.memfd_create("para-stdin", os.MFD_CLOEXEC)
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
        return fd

    # ---- what the owner polls ------------------------------------------------

    def fds(self) -> list[int]:
        fds = [] if self.paused else list(self._pipes)
        if self._status is None:
            fds.append(self._pidfd)
        return fds

    def exit_fds(self) -> list[int]:
        """The pidfd, while the command runs: what tells its exit, polled even while no pipe is read."""
        return [self._pidfd] if self._status is None else []

    def write_fds(self) -> list[int]:
        """The stdin pipe, while it has input waiting to be written (see on_writable)."""
        pipe = self.stdin_pipe
        return [pipe.fd] if pipe is not None and pipe.wants_write() else []

    def on_writable(self, fd: int) -> None:
        if self.stdin_pipe is not None and fd == self.stdin_pipe.fd:
            self.stdin_pipe.write()

    @property
    def done(self) -> bool:
        return self._status is not None and not self._pipes and self._sweep_at is None

    def next_deadline(self) -> float | None:
        # Called after every event of every command: a plain loop, cheaper than min() over a generator.
        soonest = None
        for t in ((self._deadline, self._kill_at, self._next_sample, self._sweep_at) if self.paused else
                  (self._deadline, self._kill_at, self._next_sample, self._sweep_at, self._silent_until, self._drain_until)):
            if t and (soonest is None or t < soonest):
                soonest = t
        return soonest

    def pause_output(self) -> None:
        """Stop reading the pipes until resume_output(); a paused command is not silent, nor done writing."""
        self.paused = True

    def resume_output(self) -> None:
        if not self.paused:
            return
        self.paused = False
        # The silence and drain clocks start again: while paused, nobody read.
        now = time.monotonic()
        if self._silent_until is not None:
            self._silent_until = now + self.spec.no_output_timeout
        if self._drain_until is not None:
            self._drain_until = now + self.spec.drain_timeout

    def on_readable(self, fd: int) -> None:
        if fd == self._pidfd:
            self._reap()
            return
        name = self._pipes.get(fd)
        if name is None:
            return
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        if not data:
            self._close_pipe(fd)
            return
        buffer = self._stdout if name == "stdout" else self._stderr
        buffer.write(data)
        if self._silent_until is not None:
            self._silent_until = time.monotonic() + self.spec.no_output_timeout
        if self._on_output is not None:
            self._on_output(name, data)
        if self.spec.output_kill is not None and buffer.total > self.spec.output_kill and self._status is None:
            self._limit_reached("output")

    def on_timer(self, now: float) -> None:
        if self._sweep_at and now >= self._sweep_at:
            self._sweep()
        if self._next_sample and now >= self._next_sample:
            # Sampling goes on after the command's own exit: what it left
            # running (holding the pipes) is still its own.
            self._next_sample = now + self._watch.interval
            if limit := self._watch.check(self._members):
                self._limit_reached(limit)
        if self._deadline and now >= self._deadline and self._status is None:
            self._deadline = self._silent_until = None
            self._limit = self._limit or "timeout"
            self._terminate(now)
        if self._silent_until and now >= self._silent_until and self._status is None and not self.paused:
            self._deadline = self._silent_until = None
            self._limit = self._limit or "no_output"
            self._terminate(now)
        if self._kill_at and now >= self._kill_at:
            self._kill_at = None
            self._kill_everything()
        if self._drain_until and now >= self._drain_until and not self.paused:
            # Something (a grandchild) still holds the pipes: end it and stop reading.
            self._drain_until = None
            self._kill_everything()
            for fd in list(self._pipes):
                self._drain_nonblocking(fd)
                self._close_pipe(fd)

    def cancel(self) -> None:
        if self._status is None and not self._cancelled:
            self._cancelled = True
            self._terminate(time.monotonic())

    # ---- internals ---------------------------------------------------------

    def _limit_reached(self, limit: str) -> None:
        # No grace: a command past its memory, process or output limit gets no time to grow further.
        self._limit = self._limit or limit
        self.paused = False  # a command being ended is drained, whoever reads its output
        self._next_sample = self._deadline = self._silent_until = None
        self._kill_everything()
        self._kill_at = None

    def _members(self, more_than: int | None = None, until: float | None = None) -> list[int]:
        """This command's processes: its tree, its session's strays and theirs, its cgroup leaf's."""
        pids = self._family.members(self.pid, self._status is None, more_than, until)
        if self._cgroup is not None:
            known = set(pids)
            pids += [p for p in self._cgroup.procs() if p not in known]
        return pids

    def _targets(self, until: float | None = None) -> list[int]:
        """What a kill sweep must end: this command's processes, and strays no running command owns."""
        return self._members(until=until) + self._family.doomed_trees(until)

    def _left(self) -> bool:
        """Whether anything of this command is left to kill; cheaper than listing it all."""
        if self._status is None or self._family.doomed:
            return True
        if self._cgroup is not None and self._cgroup.procs():
            return True
        # Its top reaped, whatever is left descends from a stray in its session.
        return bool(self._family.members(self.pid, False, more_than=0))

    def _signal_group(self, sig: int) -> None:
        # Through the pidfd: it names this command's group even once the top is
        # reaped, when its pid (and group id) may be a sibling's by now.
        if self._pidfd >= 0:
            try:
                signal.pidfd_send_signal(self._pidfd, sig, None, PIDFD_SIGNAL_PROCESS_GROUP)
                return
            except ProcessLookupError:
                return
            except OSError:
                pass  # before Linux 6.9: by group id, which is only sure to be ours until the top is reaped
        if self._status is None:
            try:
                os.killpg(self.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def _terminate(self, now: float) -> None:
        self.paused = False  # a command being ended is drained, whoever reads its output
        # Bounded: the SIGKILL sweep after the grace finds whatever this walk missed.
        tree.signal_pids(self._members(until=now + SWEEP_SLICE), signal.SIGTERM)
        self._signal_group(signal.SIGTERM)
        self._kill_at = now + self.spec.kill_grace

    def _kill_everything(self, block: bool = False) -> None:
        # The worker is a child subreaper, so every orphan of this command is
        # now a child of ours (a stray, see family.py): kill them, not just the group.
        if self._cgroup is not None:
            self._cgroup.kill()
        # The group first, in one call: the kernel lets no member fork
        # past a group-wide SIGKILL, so a fork bomb stops growing at once.
        self._signal_group(signal.SIGKILL)
        if block:
            tree.kill_set(self._targets, self._family.reap_strays)
        else:
            self._sweep()

    def _sweep(self) -> None:
        # Killing and reaping thousands of processes can take seconds on a busy
        # host; in slices, the owner's loop goes on (heartbeats, cancels) between them.
        if self._status is None:
            self._reap()  # it may have exited on its own: keep its real status
        now = time.monotonic()
        self._sweep_since = self._sweep_since or now
        end = now + SWEEP_SLICE  # the kill pass and the reaping after it share one slice
        self._family.check()  # strays that no running command can own are swept with ours
        tree.kill_set(lambda: self._targets(until=end), lambda: self._family.reap_strays(until=end),
                      deadline=0, until=end)
        if not self._left():
            self._sweep_at = self._sweep_since = None
            self._settled = self._status is not None and not self._pipes
        elif now - self._sweep_since > SWEEP_GIVE_UP:
            self.unkillable = self._targets()
            self._sweep_at = self._sweep_since = None
            self._abandon()  # the owner reports them and retires
        else:
            self._sweep_at = now + SWEEP_PAUSE

    def _abandon(self) -> None:
        # What would not die may hold the pipes, or be the command itself:
        # waiting on it would hang the task for good. It is done now, as killed,
        # with the output it gave.
        if self._status is None:
            self._status, self._ended = signal.SIGKILL, time.monotonic()
            self._reaped(self._status)
        for fd in list(self._pipes):
            self._drain_nonblocking(fd)
            del self._pipes[fd]
            self._close_fd(fd)
        self._kill_at = self._drain_until = self._next_sample = self._deadline = self._silent_until = None

    def _reap(self) -> None:
        try:
            pid, status, rusage = os.wait4(self.pid, os.WNOHANG)
        except ChildProcessError:
            # Reaped behind our back (by a waitpid(-1) elsewhere in the process): its status is lost.
            pid, status, rusage = self.pid, signal.SIGKILL, None
        if pid == 0:
            return
        self._status = status
        self._family.reaped(self)
        self._reaped(status)
        self._rusage = rusage
        self._ended = time.monotonic()
        self._kill_at = None
        self._deadline = self._silent_until = None
        self._drain_until = self._ended + self.spec.drain_timeout
        if not self._pipes:
            self._finish()  # the pipes closed first: what the command left running goes now

    def _drain_nonblocking(self, fd: int) -> None:
        buffer = self._stdout if self._pipes[fd] == "stdout" else self._stderr
        while True:
            try:
                data = os.read(fd, READ_SIZE)
            except (BlockingIOError, OSError):
                return
            if not data:
                return
            buffer.write(data)

    def _close_pipe(self, fd: int) -> None:
        self._pipes.pop(fd)
        self._close_fd(fd)
        if not self._pipes and self._status is not None:
            self._finish()

    def _finish(self) -> None:
        self._drain_until = self._next_sample = None
        self._family.leave(self)
        # Nothing left behind, by anyone: no stray, one /proc read at most.
        if self._family.check() and self._left():
            if self._watch.active and self._limit is None:
                self._limit = self._watch.check(self._members)  # what it left behind may be past a limit
            self._kill_everything()
        else:
            self._settled = True

    def close(self) -> None:
        """Release everything, killing the tree if the command still runs and whatever it left."""
        if self._status is None:
            self._kill_everything(block=True)
            self._reap_blocking()
        self._family.leave(self)
        if not self._settled and self._family.check() and self._left():
            self._kill_everything(block=True)
        if self._cgroup is not None:
            self._cgroup.release()
        self._sweep_at = None
        for fd in list(self._pipes):
            self._close_pipe(fd)
        if self.stdin_pipe is not None:
            self.stdin_pipe.close()
        if self._pidfd >= 0:
            self._close_fd(self._pidfd)
            self._pidfd = -1

    def _close_fd(self, fd: int) -> None:
        if self._on_close is not None:
            self._on_close(fd)   # the owner stops polling it while it is still ours (see the class docstring)
        os.close(fd)

    def _reap_blocking(self) -> None:
        try:
            _, status, rusage = os.wait4(self.pid, 0)
        except ChildProcessError:  # reaped behind our back (by a waitpid(-1) elsewhere in the process)
            status, rusage = signal.SIGKILL, None
        self._status, self._rusage = status, rusage
        self._family.reaped(self)
        self._reaped(status)
        self._ended = time.monotonic()

    def _reaped(self, status: int) -> None:
        if self._popen is not None:
            # Else subprocess would waitpid this pid again later, maybe someone else's by then.
            self._popen.returncode = os.waitstatus_to_exitcode(status)

    def _used_cpu_limit(self) -> bool:
        ru, cap = self._rusage, self.spec.limits.cpu_seconds
        return bool(ru and cap and ru.ru_utime + ru.ru_stime >= cap * 0.9)

    def outcome(self) -> Outcome:
        status = self._status or 0
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        limit = self._limit or _limit_signal(sig, code, self.spec.limits)
        if limit == "cpu" and sig is None and not self._used_cpu_limit():
            limit = None  # exit 152 from the command itself, not a child killed by SIGXCPU
        if limit is None and self._cgroup is not None:
            limit = self._cgroup.limit_hit()
        ru = self._rusage
        cpu_cap = self.spec.limits.cpu_seconds
        if limit is None and sig == signal.SIGKILL and ru and cpu_cap:
            if ru.ru_utime + ru.ru_stime >= cpu_cap:
                limit = "cpu"
        usage = {} if ru is None else {
            "utime": ru.ru_utime, "stime": ru.ru_stime, "maxrss_kb": float(ru.ru_maxrss),
        }
        return Outcome(
            exit_code=code, signal=sig,
            stdout=self._stdout.getvalue(), stderr=self._stderr.getvalue(),
            stdout_bytes=self._stdout.total, stderr_bytes=self._stderr.total,
            truncated=self._stdout.truncated or self._stderr.truncated,
            duration=(self._ended or time.monotonic()) - self.started,
            limit=limit, limit_detail=limit_detail(limit, self.spec), cancelled=self._cancelled, rusage=usage,
        )
