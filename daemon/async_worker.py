"""A worker of an async tool (`Tool.is_async`): its tasks run as coroutines on one asyncio event loop.

An I/O-bound tool (fetch, search) spends its time waiting on the network, so
its worker serves up to its credit of tasks at once, each an asyncio task
running the tool's `run_async`, instead of one after another. The worker is a
`Worker` (worker.py) in everything else: the same five channels, results
batched through DataOut, heartbeats, ErrorReports; only its loop differs.

The loop: one coroutine (`_serve`) reads parad's commands, flushes output,
results and events, and sends heartbeats; between turns it awaits the event
loop, woken by the command and data sockets' ZeroMQ descriptors (watched with
`add_reader`), by a task that has something to send, or by the heartbeat's
time. ZeroMQ's descriptor is edge-triggered: every turn drains the command
socket until Again, and reads both sockets' EVENTS before it waits, which
re-arms their descriptors. A coroutine that blocks the loop blocks the
heartbeats too, and parad kills the worker as hung, as any silent worker.

Cancels and timeouts cancel the task's coroutine (CancelledError at its
current await); it ends `cancelled` or `timed_out`, as a command does.

Output flow control: a task's streamed output (`ctx.output`) goes to DataOut
at once, unless parad paused the task (its client is not reading), which
holds it in the task until ResumeOutput. What `ctx.output` returns, when
awaited, waits while the task is paused or the data channel is full; a tool
that does not await is bounded anyway: past HOLD_BYTES held it is sent on
(parad holds it, as it does a sync tool's), and past two channels' worth
waiting the loop blocks on the channel, as a sync tool does.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import zmq

from para.daemon.task_result import interrupted, task_result
from para.daemon.tool_reports import ToolReports
from para.daemon.tools.base import Finished, TaskContext
from para.daemon.worker import Worker
from para.ipc import codec
from para.ipc import messages as m
from para.ipc.channels import DATA_HWM
from para.sandbox.command import READ_SIZE

HOLD_BYTES = 1 << 20   # streamed output held for one paused task before it is sent on regardless


@dataclass(slots=True, eq=False)
class AsyncRun:
    """A task whose coroutine runs in this worker, and its output held while paused."""
    assign: m.Assign
    started: float
    task: asyncio.Task[None] | None = None
    ended: str | None = None    # why its coroutine was cancelled: "cancelled" or "timeout"
    entered: bool = False       # its coroutine has begun: a cancel before that would never reach its try
    timer: asyncio.TimerHandle | None = None
    paused: bool = False
    seq: int = 0                # its Chunks' sequence numbers
    held: list[bytes] = field(default_factory=list)
    held_bytes: int = 0
    waiters: list[asyncio.Future[None]] = field(default_factory=list)

    @property
    def task_id(self) -> str:
        return self.assign.task.id


class AsyncReports(ToolReports):
    """TaskContext.reports of an async task: progress as a sync tool's, output never blocking the loop."""

    __slots__ = ("run",)

    def __init__(self, worker: AsyncWorker, run: AsyncRun) -> None:
        super().__init__(worker, run.assign)
        self.run = run

    def output(self, data: bytes) -> Awaitable[None] | None:
        worker: AsyncWorker = self.worker   # type: ignore[assignment]
        return worker.stream(self.run, data)


class AsyncWorker(Worker):
    """A Worker whose tool's tasks run side by side as coroutines (see the module docstring)."""

    def __init__(self, worker_id: str, tool: str, settings: m.WorkerSettings) -> None:
        super().__init__(worker_id, tool, settings)
        self.running: dict[str, AsyncRun] = {}   # type: ignore[assignment]
        self.waiting: set[AsyncRun] = set()      # tasks awaiting room for their output
        self.wake = asyncio.Event()
        self._beat: asyncio.TimerHandle | None = None   # wakes the loop when the next heartbeat is due
        self._beat_for = 0.0   # the next_heartbeat it was set for

    def run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        fds = [sock.getsockopt(zmq.FD) for sock in (self.command, self.data)]
        for fd in fds:
            loop.add_reader(fd, self.wake.set)
        try:
            await self._open()
            self._send("command", m.Ready(self.id, os.getpid(), self.credit))
            while not (self.stopping and not self.running):
                self._turn()
                await self._wait()
            self._turn()
            self._flush_data(block=True)
        finally:
            for fd in fds:
                loop.remove_reader(fd)
        try:
            await self.tool.close()
        except Exception as exc:
            self._report(None, "exception", f"{self.tool.name}.close raised {type(exc).__name__}: {exc}")

    async def _open(self) -> None:
        """The tool's `open`, heartbeats going on meanwhile; a tool that cannot open ends its worker."""
        opening = asyncio.ensure_future(self.tool.open(self.options))
        while not opening.done():
            self.beat_if_due()
            await asyncio.wait({opening}, timeout=self.heartbeat_interval)
        exc = opening.exception()
        if exc is not None:
            self._report(None, "exception", f"{self.tool.name}.open raised {type(exc).__name__}: {exc}; "
                                            f"the worker cannot serve: fix the tool or its pool's options")
            raise exc

    def _turn(self) -> None:
        """Read what parad sent, send what is ready: many results and chunks to a frame."""
        self.beat_if_due()
        self._on_command()
        self._flush_data()
        self.flush_events()

    async def _wait(self) -> None:
        """Until a socket may be ready, a task has something to send, or a heartbeat is due."""
        self.wake.clear()
        # Reading EVENTS re-arms the sockets' edge-triggered descriptors: what came meanwhile is seen here.
        if self.command.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            return
        if self.data.getsockopt(zmq.EVENTS) & zmq.POLLOUT and self.blocked:
            return
        self._arm_beat()
        await self.wake.wait()

    def _arm_beat(self) -> None:
        # One timer per heartbeat, not one per turn: with a turn every few tasks, a timer added
        # and cancelled each turn costs the loop's heap more than the turn's own work.
        if self._beat is not None and self._beat_for == self.next_heartbeat:
            return
        if self._beat is not None:
            self._beat.cancel()
        self._beat_for = self.next_heartbeat
        self._beat = asyncio.get_running_loop().call_later(max(0.0, self.next_heartbeat - time.monotonic()), self._beat_due)

    def _beat_due(self) -> None:
        self._beat = None
        self.wake.set()

    # ---- parad's commands --------------------------------------------------

    def _command_handlers(self) -> dict[type, Callable[[Any], None]]:
        # No Input nor Relay: an async tool has no command to take stdin or submit child tasks.
        return {
            m.Assign: self._begin, m.CancelTask: lambda msg: self._interrupt(msg.task_id, "cancelled"),
            m.Stop: self._stop,
            m.PauseOutput: lambda msg: self._pause(msg.task_id, True),
            m.ResumeOutput: lambda msg: self._pause(msg.task_id, False),
        }

    def _begin(self, assign: m.Assign) -> None:
        task = assign.task
        run = self.running[task.id] = AsyncRun(assign, time.monotonic())
        ctx = TaskContext(task.id, self.id, task.timeout, task.workspace, AsyncReports(self, run))
        if assign.events:
            self.events.append(codec.encode(m.TaskEvent(task.id, self.id, "started", {"attempt": assign.attempt})))
        loop = asyncio.get_running_loop()
        run.task = loop.create_task(self._serve_task(run, ctx))
        if task.timeout:
            run.timer = loop.call_later(task.timeout, self._interrupt, task.id, "timeout")

    def _interrupt(self, task_id: str, why: str) -> None:
        run = self.running.get(task_id)
        if run is None or run.ended is not None or run.task is None:
            return
        run.ended = why
        # An Assign and its Cancel read in one turn: the task has not stepped yet, and a
        # Task cancelled then ends without running a line of _serve_task (no result, its
        # credit held for good). _serve_task sees `ended` as it begins instead.
        if run.entered:
            run.task.cancel()

    def _pause(self, task_id: str, pause: bool) -> None:
        run = self.running.get(task_id)
        if run is None:
            return   # ended: its result crossed this message
        run.paused = pause
        if not pause:
            self._release(run)
            self.wake.set()

    # ---- a task ------------------------------------------------------------

    async def _serve_task(self, run: AsyncRun, ctx: TaskContext) -> None:
        task = run.assign.task
        run.entered = True
        if run.ended is not None:
            self._end(run, interrupted(task, run.ended == "timeout"))
            return
        try:
            args = self.tool.Args.model_validate(task.args)
            answer = await self.tool.run_async(args, self.options, ctx)
            if not isinstance(answer, Finished):
                answer = Finished(error=f"{self.tool.name}.run_async returned {type(answer).__name__}, not Finished")
            result = task_result(task, answer, None)
        except asyncio.CancelledError:
            if run.ended is None:
                raise   # not ours: the loop itself is ending
            result = interrupted(task, run.ended == "timeout")
        except Exception as exc:
            result = task_result(task, self._failed(task, exc), None)
        if run.ended is not None and result.status not in (m.CANCELLED, m.TIMED_OUT):
            result = interrupted(task, run.ended == "timeout")   # it caught the cancel and answered: still cancelled
        self._end(run, result)

    def _end(self, run: AsyncRun, result: m.TaskResult) -> None:
        if run.timer is not None:
            run.timer.cancel()
        del self.running[run.task_id]
        self._release(run)   # its last output goes before its result
        self._wake_writers(run)
        self.waiting.discard(run)
        try:
            self._send_result(run.assign, result, run.started)
        except Exception as exc:   # a value that does not encode: its task fails, not the worker
            self._send_result(run.assign, task_result(run.assign.task, self._failed(run.assign.task, exc), None), run.started)
        self.wake.set()

    # ---- output flow control -------------------------------------------------

    def stream(self, run: AsyncRun, data: bytes) -> Awaitable[None] | None:
        """A task's `ctx.output`: queue its chunks; return what to await for room, or None if there is room."""
        if run.assign.task.stream and data and run.task_id in self.running:
            for at in range(0, len(data), READ_SIZE):   # a frame holds a pipe read's worth, as a command's
                run.seq += 1
                frame = codec.encode(m.Chunk(run.task_id, "stdout", data[at:at + READ_SIZE], run.seq))
                if run.paused:
                    run.held.append(frame)
                    run.held_bytes += len(frame)
                else:
                    self.out.backlog.append(frame)
            if run.held_bytes > HOLD_BYTES:
                self._release(run)   # a tool that does not await: its output goes on, as a sync tool's
            if len(self.out.backlog) >= 2 * DATA_HWM:
                self._flush_data(block=True)   # nor here: the loop waits for parad, as a sync tool does
            self.wake.set()
        if not run.paused and not self.blocked and len(self.out.backlog) < DATA_HWM:
            return None
        waiter = asyncio.get_running_loop().create_future()
        run.waiters.append(waiter)
        self.waiting.add(run)
        return waiter

    def _release(self, run: AsyncRun) -> None:
        """Send on what a paused task holds."""
        self.out.backlog.extend(run.held)
        run.held.clear()
        run.held_bytes = 0

    def _flush_data(self, block: bool = False) -> None:
        self._set_blocked(not self.out.flush(block))
        if not self.blocked:
            for run in [r for r in self.waiting if not r.paused]:
                self._wake_writers(run)

    def _set_blocked(self, blocked: bool) -> None:
        self.blocked = blocked   # no pipes to stop reading: the tasks' awaits of ctx.output wait instead

    def _wake_writers(self, run: AsyncRun) -> None:
        for waiter in run.waiters:
            if not waiter.done():
                waiter.set_result(None)
        run.waiters.clear()
        self.waiting.discard(run)

    def close(self) -> None:
        self.running.clear()   # nothing of theirs to close: their coroutines ended with the loop
        super().close()

    def _report(self, task_id: str | None, kind: str, message: str) -> None:
        self._send("error", m.ErrorReport(self.id, task_id, kind, message))
