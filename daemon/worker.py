"""A worker process: takes tasks by credit, runs one at a time, reports on five channels.

Its main loop polls the command socket, the running command's pipes and the
data socket (when output is waiting to go out), and sends a heartbeat on the
metrics channel every `heartbeat_interval` from that same loop, so a silent
worker is a hung worker. Output flow control: when the data channel is full,
the loop stops reading the command's pipes (the command blocks on write)
instead of buffering without bound, while heartbeats and cancels go on.
The supervisor does the same per task (PauseOutput/ResumeOutput) when the
client that owns a task's output is not reading it.
"""

from __future__ import annotations

if __name__ == "__main__":  # exec'd in a sandbox: first, no module from the caller's folder (safe_path)
    from para.daemon.safe_path import drop_caller_paths
    drop_caller_paths()

import collections
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import zmq

from para.daemon.child_relay import ChildRelay
from para.daemon.tools import TOOLS
from para.daemon.tools.base import Finished, RunCommand, TaskContext, ToolFailure
from para.ipc import channels, codec
from para.ipc import messages as m
from para.ipc.channels import DATA_HWM
from para.ipc.endpoints import Endpoints
from para.sandbox import identity, prctl, spawn
from para.sandbox.command import Command, Outcome

BATCH_BYTES = 1 << 20   # most bytes of output or results packed into one frame


class Worker:
    def __init__(self, worker_id: str, tool: str, settings: m.WorkerSettings) -> None:
        self.id = worker_id
        self.tool = TOOLS[tool]()
        _assume_identity(self.tool, settings)
        self.options = self.tool.Options.model_validate(settings.options)
        self.held = self.tool.held_limits(self.options)
        if self.held is not None:
            self.held.apply()
        self.credit = settings.credit
        self.command_cgroup = Path(settings.cgroup_command) if settings.cgroup_command else None
        self.heartbeat_interval = settings.heartbeat_interval
        endpoints = Endpoints(_runtime_dir(settings))
        self.ctx = zmq.Context()
        self.channels = channels.WorkerEnd(self.ctx, endpoints, worker_id)
        self.command, self.data = self.channels.command, self.channels.sockets["data"]
        self.on_command = self._command_handlers()
        self.pending: collections.deque[m.Assign] = collections.deque()
        self.current: m.Assign | None = None
        self.running: Command | None = None
        self.data_backlog: collections.deque[bytes] = collections.deque()
        self.paused: set[str] = set()   # tasks whose output the supervisor asked us not to read for now
        self.events: list[bytes] = []
        self._poll = zmq.Poller()
        self._poll.register(self.command, zmq.POLLIN)
        self._poll_key: tuple[bool, tuple[tuple[int, int], ...]] = (False, ())   # what _poll waits on beside commands
        self.chunk_seq = 0
        self.input_acked: tuple[int, bool] | None = None   # (written, closed) last acknowledged
        self.stopping = False
        self.hb_seq = 0
        self.proc = psutil.Process()
        # Commands that may submit child tasks get a socket to do it through.
        self.relay = ChildRelay(self.ctx, worker_id, settings.max_message_size) if self.tool.runs_commands else None
        if self.relay is not None:
            self._poll.register(self.relay.sock, zmq.POLLIN)
        self._act_as(settings)

    def _act_as(self, settings: m.WorkerSettings) -> None:
        """Read files as the tool's reader; let commands start as their user by posix_spawn where allowed.
        After the sockets: ZeroMQ's I/O threads, started with them, keep root's file ids to reach parad's."""
        reader = self.tool.reads_as(self.options)
        if reader is not None:
            identity.as_reader(*reader)
        user = self.tool.command_user(self.options)
        if user is not None and settings.lend_ids:
            # Commands as `user` can then start by posix_spawn, about 1.5 ms
            # cheaper than a fork. `user` may now signal the worker: parad
            # lends only where the worker is alone in its pid namespace and
            # no pool runs `user`'s commands outside one (isolation.py).
            spawn.lend_real_ids(user)

    # ---- main loop ---------------------------------------------------------

    def run(self) -> None:
        self.channels.send("command", m.Ready(self.id, os.getpid(), self.credit))
        next_heartbeat = time.monotonic()
        while not (self.stopping and self.current is None and not self.pending):
            now = time.monotonic()
            if now >= next_heartbeat:
                self._heartbeat()
                next_heartbeat = now + self.heartbeat_interval
            # Sync tools (echo, read) finish inside _start: run all that are waiting.
            while self.current is None and self.pending and len(self.data_backlog) < DATA_HWM:
                self._start(self.pending.popleft())
            self._flush_data()
            deadline = next_heartbeat
            if self.running is not None:
                deadline = min(deadline, self.running.next_deadline() or deadline)
            timeout = max(0, int((deadline - time.monotonic()) * 1000) + 1)
            self._flush_events()
            for sock, _ in self._poller().poll(timeout):
                self._on_ready(sock)
            if self.running is not None:
                self._ack_input()
                self.running.on_timer(time.monotonic())
                if self.running.done:
                    self._finish_command()
        self._flush_events()
        self._flush_data(block=True)

    def _on_ready(self, sock: Any) -> None:
        """One socket or pipe the poll found ready: a command from parad, a nested client's
        request, room on the data channel, or the running command's pipes."""
        if sock is self.command:
            self._on_command()
        elif self.relay is not None and sock is self.relay.sock:
            current = self.current.task.id if self.current else None
            for relayed in self.relay.on_readable(current):
                self.channels.send("command", relayed)
        elif sock is self.data:
            self._flush_data()
        elif self.running is not None and sock in self.running.write_fds():
            self.running.on_writable(sock)
        elif self.running is not None:
            self.running.on_readable(sock)

    def _poller(self) -> zmq.Poller:
        """What to wait on: output backlog to send, else the command's pipes; always commands.

        One poller, changed in place when that set changes (a command starts,
        a pipe closes): a new one per change cost a few registrations per command.
        """
        pipes = () if self.data_backlog or self.running is None else tuple(self.running.fds())
        # The command's stdin, while input waits for room in it: written whatever the output does.
        stdin = () if self.running is None else tuple(self.running.write_fds())
        key = (bool(self.data_backlog), tuple((fd, zmq.POLLIN) for fd in pipes) + tuple((fd, zmq.POLLOUT) for fd in stdin))
        if key == self._poll_key:
            return self._poll
        backlog, old_fds = self._poll_key
        for fd, flags in old_fds:
            if (fd, flags) not in key[1]:
                self._poll.unregister(fd)
        for fd, flags in key[1]:
            if (fd, flags) not in old_fds:
                self._poll.register(fd, flags)
        if key[0] and not backlog:
            self._poll.register(self.data, zmq.POLLOUT)
        elif backlog and not key[0]:
            self._poll.unregister(self.data)
        self._poll_key = key
        return self._poll

    def _command_handlers(self) -> dict[type, Callable[[Any], None]]:
        """What each message parad sends on the command channel does here."""
        return {
            m.Assign: self._queue, m.CancelTask: lambda msg: self._cancel(msg.task_id),
            m.Stop: self._stop, m.Relay: self._relay_down,
            m.PauseOutput: lambda msg: self._pause(msg.task_id, True),
            m.ResumeOutput: lambda msg: self._pause(msg.task_id, False),
            m.Input: self._input,
        }

    def _on_command(self) -> None:
        for msg in self.channels.commands():
            handler = self.on_command.get(type(msg))
            if handler is not None:
                handler(msg)

    def _queue(self, msg: m.Assign) -> None:
        self.pending.append(msg)

    def _stop(self, msg: m.Stop) -> None:
        self.stopping = True

    def _relay_down(self, msg: m.Relay) -> None:
        if self.relay is not None:
            self.relay.deliver(msg)

    def _pause(self, task_id: str, pause: bool) -> None:
        # Remembered for a task not started yet; a running command stops or resumes reading its pipes.
        # A task no longer held (its result crossed this message) is not remembered.
        held = (self.current is not None and self.current.task.id == task_id) or any(
            a.task.id == task_id for a in self.pending)
        if pause and held:
            self.paused.add(task_id)
        else:
            self.paused.discard(task_id)
        if self.running is None or self.current.task.id != task_id:
            return
        if pause:
            self.running.pause_output()
        else:
            self.running.resume_output()

    def _input(self, msg: m.Input) -> None:
        # parad forwards input only for the task it knows runs here, after its first
        # InputAck; one that crossed the task's end has nowhere to go.
        if self.running is None or self.running.stdin_pipe is None or self.current.task.id != msg.task_id:
            return
        self.running.stdin_pipe.feed(msg.data, msg.eof)

    def _ack_input(self) -> None:
        """Tell the task's owner (through parad) how much of its input is in the command's stdin."""
        pipe = self.running.stdin_pipe
        if pipe is None or (pipe.written, pipe.closed) == self.input_acked:
            return
        self.input_acked = (pipe.written, pipe.closed)
        self.data_backlog.append(codec.encode(m.InputAck(self.current.task.id, pipe.written, pipe.closed)))
        self._flush_data()

    def _cancel(self, task_id: str) -> None:
        if self.current is not None and self.current.task.id == task_id:
            if self.running is not None:
                self.running.cancel()
            return
        for assign in list(self.pending):
            if assign.task.id == task_id:
                self.pending.remove(assign)
                self.paused.discard(task_id)
                self._send_result(assign, m.TaskResult(task_id, assign.task.tool, m.CANCELLED, error="cancelled before it started"), started=time.monotonic())

    # ---- running a task ----------------------------------------------------

    def _start(self, assign: m.Assign) -> None:
        task = assign.task
        self.current = assign
        self.started = time.monotonic()
        ctx = TaskContext(task.id, self.id, task.timeout, task.workspace)
        try:
            args = self.tool.Args.model_validate(task.args)
            step = self.tool.run(args, self.options, ctx)
        except ToolFailure as exc:
            step = Finished(error=str(exc))
        except Exception as exc:
            self._send("error", m.ErrorReport(self.id, task.id, "exception", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
            step = Finished(error=f"{self.tool.name} raised {type(exc).__name__}: {exc}")
        if isinstance(step, Finished):
            self._finish(step, None)
            return
        self.finish_step = step
        # Only commands get a "started" event (a sync tool's result follows at
        # once), and only when someone watches: each message costs both ends.
        if assign.events:
            self.events.append(codec.encode(m.TaskEvent(task.id, self.id, "started", {"attempt": assign.attempt})))
        on_output = self._stream_chunk if task.stream else None
        if self.command_cgroup is not None:
            step.spec.cgroup = self.command_cgroup
        if self.relay is not None:
            step.spec.env = {**(step.spec.env or {}), **self.relay.env()}
        try:
            self.running = Command(step.spec, on_output, held=self.held)
            if task.id in self.paused:
                self.running.pause_output()
            self.input_acked = None
            self._ack_input()   # the first InputAck: the command's stdin is open, input may come
        except Exception as exc:  # OSError, or ValueError for a NUL byte in argv/env/cwd
            detail = exc.strerror if isinstance(exc, OSError) else str(exc)
            self._finish(Finished(error=f"cannot start {step.spec.argv[0]}: {detail}"), None)

    def _stream_chunk(self, stream: str, data: bytes) -> None:
        # Every byte is streamed: only what the result keeps is capped (output_bytes).
        # Memory stays bounded: while this backlog waits, the pipes are not read.
        self.chunk_seq += 1
        self.data_backlog.append(codec.encode(m.Chunk(self.current.task.id, stream, data, self.chunk_seq)))
        self._flush_data()

    def _finish_command(self) -> None:
        outcome = self.running.outcome()
        if self.running.unkillable:
            # Unkillable (stuck in the kernel): a worker that still holds them
            # would count them against every later command, so it retires.
            self._send("error", m.ErrorReport(self.id, self.current.task.id, "unkillable",
                                              f"processes {self.running.unkillable} outlived every kill; the worker retires"))
            self.stopping = True
        else:
            self.running.close()
        self.running = None
        step: RunCommand = self.finish_step
        answer = None
        if step.finish is not None and not outcome.cancelled and outcome.limit is None:
            try:
                answer = step.finish(outcome)
            except Exception as exc:
                answer = Finished(error=f"{self.tool.name}: cannot read the command's output: {exc}")
        self._finish(answer, outcome)

    def _finish(self, answer: Finished | None, outcome: Outcome | None) -> None:
        assign = self.current
        result = _result(assign.task, answer, outcome)
        if outcome is not None and outcome.limit:
            self._send("error", m.ErrorReport(self.id, assign.task.id, "limit", f"{outcome.limit} limit ended the command"))
        self._send_result(assign, result, self.started)
        self.paused.discard(assign.task.id)
        self.current = None
        if self.relay is not None:
            self.relay.forget_clients()
        self.chunk_seq = 0

    def _send_result(self, assign: m.Assign, result: m.TaskResult, started: float) -> None:
        result.worker = self.id
        result.attempts = assign.attempt
        if not result.duration:
            result.duration = time.monotonic() - started
        self.data_backlog.append(codec.encode(m.Done(result)))
        if self.running is not None or not self.pending:
            self._flush_data()  # else the next sync task's result joins this batch

    # ---- channels ----------------------------------------------------------

    def _send(self, channel: str, msg: Any) -> None:
        self.channels.send(channel, msg)

    def _flush_events(self) -> None:
        for chunk in codec.chunks(self.events):
            self.channels.send_encoded("event", chunk)
        self.events = []

    def _flush_data(self, block: bool = False) -> None:
        """Send waiting output and results, many per frame; stop when the channel is full."""
        backlog = self.data_backlog
        while backlog:
            batch, size = [], 0
            for frame in backlog:
                if batch and (size + len(frame) > BATCH_BYTES or len(batch) >= codec.BATCH_FRAMES):
                    break
                batch.append(frame)
                size += len(frame)
            if not self.channels.send_encoded("data", batch, block):
                return
            for _ in batch:
                backlog.popleft()

    def _heartbeat(self) -> None:
        self.hb_seq += 1
        cpu = self.proc.cpu_times()
        task = self.current.task.id if self.current else None
        self._send("metrics", m.Heartbeat(self.id, os.getpid(), self.hb_seq, self.proc.memory_info().rss, cpu.user + cpu.system, task))

    def close(self) -> None:
        if self.running is not None:
            self.running.close()
        if self.relay is not None:
            self.relay.close()
        self.channels.close(linger=1000)
        self.ctx.term()


def _result(task: m.TaskSpec, answer: Finished | None, outcome: Outcome | None) -> m.TaskResult:
    result = m.TaskResult(task.id, task.tool, m.SUCCEEDED)
    if outcome is not None:
        result.exit_code, result.signal = outcome.exit_code, outcome.signal
        result.stdout, result.stderr = outcome.stdout, outcome.stderr
        result.stdout_bytes, result.stderr_bytes = outcome.stdout_bytes, outcome.stderr_bytes
        result.truncated, result.duration = outcome.truncated, outcome.duration
        result.rusage, result.limit = outcome.rusage, outcome.limit
        if outcome.cancelled:
            result.status, result.error = m.CANCELLED, "cancelled while running"
        elif outcome.limit in ("timeout", "no_output"):
            result.status, result.error = m.TIMED_OUT, f"timed out after {outcome.limit_detail}; the command's process tree was killed"
        elif outcome.limit:
            result.status = m.FAILED
            result.error = f"the {outcome.limit} limit ({outcome.limit_detail}) ended the command; its process tree was killed"
        elif answer is not None:
            pass  # the tool read the outcome (rg exits 1 for "no match"): its answer decides
        elif outcome.signal:
            result.status, result.error = m.FAILED, f"killed by signal {outcome.signal}"
        elif outcome.exit_code:
            result.status = m.FAILED
    if answer is not None:
        # The tool turned the command's output into its answer: don't ship the raw output too.
        result.stdout = b""
        result.value = answer.value
        if answer.error is not None:
            result.status, result.error, result.error_code = m.FAILED, answer.error, m.E_TOOL
    return result


def _assume_identity(tool: Any, settings: m.WorkerSettings) -> None:
    """Take the identity parad gave this worker. A root worker whose commands run as root (a
    workspace of root's) keeps no capability: they could get none from it, even without namespaces."""
    tool.ids = (settings.uid, settings.gid) if settings.uid is not None else None
    tool.identity_error = settings.identity_error
    tool.confined = settings.confined
    if tool.ids == identity.ROOT and os.geteuid() == 0:
        prctl.drop_capabilities()


def _runtime_dir(settings: m.WorkerSettings) -> Path:
    """parad's runtime directory; inside a sandbox, which hides it, through our descriptor of it."""
    if settings.runtime_fd is not None:
        return Path(f"/proc/self/fd/{settings.runtime_fd}")
    return Path(settings.runtime_dir)


def worker_main(worker_id: str, tool: str, settings: m.WorkerSettings) -> None:
    """Entry point in a freshly forked child, or in a sandbox (see forkserver)."""
    # Nothing a command runs gains privileges, and none can reach into the worker.
    prctl.set_no_new_privs()
    prctl.set_not_dumpable()
    # Orphans of a command (setsid, double fork) come back to us, not to the
    # sandbox's init, so a kill of "everything below the worker" gets them.
    prctl.set_child_subreaper()
    # Before zmq starts its threads (the sets are per thread): nothing a worker
    # execs keeps a capability bubblewrap's --cap-add made ambient or inheritable.
    prctl.clear_ambient_capabilities()
    prctl.clear_inheritable_capabilities()
    worker = Worker(worker_id, tool, settings)
    try:
        worker.run()
    finally:
        worker.close()


if __name__ == "__main__":
    # Exec'd inside a sandbox: the fork server left our Spawn in descriptor argv[1].
    import sys
    with os.fdopen(int(sys.argv[1]), "rb") as spawn_file:
        request = codec.decode(spawn_file.read())
    # The descriptor of parad's runtime directory stays ours: no command may inherit it.
    os.set_inheritable(request.settings.runtime_fd, False)
    worker_main(request.worker, request.tool, request.settings)
