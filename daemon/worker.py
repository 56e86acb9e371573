"""A worker process: takes tasks by credit, drives all its commands at once, reports on five channels.

A worker of a tool that runs commands (bash, grep, glob) starts every task
it is assigned at once: its credit is how many commands it drives side by
side. One loop polls the command socket, every running command's pipes and
pidfd, and the data socket (when output is waiting to go out), and sends a
heartbeat on the metrics channel every `heartbeat_interval` from that same
loop, so a silent worker is a hung worker. A sync tool (echo, read) answers
inside `_start`, one task after another. An async tool's worker is an
AsyncWorker (daemon/async_worker.py); daemon/worker_entry.py picks which.

Results, output and events that become ready in one turn of the loop leave
together at its end, many to a frame: a batch is never waited for, it is
whatever is ready. A frame of assignments is started as soon as it is read,
and a sync tool's answers to it leave right then, ahead of the rest of the turn.

Output flow control: when the data channel is full, the loop stops reading
the commands' pipes (they block on write) instead of buffering without
bound, while heartbeats, cancels and timeouts go on; the commands are paused
meanwhile (their exits are still seen, their silence is not counted). The supervisor does the
same per task (PauseOutput/ResumeOutput) when the client that owns a task's
output is not reading it.
"""

from __future__ import annotations

import collections
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import zmq

from para.daemon.child_relay import ChildRelay
from para.daemon.data_out import DataOut
from para.daemon.egress_relay import WorkerEgress
from para.daemon.pollset import PollSet
from para.daemon.task_result import task_result
from para.daemon.tool_reports import ToolReports
from para.daemon.tools.base import Finished, RunCommand, TaskContext, ToolFailure
from para.daemon.tools.registry import resolve
from para.ipc import channels, codec
from para.ipc import messages as m
from para.ipc.endpoints import Endpoints
from para.sandbox import identity, prctl, spawn
from para.sandbox.command import Command, Outcome

@dataclass(slots=True, eq=False)
class Running:
    """A task whose command runs in this worker, and what the worker owes it."""
    assign: m.Assign
    step: RunCommand
    started: float
    command: Command | None = None
    chunk_seq: int = 0
    input_acked: tuple[int, bool] | None = None   # (written, closed) last acknowledged
    deadline: float | None = None                 # the command's next timer, as of the last call into it
    polled: tuple[list[int], list[int]] | None = None   # the descriptors last registered for it

    @property
    def task_id(self) -> str:
        return self.assign.task.id


class Worker:
    def __init__(self, worker_id: str, tool: str, settings: m.WorkerSettings) -> None:
        self.id = worker_id
        self.tool = resolve(tool)()   # a built-in, a plugin or a module path (tools/registry.py)
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
        self.running: dict[str, Running] = {}
        self.out = DataOut(lambda frames, block: self.channels.send_encoded("data", frames, block))
        self.blocked = False    # the data channel is full: the commands' pipes are not polled
        self.paused: set[str] = set()   # tasks whose output the supervisor asked us not to read for now
        self.events: list[bytes] = []
        self.polls = PollSet()
        self.polls.set("command", [(self.command, zmq.POLLIN)])
        self.stopping = False
        self.hb_seq = 0
        self.next_heartbeat = 0.0
        self.proc = psutil.Process()
        # Commands that may submit child tasks get a socket to do it through.
        self.relay = ChildRelay(self.ctx, worker_id, settings.max_message_size) if self.tool.runs_commands else None
        self.egress = WorkerEgress(endpoints)   # commands whose network is an allow-list reach its proxy through it
        if self.relay is not None:
            self.polls.set("relay", [(self.relay.sock, zmq.POLLIN)])
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
        """Start what was assigned, send what is ready, wait, handle what woke us, fire due timers."""
        self.channels.send("command", m.Ready(self.id, os.getpid(), self.credit))
        self.next_heartbeat = time.monotonic()
        while not (self.stopping and not self.running and not self.pending):
            self.beat_if_due()
            self._start_pending()
            self.flush_events()
            self._flush_data()
            timeout = max(0, int((self._next_deadline(self.next_heartbeat) - time.monotonic()) * 1000) + 1)
            # A command that ended has its pipes' EOF and its exit ready in one poll: each is
            # read, and the command is looked at (timers, descriptors, its end) once after all.
            touched: dict[Running, None] = {}
            for sock, _ in self.polls.poll(timeout):
                run = self._on_ready(sock)
                if run is not None:
                    touched[run] = None
            for run in touched:
                if self.running.get(run.task_id) is run:
                    self._touched(run)
            self._on_timers(time.monotonic())
        self.flush_events()
        self._flush_data(block=True)

    def _start_pending(self) -> None:
        # Sync tools (echo, read) finish inside _start; commands start and run on.
        while self.pending and self.out.room:
            self._start(self.pending.popleft())

    def _next_deadline(self, heartbeat: float) -> float:
        # The heartbeat too: a command's next timer may be its timeout, minutes away.
        return min((r.deadline for r in self.running.values() if r.deadline is not None and r.deadline < heartbeat),
                   default=heartbeat)

    def _on_ready(self, sock: Any) -> Running | None:
        """One socket or pipe the poll found ready: a command from parad, a nested client's
        request, room on the data channel, or one of the commands' pipes (whose Running is
        returned, for the caller to look at once the turn's descriptors are read)."""
        if sock is self.command:
            self._on_command()
            # What was assigned starts now, and a sync tool's answers leave at once, in one frame:
            # the rest of the turn (timers, other descriptors) is not on their way.
            self._start_pending()
            self.flush_events()   # a "started" event before its task's result
            self._flush_data()
        elif self.relay is not None and sock is self.relay.sock:
            for relayed in self.relay.on_readable():
                self.channels.send("command", relayed)
        elif sock is self.data:
            self._flush_data()
        else:
            # A command's descriptors are owned by its Running, not its task id:
            # a client picks task ids, and "command" must not name our socket.
            run = self.polls.owner_of.get(sock)
            if not isinstance(run, Running) or self.running.get(run.task_id) is not run:
                return None
            if sock in run.command.write_fds():
                run.command.on_writable(sock)
            elif not self.out.turn_full or sock in run.command.exit_fds():
                run.command.on_readable(sock)   # an exit is seen at once, whatever this turn has read
            return run
        return None

    def _on_timers(self, now: float) -> None:
        for run in [r for r in self.running.values() if r.deadline is not None and r.deadline <= now]:
            run.command.on_timer(now)
            self._touched(run)

    def _touched(self, run: Running) -> None:
        """After any call into a command: its timers, its descriptors, and its end."""
        command = run.command
        self._ack_input(run)
        if command.done:
            self._finish_command(run)
            return
        run.deadline = command.next_deadline()
        self._poll_command(run)

    def _poll_command(self, run: Running) -> None:
        """What to wait on for `run`: its pipes (not while the data channel is full), its pidfd, and its
        stdin while input waits for room in it (written whatever the output does)."""
        command = run.command
        polled = (command.exit_fds() if self.blocked else command.fds(), command.write_fds())
        if polled == run.polled:
            return   # most calls change nothing: a cheap comparison, no registration
        run.polled = polled
        reads, writes = polled
        self.polls.set(run, [(fd, zmq.POLLIN) for fd in reads] + [(fd, zmq.POLLOUT) for fd in writes])

    def _set_blocked(self, blocked: bool) -> None:
        if blocked == self.blocked:
            return
        self.blocked = blocked
        self.polls.set("data", [(self.data, zmq.POLLOUT)] if blocked else ())
        # Unread for now, as when paused: a command that writes on is not silent, nor
        # late to close its pipes; and its exit is still seen, or its timeout would
        # fire on a command that ended in time.
        for run in list(self.running.values()):
            if blocked:
                run.command.pause_output()
            elif run.task_id not in self.paused:
                run.command.resume_output()
            self._touched(run)

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
        run = self.running.get(task_id)
        held = run is not None or any(a.task.id == task_id for a in self.pending)
        if pause and held:
            self.paused.add(task_id)
        else:
            self.paused.discard(task_id)
        if run is None:
            return
        if pause:
            run.command.pause_output()
        elif not self.blocked:
            run.command.resume_output()
        self._touched(run)

    def _input(self, msg: m.Input) -> None:
        # parad forwards input only for a task it knows runs here, after its first
        # InputAck; input that crossed the task's end has nowhere to go.
        run = self.running.get(msg.task_id)
        if run is None or run.command.stdin_pipe is None:
            return
        run.command.stdin_pipe.feed(msg.data, msg.eof)
        self._touched(run)

    def _ack_input(self, run: Running) -> None:
        """Tell the task's owner (through parad) how much of its input is in the command's stdin."""
        pipe = run.command.stdin_pipe
        if pipe is None or (pipe.written, pipe.closed) == run.input_acked:
            return
        run.input_acked = (pipe.written, pipe.closed)
        self.out.add(m.InputAck(run.task_id, pipe.written, pipe.closed))

    def _cancel(self, task_id: str) -> None:
        run = self.running.get(task_id)
        if run is not None:
            run.command.cancel()
            self._touched(run)
            return
        for assign in list(self.pending):
            if assign.task.id == task_id:
                self.pending.remove(assign)
                self.paused.discard(task_id)
                self._send_result(assign, m.TaskResult(task_id, assign.task.tool, m.CANCELLED, error="cancelled before it started"), started=time.monotonic())

    # ---- running a task ----------------------------------------------------

    def _start(self, assign: m.Assign) -> None:
        task = assign.task
        started = time.monotonic()
        ctx = TaskContext(task.id, self.id, task.timeout, task.workspace, ToolReports(self, assign))
        try:
            step = self.tool.run(self.tool.parse_args(task.args), self.options, ctx)
        except Exception as exc:
            step = self._failed(task, exc)
        if isinstance(step, Finished):
            self._finish(assign, started, step, None)
            return
        run = Running(assign, step, started)
        # Only commands get a "started" event (a sync tool's result follows at
        # once), and only when someone watches: each message costs both ends.
        if assign.events:
            self.events.append(codec.encode(m.TaskEvent(task.id, self.id, "started", {"attempt": assign.attempt})))
        self._launch(run)

    def _failed(self, task: m.TaskSpec, exc: Exception) -> Finished:
        """The answer of a tool that raised: a ToolFailure's message as is; anything else is
        also reported, with its traceback, on the error channel."""
        if isinstance(exc, ToolFailure):
            return Finished(error=str(exc))
        self._send("error", m.ErrorReport(self.id, task.id, "exception", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        return Finished(error=f"{self.tool.name} raised {type(exc).__name__}: {exc}")

    def _launch(self, run: Running) -> None:
        spec = run.step.spec
        on_output = (lambda stream, data: self._stream_chunk(run, stream, data)) if run.assign.task.stream else self._count_output
        if self.command_cgroup is not None:
            spec.cgroup = self.command_cgroup
        if self.relay is not None:
            spec.env = {**(spec.env or {}), **self.relay.env(run.task_id)}
        if run.step.egress is not None:
            try:
                spec.env = self.egress.start(run.task_id, run.step.egress, spec.env or {})
            except OSError as exc:
                self._finish(run.assign, run.started, Finished(error=f"cannot open the task's port to the egress proxy: {exc}"), None)
                return
        try:
            run.command = Command(spec, on_output, held=self.held, on_close=self.polls.closing)
        except Exception as exc:  # OSError, or ValueError for a NUL byte in argv/env/cwd
            detail = exc.strerror if isinstance(exc, OSError) else str(exc)
            self._finish(run.assign, run.started, Finished(error=f"cannot start {spec.argv[0]}: {detail}"), None)
            return
        self.running[run.task_id] = run
        if run.task_id in self.paused or self.blocked:
            run.command.pause_output()
        self._touched(run)   # with the first InputAck: the command's stdin is open, input may come

    def _count_output(self, stream: str, data: bytes) -> None:
        self.out.output_read(len(data))

    def _stream_chunk(self, run: Running, stream: str, data: bytes) -> None:
        # Every byte is streamed: only what the result keeps is capped (output_bytes).
        # Memory stays bounded: while this backlog waits, the pipes are not read.
        run.chunk_seq += 1
        self.out.output_read(len(data))
        self.out.add(m.Chunk(run.task_id, stream, data, run.chunk_seq))

    def _finish_command(self, run: Running) -> None:
        command = run.command
        outcome = command.outcome()
        del self.running[run.task_id]
        self.polls.drop(run)
        if command.unkillable:
            # Unkillable (stuck in the kernel): a worker that still holds them
            # would count them against every later command, so it retires:
            # parad, told, assigns it nothing more and sends Stop. Not stopping
            # here: an Assign may be on its way, and would be lost with us.
            self._send("error", m.ErrorReport(self.id, run.task_id, "unkillable",
                                              f"processes {command.unkillable} outlived every kill; the worker retires"))
        else:
            command.close()
        answer = None
        step = run.step
        if step.finish is not None and not outcome.cancelled and outcome.limit is None:
            try:
                answer = step.finish(outcome)
            except Exception as exc:
                answer = Finished(error=f"{self.tool.name}: cannot read the command's output: {exc}")
        self._finish(run.assign, run.started, answer, outcome)

    def _finish(self, assign: m.Assign, started: float, answer: Finished | None, outcome: Outcome | None) -> None:
        self.paused.discard(assign.task.id)
        if self.relay is not None:
            self.relay.forget(assign.task.id)   # its commands' clients lose their trust with it
        result = task_result(assign.task, answer, outcome)
        result.network_refused = self.egress.finish(assign.task.id)
        if outcome is not None and outcome.limit:
            self._send("error", m.ErrorReport(self.id, assign.task.id, "limit", f"{outcome.limit} limit ended the command"))
        self._send_result(assign, result, started)

    def _send_result(self, assign: m.Assign, result: m.TaskResult, started: float) -> None:
        # Not sent here: every result ready this turn leaves in one frame at its end.
        result.worker = self.id
        result.attempts = assign.attempt
        if not result.duration:
            result.duration = time.monotonic() - started
        self.out.add(m.Done(result))

    # ---- channels ----------------------------------------------------------

    def _send(self, channel: str, msg: Any) -> None:
        self.channels.send(channel, msg)

    def flush_events(self) -> None:
        if not self.events:   # most turns: nobody watches
            return
        for chunk in codec.chunks(self.events):
            self.channels.send_encoded("event", chunk)
        self.events = []

    def _flush_data(self, block: bool = False) -> None:
        """Send waiting output and results; while the channel is full, no command's pipes are read."""
        self._set_blocked(not self.out.flush(block))

    def beat_if_due(self) -> None:
        """Send a heartbeat if one is due: from the loop, and from a tool's reports while it runs."""
        now = time.monotonic()
        if now >= self.next_heartbeat:
            self._heartbeat()
            self.next_heartbeat = now + self.heartbeat_interval

    def _heartbeat(self) -> None:
        self.hb_seq += 1
        cpu = self.proc.cpu_times()
        task = next(iter(self.running), None)
        self._send("metrics", m.Heartbeat(self.id, os.getpid(), self.hb_seq, self.proc.memory_info().rss, cpu.user + cpu.system, task))

    def close(self) -> None:
        for run in self.running.values():
            run.command.close()
        self.polls.close()
        if self.relay is not None:
            self.relay.close()
        self.egress.stop()
        self.channels.close(linger=1000)
        self.ctx.term()


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
