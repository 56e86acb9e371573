"""The fork server: a clean process from which workers are forked.

The supervisor holds a live ZeroMQ context (I/O threads, sockets), and forking
such a process is unsafe. So the supervisor execs this small server first,
over a SOCK_SEQPACKET socketpair; it imports the tools once (every worker
starts warm: the built-in tools, and the plugin tools its pools name, passed
on its command line), holds no ZeroMQ state, forks a worker per `Spawn` request, reaps
them on SIGCHLD and reports each exit as `Exited`. It dies with the supervisor,
ending every process below it first (workers, their commands, orphans).

Run as `python -P -m para.daemon.forkserver FD [TOOL...]` (-P: the supervisor's working
directory, a caller's project folder, is not on sys.path); `ForkServer` is
the supervisor's handle on it.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # first of all: no module may come from the caller's folder (safe_path)
    from para.daemon.safe_path import drop_caller_paths
    drop_caller_paths()

import dataclasses
import os
import select
import signal
import socket
import subprocess
from pathlib import Path

import psutil

from para.ipc import codec
from para.ipc import messages as m
from para.sandbox import cgroup, prctl, tree

MAX_PACKET = 1 << 20


class ForkServer:
    """Supervisor side: start the server, ask for workers, read what it reports."""

    def __init__(self, plugins: list[str] = ()) -> None:
        self.plugins = list(plugins)   # plugin tool references to import before forking (tools/registry.py)
        self.sock, self.proc = self._start()

    def _start(self) -> tuple[socket.socket, subprocess.Popen]:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        proc = subprocess.Popen(
            [sys.executable, "-P", "-m", "para.daemon.forkserver", str(theirs.fileno()), *self.plugins],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        mine.setblocking(False)
        return mine, proc

    def alive(self) -> bool:
        return self.proc.poll() is None

    def restart(self) -> None:
        """The server died: reap it and start another (its descriptor changes)."""
        self.close()
        self.sock, self.proc = self._start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def fileno(self) -> int:
        return self.sock.fileno()

    def spawn(self, request: m.Spawn) -> None:
        self.sock.send(codec.encode(request))

    def read(self) -> list[bytes]:
        """Every packet waiting: encoded Spawned and Exited reports, for the supervisor to decode."""
        out = []
        while True:
            try:
                packet = self.sock.recv(MAX_PACKET)
            except BlockingIOError:
                return out
            if not packet:
                return out
            out.append(packet)

    def close(self) -> None:
        """EOF tells the server to kill its workers and exit; then reap it."""
        self.sock.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ---- the server process ----------------------------------------------------

_stopping = False   # SIGTERM came (parad died, or someone asked): end every worker tree and exit


def _on_sigterm(*_: object) -> None:
    global _stopping
    _stopping = True


def serve(fd: int, plugins: list[str] = ()) -> None:
    sock = socket.socket(fileno=fd)
    # When parad dies, even by SIGKILL, its end of the socket pair closes: the loop sees EOF
    # and ends every tree below us. SIGTERM at its death is the backstop, never SIGKILL: dying
    # at once would leave the commands of unsandboxed workers (no pid namespace, a session of
    # their own) running unsupervised.
    signal.signal(signal.SIGTERM, _on_sigterm)
    prctl.set_parent_death_signal(signal.SIGTERM)
    prctl.set_not_dumpable()  # commands of parad's own user cannot read our memory or environment
    # Orphans of a killed worker come back here and are reaped.
    prctl.set_child_subreaper()
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the supervisor decides when we stop
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)

    from para.daemon import worker_entry as _preload  # noqa: F401  (warm workers: tools and both workers imported once)
    # Plugins too, after drop_caller_paths: from parad's own path (site-packages, PYTHONPATH outside the caller's folder).
    from para.daemon.tools.registry import preload
    preload(plugins)
    from para.daemon import collector
    collector.serve_long()   # what workers inherit stays frozen in them: their collections never touch its pages

    workers: dict[int, tuple[str, bool]] = {}   # pid -> (worker id, in a sandbox)
    try:
        _serve_loop(sock, wake_r, wake_w, workers)
    except (BrokenPipeError, ConnectionError):
        pass  # the supervisor is gone: end its workers below
    # Every descendant, not only the workers: as the subreaper we hold their commands'
    # orphans too, and a tree killed whole cannot fork new members while it dies.
    tree.kill_tree(os.getpid(), include_root=False)
    tree.reap_children()


def _exit_status(status: int, sandboxed: bool) -> tuple[int | None, int | None]:
    """(exit code, signal); bubblewrap reports a worker killed by signal N as exit 128+N."""
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    if sandboxed and code is not None and code > 128:
        return None, code - 128
    return code, sig


def _serve_loop(sock: socket.socket, wake_r: int, wake_w: int, workers: dict[int, tuple[str, bool]]) -> None:
    while True:
        ready, _, _ = select.select([sock, wake_r], [], [])
        if _stopping:
            return
        if wake_r in ready:
            _drain(wake_r)
            for pid, status in tree.reap_children():
                entry = workers.pop(pid, None)
                if entry is not None:
                    sock.send(codec.encode(m.Exited(entry[0], pid, *_exit_status(status, sandboxed=entry[1]))))
            _kill_orphans(workers)
        if sock in ready:
            packet = sock.recv(MAX_PACKET)
            if not packet:
                return
            request = codec.decode(packet)
            pid = _fork_worker(request, sock, wake_r, wake_w)
            workers[pid] = (request.worker, bool(request.settings.launch))
            sock.send(codec.encode(m.Spawned(request.worker, pid)))


def _fork_worker(request: m.Spawn, sock: socket.socket, wake_r: int, wake_w: int) -> int:
    server = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        sock.close()
        signal.set_wakeup_fd(-1)
        os.close(wake_r)
        os.close(wake_w)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # our handler would make an unsandboxed worker deaf to it
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # commands must not inherit SIG_IGN
        os.setsid()
        prctl.set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != server:   # the server died before the line above: no signal will come
            os._exit(1)
        prctl.set_child_subreaper()
        settings = request.settings
        if settings.workspace:
            os.chdir(settings.workspace)   # '.' for the worker and its commands: its relative paths are the workspace's
            if os.getcwd() != settings.workspace:   # made a symlink since parad checked it: bind nothing of it
                raise RuntimeError(f"workspace {settings.workspace} now leads to {os.getcwd()}")
        if settings.cgroup_worker:
            cgroup.enter(Path(settings.cgroup_worker))
        if settings.launch:
            _exec_sandboxed(request)
        from para.daemon.worker_entry import worker_main
        worker_main(request.worker, request.tool, settings)
    except BaseException:
        import traceback
        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


def _exec_sandboxed(request: m.Spawn) -> None:
    """Become the pool's sandbox (bubblewrap) with a fresh worker inside it.

    The worker reaches the supervisor's sockets through an O_PATH descriptor
    of the runtime directory (/proc/self/fd/N/...), which stays hidden from
    the commands it runs; its settings arrive in a memfd.
    """
    settings = request.settings
    runtime = os.open(settings.runtime_dir, os.O_PATH | os.O_DIRECTORY)
    inside = m.Spawn(request.worker, request.pool, request.tool,
                     dataclasses.replace(settings, launch=None, runtime_fd=runtime))
    spawn_fd = os.memfd_create("para-spawn", 0)
    os.write(spawn_fd, codec.encode(inside))
    os.lseek(spawn_fd, 0, os.SEEK_SET)
    for fd in (runtime, spawn_fd):
        os.set_inheritable(fd, True)
    launch = settings.launch
    os.execve(launch[0], [*launch, sys.executable, "-P", "-m", "para.daemon.worker_entry", str(spawn_fd)], settings.env)


def _kill_orphans(workers: dict[int, tuple[str, bool]]) -> None:
    """A dead worker's commands were reparented to us (the subreaper): end them."""
    for child in psutil.Process().children():
        if child.pid not in workers:
            tree.kill_tree(child.pid)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


if __name__ == "__main__":
    from para.daemon.heap import return_freed_buffers
    return_freed_buffers()   # workers forked from here pass output buffers through too
    serve(int(sys.argv[1]), sys.argv[2:])
