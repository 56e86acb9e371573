"""The synchronous para client.

    with Client() as para:
        r = para.run("bash", command="make test", cwd="/src/project", timeout=600)
        for r in para.map("grep", ({"pattern": p, "path": "/src"} for p in patterns)):
            ...

A Client owns one socket and is not thread-safe: use one per thread. Every
wait has a bound: while a task runs, the client pings the daemon whenever it
has heard nothing for `timeout` seconds (at most 10: core.PING_EVERY). When the Pong shows a restarted
parad, or the ping goes unanswered, the client reconnects and gets its tasks
back (client/resume.py); it raises DaemonUnavailable (naming the socket path)
only when no daemon answers there within `reconnect` seconds.
"""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import zmq

from para.client.autostart import start_daemon
from para.client.batch import BatchHandle, track_tasks
from para.client.core import (MAP_BATCH, MAP_WINDOW, MAX_WAIT, TASK_OPTIONS, BaseClient, ReplySlot, Silence,
                              TaskState, hello_waits, split_options, wait_ms)
from para.client.errors import DaemonUnavailable, ParaError, TaskTimeout
from para.client.result import Chunk, Result
from para.client.resume import AwaitSlot
from para.client.stdin_pump import StdinPump
from para.ipc import messages as m
from para.ipc.sockets import make_socket

RECEIVE_QUEUE = 16   # messages (each at most 1 MiB) queued unread in the client
_RCVTIMEO = int(zmq.RCVTIMEO)

__all__ = ["Client", "TaskFuture", "TASK_OPTIONS", "MAP_WINDOW", "MAP_BATCH"]


class TaskFuture(TaskState):
    """A submitted task. `result()` waits for it; `id` names it to the daemon."""

    def __init__(self, client: "Client", spec: m.TaskSpec | None, task_id: str = "") -> None:
        super().__init__(spec, task_id)
        self._client = client
        self.chunks: collections.deque[Chunk] = collections.deque()

    def result(self, timeout: float | None = None) -> Result:
        """Wait for the task; raise its error, or TaskTimeout if `timeout` seconds pass first."""
        if not self.done():   # map() collects most of its tasks finished already: no wait to set up
            self._client._wait_for(self.done, timeout, f"task {self.id}")
        if self._error is not None:
            raise self._error
        return self._result

    def cancel(self) -> dict[str, list[str]]:
        """Cancel this task; the daemon's answer as Client.cancel gives it."""
        return self._client.cancel(self)

    def _put_chunk(self, chunk: Chunk) -> None:
        self.chunks.append(chunk)


class Client(BaseClient):
    """A connection to parad. Use as a context manager, or call close().

    `timeout`: seconds to wait for the daemon's answer to a request, and of
    silence before a waiting client pings it. `reconnect`: seconds a waiting
    client gives a restarted (or silent) parad to answer again before it raises
    DaemonUnavailable."""

    def __init__(self, runtime_dir: str | Path | None = None, *, timeout: float = 10.0,
                 autostart: bool = False, name: str = "para-client", reconnect: float = 30.0) -> None:
        super().__init__(runtime_dir, timeout, autostart, name, reconnect)
        self._ctx = zmq.Context()
        self._sock: zmq.Socket | None = None
        self._poller = zmq.Poller()  # one for every wait: Socket.poll() builds a new one per call
        self._wake: StdinPump | None = None   # what a stream's wait watches besides the socket
        self._rcvtimeo = -1   # the socket's receive timeout (ms), as last set
        self.connect()

    def connect(self) -> "Client":
        """Connect and greet the daemon (the constructor does it; a connected client is returned as is)."""
        if self._sock is not None:
            return self
        if self._needs_start():
            start_daemon(self.endpoints)
        self._open()
        self._welcomed(self._greet(self.timeout))
        return self

    def _open(self) -> None:
        """A fresh socket on the control path (a new identity to parad: nothing queued for an old one)."""
        if self._sock is not None:
            self._poller.unregister(self._sock)
            self._sock.close(linger=0)
        self._sock = make_socket(self._ctx, zmq.DEALER)
        # Read only while waiting: what the daemon sends meanwhile queues here, so
        # bound it; past this many messages it stays in parad, counted, and a
        # stream the caller does not keep up with is paused at its command.
        self._sock.setsockopt(zmq.RCVHWM, RECEIVE_QUEUE)
        self._rcvtimeo = -1
        self._sock.connect(self._address)
        self._poller.register(self._sock, zmq.POLLIN)

    # ---- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        """Close the socket; unfinished tasks go on in the daemon."""
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        self._ctx.term()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- tasks ------------------------------------------------------------------

    def run(self, tool: str, /, **kwargs: Any) -> Result:
        """Run one task and wait for it. `timeout`, `priority`, `session`, `retries` are task options;
        everything else is the tool's arguments."""
        spec = self._spec(tool, *split_options(kwargs))
        # No Accepted round trip: a refusal arrives as an ErrorReply naming the task. Sent before
        # its handle is made: nothing is read until the wait, and the handle is made while the
        # task crosses to the daemon, not before it leaves.
        msg = self._submit([spec])
        self._send(msg)
        future = self._track(TaskFuture(self, spec))
        future.submit_req = msg.req
        try:
            return future.result()
        finally:
            self._tasks.pop(future.id, None)

    def submit(self, tool: str, /, **kwargs: Any) -> TaskFuture:
        """Send one task; returns once the daemon accepted it (or raises why not)."""
        future = self._track(TaskFuture(self, self._spec(tool, *split_options(kwargs))))
        try:
            self._request(self._submit([future.spec], ack=True))
        except BaseException:
            self._tasks.pop(future.id, None)   # not tracked, so a later resume does not submit it again
            raise
        self._accepted(future)
        return future

    def map(self, tool: str, args_iter: Iterable[dict[str, Any]], *, return_exceptions: bool = False,
            **options: Any) -> Iterator[Result | ParaError]:
        """Run one task per args dict, pipelined, yielding results in input order.

        `options` are task options for every task (a misspelt one is InvalidRequest).
        With return_exceptions=True a failed task yields its exception instead of raising it.
        """
        pending: collections.deque[TaskFuture] = collections.deque()
        make = lambda spec: TaskFuture(self, spec)  # noqa: E731
        try:
            for step in self._map_plan(tool, args_iter, options, pending, make):
                if isinstance(step, bytes):
                    self._sock.send(step)
                else:
                    yield self._collect(step, return_exceptions)
        finally:
            self._forget(pending)  # stopped early: forget what was never collected

    def _collect(self, future: TaskFuture, return_exceptions: bool) -> Result | ParaError:
        try:
            return future.result()
        except ParaError as exc:
            if return_exceptions:
                return exc
            raise
        finally:
            self._tasks.pop(future.id, None)

    def stream(self, future: TaskFuture, stdin: BinaryIO | int | None = None) -> Iterator[Chunk]:
        """Yield a streaming task's output chunks as they arrive, until it ends.

        `stdin` (a binary file or a descriptor; the task submitted with stdin_stream=True):
        forwarded to the command's stdin as it is read, then EOF. It is read by a
        thread (client/stdin_pump.py), at most a few chunks ahead of the input window.
        """
        if not future.streaming:
            raise ValueError("submit the task with stream=True to stream its output")
        if stdin is not None:
            self._stdin_check(future)
        pump = StdinPump(stdin) if stdin is not None else None
        try:
            while True:
                while future.chunks:
                    yield future.chunks.popleft()
                if future.done():
                    return
                if pump is not None and self._forward(future, pump):
                    pump.close()
                    pump = None
                self._wait_for(lambda: bool(future.chunks) or future.done() or self._can_forward(future, pump),
                               None, f"task {future.id}", wake=pump)
        finally:
            if pump is not None:
                pump.close()

    def write_stdin(self, future: TaskFuture, data: bytes = b"", *, eof: bool = False) -> bool:
        """Send `data` to the stdin of the task's command (submitted with stdin_stream=True), then EOF if `eof`.

        Waits while channels.INPUT_WINDOW bytes are unacknowledged (the command has
        not read them, or has not started), reading the daemon's messages meanwhile
        (output chunks queue on the future). True once all is sent; False if the task
        ended or its command closed its stdin first (the rest is dropped, as into a
        pipe nobody reads). InvalidRequest if the daemon refused the input.
        """
        self._stdin_check(future)
        view = memoryview(data)
        while True:
            frames, taken, done = self._stdin_step(future, view, eof)
            for frame in frames:
                self._sock.send(frame)
            view = view[taken:]
            if done is not None:
                return done
            self._wait_for(lambda: future._stdin.room() > 0 or future._stdin.closed or future.done()
                           or future._stdin.error is not None, None, f"room in task {future.id}'s input window")

    def _forward(self, future: TaskFuture, pump: StdinPump) -> bool:
        """Send what the pump has read and the window takes; True once EOF is sent or input is over."""
        while (chunk := pump.take()) is not None:
            frames, taken, done = self._stdin_step(future, memoryview(chunk), eof=not chunk)
            for frame in frames:
                self._sock.send(frame)
            if done is False or (done and not chunk):
                return True
            if done is None:
                pump.held = chunk[taken:]
                return False
        return False

    def _can_forward(self, future: TaskFuture, pump: StdinPump | None) -> bool:
        return pump is not None and pump.ready() and (future._stdin.room() > 0 or future._stdin.closed)

    def result(self, task_id: str, timeout: float | None = None) -> Result:
        """Wait for task `task_id`, whoever submitted it and whenever (also before a restart of a
        journaling parad): its Result, or its error raised as TaskFuture.result() does; NotFound
        if parad does not know it; TaskTimeout if `timeout` seconds pass first."""
        own = self._tasks.get(task_id)
        if own is not None:
            return own.result(timeout)
        future = self._track(TaskFuture(self, None, task_id))
        msg = self._await_msg(task_id)
        key = self._expect(msg, AwaitSlot(future))
        try:
            self._send(msg)
            return future.result(timeout)
        finally:
            self._replies.pop(key, None)
            self._tasks.pop(task_id, None)

    def prune(self, older_than: float | None = None) -> dict[str, int]:
        """Drop finished tasks from parad's journal now: those older than `older_than` seconds, if
        given, and the oldest past its retention limits. Returns {"tasks": n, "bytes": b, "files": f} removed."""
        return self._request(self._prune_msg(older_than)).body

    def cancel(self, *tasks: TaskFuture | str, session: str | None = None,
               everything: bool = False) -> dict[str, list[str]]:
        """Cancel tasks by future or id, every live task of `session`, or (`everything`) all this client submitted.

        Returns {"cancelled": ids, "not_running": ids given that were no longer live}.
        """
        return self._request(self._cancel(tasks, session, everything)).body

    def batch(self, spec: dict[str, Any]) -> BatchHandle:
        """Start a batch of tasks with dependencies (see para.client.batch for the spec).

        The daemon checks the whole batch first: duplicate or unknown ids and
        cycles raise InvalidRequest naming them, and nothing runs.
        """
        batch_id, msg = self._batch(spec)
        futures = track_tasks(msg, lambda task: TaskFuture(self, task), self._tasks)
        try:
            self._request(msg)
        except ParaError:
            self._forget(futures.values())
            raise
        return BatchHandle(self, batch_id, futures)

    def scale(self, pool: str, workers: int | None) -> dict[str, Any]:
        """Pin `pool` to `workers` (0 drains it: running tasks finish, queued ones wait, new ones are refused), or None for automatic."""
        return self._request(self._scale(pool, workers)).body

    # ---- daemon queries -----------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The daemon's state: its pid and version, pools, queues, clients."""
        return self._query("status")

    def workers(self) -> list[dict[str, Any]]:
        """One dict per worker process."""
        return self._query("workers")

    def ps(self) -> list[dict[str, Any]]:
        """One dict per live task."""
        return self._query("ps")

    def tools(self) -> list[dict[str, Any]]:
        """The tools parad runs, one dict per pool: name, tool, description, read_only, retry_safe,
        workspace, and input_schema (the JSON Schema of its arguments)."""
        return self._query("tools")

    def metrics(self) -> str:
        """The daemon's Prometheus metrics, in the text exposition format."""
        return self._query("metrics")

    def task(self, task_id: str) -> dict[str, Any]:
        """What the daemon knows of task `task_id`; a finished one's `result` as a Result."""
        return self._task_body(self._query("task", task_id))

    def shutdown(self) -> dict[str, Any]:
        """Ask the daemon to shut down (running tasks finish, queued ones are failed)."""
        return self._request(self._shutdown()).body

    def _query(self, what: str, arg: str | None = None) -> Any:
        return self._request(self._query_msg(what, arg)).body

    # ---- I/O ------------------------------------------------------------------------

    def _send(self, msg: Any) -> None:
        self._sock.send(self._frame(msg))

    def _request(self, msg: Any, timeout: float | None = None) -> Any:
        """The daemon's answer to `msg` within `timeout` seconds (default self.timeout); a refusal raised."""
        key = self._expect(msg, slot := ReplySlot())
        try:
            self._send(msg)
            self._wait_for(slot.done, timeout or self.timeout, "the daemon's answer", ping=False)
        finally:
            self._replies.pop(key, None)
        return self._answer(slot.value)

    def _resume(self, silent: bool) -> None:
        """parad restarted or stopped answering: reconnect (starting one with autostart), get every task back."""
        plan = self._resume_plan(silent)
        self._open()   # first: the old socket must not deliver what it holds to the parad started next
        if plan.start:
            start_daemon(self.endpoints)
        try:
            welcome = self._greet(self.reconnect)
        except DaemonUnavailable:
            raise plan.gone(self.reconnect) from None
        self._resumed(plan, welcome)
        for msg in plan.awaits(self._reqs):
            for frame in self._resubmit_frames(plan.answered(self._request(msg).body)):
                self._sock.send(frame)

    def _greet(self, timeout: float) -> m.Welcome:
        """The daemon's Welcome within `timeout` seconds, the Hello sent again every HELLO_AGAIN."""
        for wait in hello_waits(timeout):
            with contextlib.suppress(DaemonUnavailable):
                return self._request(self._hello(), wait)
        raise self._no_answer("the daemon's greeting")

    def _wait_for(self, condition: Callable[[], bool], timeout: float | None, what: str, ping: bool = True,
                  wake: StdinPump | None = None) -> None:
        """Read messages until condition() holds. A silent daemon is pinged, then given up on.
        `wake`: also look at condition() again whenever it signals."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._silence.reset()
        if wake is not None:
            self._poller.register(wake.fileno(), zmq.POLLIN)
            self._wake = wake
        try:
            self._wait(condition, deadline, timeout, what, ping)
        finally:
            if wake is not None:
                self._poller.unregister(wake.fileno())
                self._wake = None

    def _read(self, timeout_ms: int) -> tuple[bytes | None, bool]:
        """The daemon's next frame within `timeout_ms` (None if none came), and whether the stdin pump woke us."""
        if self._wake is None:
            # A receive that waits: a poll and then a receive would each pay libzmq's and pyzmq's
            # bookkeeping, on the path of every run().
            if timeout_ms != self._rcvtimeo:
                self._sock.setsockopt(_RCVTIMEO, timeout_ms)
                self._rcvtimeo = timeout_ms
            try:
                return self._sock.recv(), False
            except zmq.Again:
                return None, False
        ready = dict(self._poller.poll(timeout_ms))
        woke = self._wake.fileno() in ready
        if woke:
            self._wake.clear()
        return (self._sock.recv() if self._sock in ready else None), woke

    def _wait(self, condition: Callable[[], bool], deadline: float | None, timeout: float | None, what: str,
              ping: bool) -> None:
        # self._wake, not a parameter: a wait within this one (a resume's) clears it too, and
        # the outer wait looks at its condition again whatever woke it.
        while not condition():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                if ping:
                    raise TaskTimeout(f"gave up waiting for {what} after {timeout:g}s")
                raise self._no_answer(what)
            if not ping:   # a request's own deadline decides; the silence clock does not run
                wait = MAX_WAIT if left is None else left
            else:
                wait = self._silence.remaining() if left is None else min(self._silence.remaining(), left)
            frame, woke = self._read(wait_ms(wait))
            if frame is not None:
                self._receive(frame)
                if ping and self._restart_seen:
                    self._resume(silent=False)
                continue
            if woke or not ping:  # the pump's wake-up; or a request's own deadline (self.timeout) decides
                continue
            step = self._silence.step()
            if step == Silence.PING:
                self._sock.send(self._ping())
            elif step == Silence.GIVE_UP:
                self._resume(silent=True)
