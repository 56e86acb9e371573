"""The synchronous para client.

    with Client() as para:
        r = para.run("bash", command="make test", cwd="/src/project", timeout=600)
        for r in para.map("grep", ({"pattern": p, "path": "/src"} for p in patterns)):
            ...

A Client owns one socket and is not thread-safe: use one per thread. Every
wait has a bound: while a task runs, the client pings the daemon whenever it
has heard nothing for `timeout` seconds, and raises DaemonUnavailable (naming
the socket path) if the ping goes unanswered.
"""

from __future__ import annotations

import collections
import itertools
import os
import secrets
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import zmq

from para.client.autostart import daemon_running, start_daemon
from para.client.batch import BatchHandle, batch_message, track_tasks
from para.client.errors import DaemonUnavailable, InvalidRequest, ParaError, TaskTimeout, error_for, refusal
from para.client.result import Chunk, Result
from para.ipc import codec
from para.ipc import messages as m
from para.ipc.endpoints import CHILD_ENDPOINT_ENV, CHILD_TOKEN_ENV, Endpoints, default_runtime_dir
from para.ipc.sockets import make_socket

# Task options a caller may pass beside a tool's own arguments.
from para.ipc.options import TASK_OPTIONS  # (derived from TaskSpec, in ipc)
MAP_WINDOW = 2048    # tasks in flight during map()
MAP_BATCH = 128      # tasks per Submit message during map()


class TaskFuture:
    """A submitted task. `result()` waits for it; `id` names it to the daemon."""

    def __init__(self, client: "Client", spec: m.TaskSpec) -> None:
        self.id = spec.id
        self.tool = spec.tool
        self._spec = spec
        self.streaming = spec.stream
        self._client = client
        self._result: Result | None = None
        self._error: ParaError | None = None
        self.chunks: collections.deque[Chunk] = collections.deque()

    def done(self) -> bool:
        return self._result is not None or self._error is not None

    def result(self, timeout: float | None = None) -> Result:
        """Wait for the task; raise its error, or TaskTimeout if `timeout` seconds pass first."""
        self._client._wait_for(self.done, timeout, f"task {self.id}")
        if self._error is not None:
            raise self._error
        return self._result

    def cancel(self) -> None:
        self._client.cancel(self)

    def outcome(self) -> Result:
        """The finished task's Result, whatever its status (result() raises for failures); for a
        refused task, a Result with status 'failed' and the refusal as its error."""
        if self._result is not None:
            return self._result
        if self._error is not None:
            return Result(self.id, self.tool, m.FAILED, error=str(self._error), error_code=getattr(self._error, "code", None))
        raise RuntimeError(f"task {self.id} has not finished")

    def _set_result(self, wire: m.TaskResult) -> None:
        result = Result.from_wire(wire)
        self._error = error_for(result)
        self._result = result


class Client:
    """A connection to parad. Use as a context manager, or call close()."""

    def __init__(self, runtime_dir: str | Path | None = None, *, timeout: float = 10.0,
                 autostart: bool = False, name: str = "para-client") -> None:
        self.endpoints = Endpoints(Path(runtime_dir or default_runtime_dir()).absolute())
        self.path = str(self.endpoints.control_path)
        self.timeout = timeout
        # Inside a para bash command: tasks submitted here are the running task's children.
        nested = runtime_dir is None and os.environ.get(CHILD_ENDPOINT_ENV)
        self._address = os.environ[CHILD_ENDPOINT_ENV] if nested else f"ipc://{self.path}"
        self._token = os.environ.get(CHILD_TOKEN_ENV) if nested else None
        self._prefix = secrets.token_hex(4)
        self._ids = itertools.count(1)
        self._reqs = itertools.count(1)
        self._futures: dict[str, TaskFuture] = {}
        self._replies: dict[Any, Any] = {}
        self._awaiting: set[Any] = {m.Welcome}
        self._ctx = zmq.Context()
        self._sock: zmq.Socket | None = None
        self.max_message_size = 1 << 20  # until the daemon says its own
        if nested:
            self.path = self._address
        elif not daemon_running(self.endpoints):
            if not autostart:
                raise DaemonUnavailable(f"no para daemon at {self.path}: start one with `parad`, or use autostart", self.path)
            start_daemon(self.endpoints)
        self._connect(name)

    def _connect(self, name: str) -> None:
        self._sock = make_socket(self._ctx, zmq.DEALER)
        self._sock.connect(self._address)
        self._poller = zmq.Poller()  # one for every wait: Socket.poll() builds a new one per call
        self._poller.register(self._sock, zmq.POLLIN)
        welcome = self._request(m.Hello(name, os.getpid(), self._token), reply_type=m.Welcome)
        self.daemon = welcome
        self.max_message_size = welcome.max_message_size

    # ---- lifecycle ------------------------------------------------------------

    def close(self) -> None:
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
        options = {k: kwargs.pop(k) for k in TASK_OPTIONS if k in kwargs}
        future = TaskFuture(self, self._spec(tool, kwargs, options))
        self._futures[future.id] = future
        # No Accepted round trip: a refusal arrives as an ErrorReply naming the task.
        self._send(m.Submit(next(self._reqs), [future._spec], ack=False))
        try:
            return future.result()
        finally:
            self._futures.pop(future.id, None)

    def submit(self, tool: str, /, **kwargs: Any) -> TaskFuture:
        """Send one task; returns once the daemon accepted it (or raises why not)."""
        options = {k: kwargs.pop(k) for k in TASK_OPTIONS if k in kwargs}
        spec = self._spec(tool, kwargs, options)
        future = TaskFuture(self, spec)
        self._futures[spec.id] = future
        req = next(self._reqs)
        self._awaiting.add(req)
        self._send(m.Submit(req, [spec]))
        self._wait_for(lambda: req in self._replies, self.timeout, "the daemon's answer", ping=False)
        self._awaiting.discard(req)
        self._replies.pop(req)
        if future._error is not None and future._result is None:
            self._futures.pop(spec.id, None)
            raise future._error
        return future

    def map(self, tool: str, args_iter: Iterable[dict[str, Any]], *, return_exceptions: bool = False,
            **options: Any) -> Iterator[Result | ParaError]:
        """Run one task per args dict, pipelined, yielding results in input order.

        With return_exceptions=True a failed task yields its exception instead of raising it.
        """
        pending: collections.deque[TaskFuture] = collections.deque()
        try:
            yield from self._map(tool, args_iter, pending, return_exceptions, options)
        finally:
            for future in pending:  # stopped early: forget what was never collected
                self._futures.pop(future.id, None)

    def _map(self, tool: str, args_iter: Iterable[dict[str, Any]], pending: collections.deque[TaskFuture],
             return_exceptions: bool, options: dict[str, Any]) -> Iterator[Result | ParaError]:
        batch: list[m.TaskSpec] = []
        for args in args_iter:
            spec = self._spec(tool, dict(args), options)
            future = TaskFuture(self, spec)
            self._futures[spec.id] = future
            pending.append(future)
            batch.append(spec)
            if len(batch) >= MAP_BATCH:
                self._send(m.Submit(next(self._reqs), batch, ack=False))
                batch = []
            while len(pending) > MAP_WINDOW or (pending and pending[0].done()):
                if batch:
                    self._send(m.Submit(next(self._reqs), batch, ack=False))
                    batch = []
                yield self._collect(pending.popleft(), return_exceptions)
        if batch:
            self._send(m.Submit(next(self._reqs), batch, ack=False))
        while pending:
            yield self._collect(pending.popleft(), return_exceptions)

    def _collect(self, future: TaskFuture, return_exceptions: bool) -> Result | ParaError:
        try:
            return future.result()
        except ParaError as exc:
            if return_exceptions:
                return exc
            raise
        finally:
            self._futures.pop(future.id, None)

    def stream(self, future: TaskFuture) -> Iterator[Chunk]:
        """Yield a streaming task's output chunks as they arrive, until it ends."""
        if not future.streaming:
            raise ValueError("submit the task with stream=True to stream its output")
        while True:
            while future.chunks:
                yield future.chunks.popleft()
            if future.done():
                return
            self._wait_for(lambda: bool(future.chunks) or future.done(), None, f"task {future.id}")

    def cancel(self, *tasks: TaskFuture | str, session: str | None = None,
               everything: bool = False) -> dict[str, list[str]]:
        """Cancel tasks by future or id, every live task of `session`, or (`everything`) all this client submitted.

        Returns {"cancelled": ids, "not_running": ids given that were no longer live}.
        """
        ids = [t.id if isinstance(t, TaskFuture) else t for t in tasks]
        return self._request(m.Cancel(next(self._reqs), ids, session, everything)).body

    def batch(self, spec: dict[str, Any]) -> BatchHandle:
        """Start a batch of tasks with dependencies (see para.client.batch for the spec).

        The daemon checks the whole batch first: duplicate or unknown ids and
        cycles raise InvalidRequest naming them, and nothing runs.
        """
        batch_id = f"{self._prefix}-b{next(self._ids)}"
        msg = batch_message(next(self._reqs), batch_id, spec)
        futures = track_tasks(msg, lambda task: TaskFuture(self, task), self._futures)
        try:
            self._request(msg, m.Accepted)
        except ParaError:
            for future in futures.values():
                self._futures.pop(future.id, None)
            raise
        return BatchHandle(self, batch_id, futures)

    def scale(self, pool: str, workers: int | None) -> dict[str, Any]:
        """Pin `pool` to `workers` (0 drains it: running tasks finish, queued ones wait, new ones are refused), or None for automatic."""
        return self._request(m.Scale(next(self._reqs), pool, workers)).body

    # ---- daemon queries -----------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return self._query("status")

    def workers(self) -> list[dict[str, Any]]:
        return self._query("workers")

    def ps(self) -> list[dict[str, Any]]:
        return self._query("ps")

    def metrics(self) -> str:
        """The daemon's Prometheus metrics, in the text exposition format."""
        return self._query("metrics")

    def task(self, task_id: str) -> dict[str, Any]:
        body = self._query("task", task_id)
        if body.get("result") is not None:
            body["result"] = Result.from_wire(body["result"])
        return body

    def shutdown(self) -> dict[str, Any]:
        return self._request(m.Shutdown(next(self._reqs))).body

    def _query(self, what: str, arg: str | None = None) -> Any:
        return self._request(m.Query(next(self._reqs), what, arg)).body

    # ---- plumbing --------------------------------------------------------------

    def _spec(self, tool: str, args: dict[str, Any], options: dict[str, Any]) -> m.TaskSpec:
        unknown = set(options) - set(TASK_OPTIONS)
        if unknown:
            raise TypeError(f"unknown task option(s): {', '.join(sorted(unknown))}")
        return m.TaskSpec(f"{self._prefix}-{next(self._ids)}", tool, args, **options)

    def _send(self, msg: Any) -> None:
        frame = codec.encode(msg)
        if len(frame) > self.max_message_size:
            raise InvalidRequest(
                f"request of {len(frame)} bytes exceeds the daemon's max_message_size "
                f"({self.max_message_size}); pass large inputs as a file path", m.E_TOO_LARGE)
        self._sock.send(frame)

    def _request(self, msg: Any, reply_type: type = m.Reply) -> Any:
        key = getattr(msg, "req", None) or reply_type
        self._awaiting.add(key)
        self._send(msg)
        self._wait_for(lambda: key in self._replies, self.timeout, "the daemon's answer", ping=False)
        self._awaiting.discard(key)
        reply = self._replies.pop(key)
        if isinstance(reply, m.ErrorReply):
            raise refusal(reply.code, reply.message)
        return reply

    def _wait_for(self, condition: Any, timeout: float | None, what: str, ping: bool = True) -> None:
        """Read messages until condition() holds. A silent daemon is pinged, then given up on."""
        deadline = None if timeout is None else time.monotonic() + timeout
        silent_since = time.monotonic()
        pinged = False
        while not condition():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                if ping:
                    raise TaskTimeout(f"gave up waiting for {what} after {timeout:g}s")
                raise DaemonUnavailable(f"para daemon not answering at {self.path} (waited {timeout:g}s for {what})", self.path)
            wait = self.timeout if deadline is None else min(self.timeout, deadline - now)
            if self._poller.poll(int(wait * 1000) + 1):
                for part in codec.split(self._sock.recv()):
                    self._dispatch(codec.decode(part))
                silent_since, pinged = time.monotonic(), False
            elif time.monotonic() - silent_since >= self.timeout:
                if pinged or not ping:
                    raise DaemonUnavailable(f"para daemon not answering at {self.path} (silent for {self.timeout:g}s)", self.path)
                self._sock.send(codec.encode(m.Ping(next(self._reqs))))
                silent_since, pinged = time.monotonic(), True

    def _dispatch(self, msg: Any) -> None:
        if isinstance(msg, m.Done):
            future = self._futures.get(msg.result.id)
            if future is not None:
                future._set_result(msg.result)
        elif isinstance(msg, m.Chunk):
            future = self._futures.get(msg.task_id)
            if future is not None:
                future.chunks.append(Chunk(msg.stream, msg.data))
        elif isinstance(msg, m.ErrorReply) and msg.task_id is not None and msg.task_id in self._futures:
            self._futures[msg.task_id]._error = refusal(msg.code, msg.message)
        elif isinstance(msg, m.Welcome) or (isinstance(msg, m.ErrorReply) and msg.req == 0 and m.Welcome in self._awaiting):
            self._replies[m.Welcome] = msg  # an ErrorReply with no request number answers the Hello
        elif isinstance(msg, (m.Accepted, m.Reply, m.ErrorReply)) and msg.req in self._awaiting:
            self._replies[msg.req] = msg
        # Pong: any message resets the silence clock; nothing else to do.
