"""The asyncio client: the same calls as `Client`, as coroutines, on zmq.asyncio.

    async with AsyncClient() as c:
        r = await c.run("bash", command="make test")
        async for r in c.map("grep", [{"pattern": p, "path": "."} for p in patterns]):
            ...
        batch = await c.batch(spec)
        results = await batch.results()

One reader task owns the socket's receiving side and resolves futures; any
number of coroutines may await tasks at once. A daemon that stays silent for
`timeout` seconds while something is awaited is pinged, and if it stays
silent, every waiter gets DaemonUnavailable: nothing hangs on a dead daemon.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import secrets
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from para.client.autostart import daemon_running, start_daemon
from para.client.batch import batch_message, track_tasks
from para.client.client import MAP_WINDOW, TASK_OPTIONS
from para.client.errors import DaemonUnavailable, InvalidRequest, ParaError, TaskTimeout, error_for, refusal
from para.client.result import Chunk, Result
from para.ipc import codec
from para.ipc import messages as m
from para.ipc.endpoints import CHILD_ENDPOINT_ENV, CHILD_TOKEN_ENV, Endpoints, default_runtime_dir


class AsyncTask:
    """A submitted task: `await task` (or `await task.result()`) for its Result."""

    def __init__(self, client: AsyncClient, spec: m.TaskSpec) -> None:
        self.id, self.tool, self.spec = spec.id, spec.tool, spec
        self._client = client
        self._done: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self.chunks: asyncio.Queue[Chunk | None] = asyncio.Queue()

    def done(self) -> bool:
        return self._done.done()

    async def result(self, timeout: float | None = None) -> Result:
        """The Result; raises ToolError/TaskTimeout like Client, or TaskTimeout if `timeout` passes first."""
        try:
            result = await asyncio.wait_for(asyncio.shield(self._done), timeout)
        except asyncio.TimeoutError:
            raise TaskTimeout(f"gave up waiting for task {self.id} after {timeout:g}s") from None
        error = error_for(result)
        if error is not None:
            raise error
        return result

    def outcome(self) -> Result:
        """The finished task's Result whatever its status; a refused task as a failed Result."""
        exc = self._done.exception()
        if exc is not None:
            return Result(self.id, self.tool, m.FAILED, error=str(exc), error_code=getattr(exc, "code", None))
        return self._done.result()

    def __await__(self):
        return self.result().__await__()

    async def cancel(self) -> dict[str, list[str]]:
        return await self._client.cancel(self)


class AsyncBatchHandle:
    """A running batch: `progress()`, `results()`, `as_completed()`, `cancel()`."""

    def __init__(self, client: AsyncClient, batch_id: str, tasks: dict[str, AsyncTask]) -> None:
        self.id, self.tasks, self._client = batch_id, tasks, client

    async def progress(self) -> dict[str, Any]:
        return await self._client._query("batch", self.id)

    async def results(self) -> dict[str, Result]:
        await asyncio.wait([t._done for t in self.tasks.values()])
        return {name: t.outcome() for name, t in self.tasks.items()}

    async def as_completed(self) -> AsyncIterator[tuple[str, Result]]:
        """(name, Result) as tasks finish."""
        left = dict(self.tasks)
        while left:
            await asyncio.wait([t._done for t in left.values()], return_when=asyncio.FIRST_COMPLETED)
            for name in [n for n, t in left.items() if t.done()]:
                yield name, left.pop(name).outcome()

    async def cancel(self) -> dict[str, list[str]]:
        return await self._client.cancel(session=self.id)


class AsyncClient:
    """An asyncio connection to parad. Use `async with AsyncClient(...) as c:`."""

    def __init__(self, runtime_dir: str | Path | None = None, *, timeout: float = 10.0,
                 autostart: bool = False, name: str = "para-async-client") -> None:
        self.endpoints = Endpoints(Path(runtime_dir or default_runtime_dir()).absolute())
        self.path = str(self.endpoints.control_path)
        self.timeout, self.autostart, self.name = timeout, autostart, name
        # Inside a para bash command: tasks submitted here are the running task's children.
        self._nested = runtime_dir is None and bool(os.environ.get(CHILD_ENDPOINT_ENV))
        self._address = os.environ[CHILD_ENDPOINT_ENV] if self._nested else f"ipc://{self.path}"
        self._token = secrets.token_hex(4)
        self._ids, self._reqs = itertools.count(1), itertools.count(1)
        self._tasks: dict[str, AsyncTask] = {}
        self._replies: dict[Any, asyncio.Future] = {}
        self._ctx = zmq.asyncio.Context()
        self._sock: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task | None = None
        self.max_message_size = 1 << 20

    # ---- lifecycle ------------------------------------------------------------

    async def connect(self) -> AsyncClient:
        if self._nested:
            self.path = self._address
        elif not daemon_running(self.endpoints):
            if not self.autostart:
                raise DaemonUnavailable(f"no para daemon at {self.path}: start one with `parad`, or use autostart", self.path)
            await asyncio.get_running_loop().run_in_executor(None, start_daemon, self.endpoints)
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.linger = 0
        self._sock.connect(self._address)
        self._reader = asyncio.create_task(self._read())
        token = os.environ.get(CHILD_TOKEN_ENV) if self._nested else None
        welcome = await self._request(m.Hello(self.name, os.getpid(), token), key=m.Welcome)
        self.daemon, self.max_message_size = welcome, welcome.max_message_size
        return self

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        self._ctx.term()

    async def __aenter__(self) -> AsyncClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- tasks ------------------------------------------------------------------

    async def run(self, tool: str, /, **kwargs: Any) -> Result:
        """Run one task and wait for it (task options as in Client.run)."""
        task = self._new_task(tool, kwargs)
        self._send(m.Submit(next(self._reqs), [task.spec], ack=False))
        try:
            return await task.result()
        finally:
            self._tasks.pop(task.id, None)

    async def submit(self, tool: str, /, **kwargs: Any) -> AsyncTask:
        """Send one task; returns once the daemon accepted it (or raises why not)."""
        task = self._new_task(tool, kwargs)
        await self._request(m.Submit(next(self._reqs), [task.spec]))
        if task.done() and task._done.exception() is not None:
            self._tasks.pop(task.id, None)
            raise task._done.exception()
        return task

    async def map(self, tool: str, args_iter: Iterable[dict[str, Any]], *, return_exceptions: bool = False,
                  **options: Any) -> AsyncIterator[Result | ParaError]:
        """One task per args dict, pipelined (at most MAP_WINDOW in flight), results in input order."""
        pending: collections.deque[AsyncTask] = collections.deque()
        try:
            for args in args_iter:
                task = self._new_task(tool, {**args, **options})
                self._send(m.Submit(next(self._reqs), [task.spec], ack=False))
                pending.append(task)
                while len(pending) > MAP_WINDOW or (pending and pending[0].done()):
                    yield await self._collect(pending.popleft(), return_exceptions)
            while pending:
                yield await self._collect(pending.popleft(), return_exceptions)
        finally:
            for task in pending:
                self._tasks.pop(task.id, None)

    async def _collect(self, task: AsyncTask, return_exceptions: bool) -> Result | ParaError:
        try:
            return await task.result()
        except ParaError as exc:
            if return_exceptions:
                return exc
            raise
        finally:
            self._tasks.pop(task.id, None)

    async def stream(self, task: AsyncTask) -> AsyncIterator[Chunk]:
        """A streaming task's output chunks as they arrive, until it ends."""
        if not task.spec.stream:
            raise ValueError("submit the task with stream=True to stream its output")
        while True:
            chunk = await task.chunks.get()
            if chunk is None:
                return
            yield chunk

    async def batch(self, spec: dict[str, Any]) -> AsyncBatchHandle:
        """Start a batch of tasks with dependencies (see para.client.batch)."""
        batch_id = f"{self._token}-b{next(self._ids)}"
        msg = batch_message(next(self._reqs), batch_id, spec)
        tasks = track_tasks(msg, lambda task_spec: AsyncTask(self, task_spec), self._tasks)
        try:
            await self._request(msg)
        except ParaError:
            for task in tasks.values():
                self._tasks.pop(task.id, None)
            raise
        return AsyncBatchHandle(self, batch_id, tasks)

    async def cancel(self, *tasks: AsyncTask | str, session: str | None = None,
                     everything: bool = False) -> dict[str, list[str]]:
        ids = [t.id if isinstance(t, AsyncTask) else t for t in tasks]
        return (await self._request(m.Cancel(next(self._reqs), ids, session, everything))).body

    # ---- daemon queries -----------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        return await self._query("status")

    async def workers(self) -> list[dict[str, Any]]:
        return await self._query("workers")

    async def ps(self) -> list[dict[str, Any]]:
        return await self._query("ps")

    async def scale(self, pool: str, workers: int | None) -> dict[str, Any]:
        return (await self._request(m.Scale(next(self._reqs), pool, workers))).body

    async def _query(self, what: str, arg: str | None = None) -> Any:
        return (await self._request(m.Query(next(self._reqs), what, arg))).body

    # ---- plumbing --------------------------------------------------------------

    def _new_task(self, tool: str, kwargs: dict[str, Any]) -> AsyncTask:
        options = {k: kwargs.pop(k) for k in TASK_OPTIONS if k in kwargs}
        task = AsyncTask(self, m.TaskSpec(f"{self._token}-{next(self._ids)}", tool, kwargs, **options))
        self._tasks[task.id] = task
        return task

    def _send(self, msg: Any) -> None:
        frame = codec.encode(msg)
        if len(frame) > self.max_message_size:
            raise InvalidRequest(f"request of {len(frame)} bytes exceeds the daemon's max_message_size "
                                 f"({self.max_message_size}); pass large inputs as a file path", m.E_TOO_LARGE)
        if self._sock is None:
            raise DaemonUnavailable("this AsyncClient is not connected: use `async with AsyncClient()`", self.path)
        self._sock.send(frame)  # DEALER to a live peer: queued at once, never waits

    async def _request(self, msg: Any, key: Any = None) -> Any:
        key = key or msg.req
        reply = self._replies[key] = asyncio.get_running_loop().create_future()
        self._send(msg)
        try:
            answer = await asyncio.wait_for(reply, self.timeout)
        except asyncio.TimeoutError:
            raise DaemonUnavailable(f"para daemon not answering at {self.path} (waited {self.timeout:g}s)", self.path) from None
        finally:
            self._replies.pop(key, None)
        if isinstance(answer, m.ErrorReply):
            raise refusal(answer.code, answer.message)
        return answer

    async def _read(self) -> None:
        pinged = False
        while True:
            waiting = bool(self._tasks) or bool(self._replies)
            if not await self._sock.poll(int(self.timeout * 1000)):
                if not waiting:
                    continue
                if pinged:
                    self._fail_all(DaemonUnavailable(
                        f"para daemon not answering at {self.path} (silent for {2 * self.timeout:g}s)", self.path))
                    pinged = False
                    continue
                self._sock.send(codec.encode(m.Ping(next(self._reqs))))
                pinged = True
                continue
            pinged = False
            for part in codec.split(await self._sock.recv()):
                self._dispatch(codec.decode(part))

    def _fail_all(self, error: ParaError) -> None:
        for task in self._tasks.values():
            if not task.done():
                task._done.set_exception(error)
                task.chunks.put_nowait(None)
        for reply in self._replies.values():
            if not reply.done():
                reply.set_exception(error)

    def _dispatch(self, msg: Any) -> None:
        if isinstance(msg, m.Done):
            task = self._tasks.get(msg.result.id)
            if task is not None and not task.done():
                task._done.set_result(Result.from_wire(msg.result))
                task.chunks.put_nowait(None)
        elif isinstance(msg, m.Chunk):
            task = self._tasks.get(msg.task_id)
            if task is not None:
                task.chunks.put_nowait(Chunk(msg.stream, msg.data))
        elif isinstance(msg, m.ErrorReply) and msg.task_id is not None and msg.task_id in self._tasks:
            task = self._tasks[msg.task_id]
            if not task.done():
                task._done.set_exception(refusal(msg.code, msg.message))
                task.chunks.put_nowait(None)
        elif (isinstance(msg, m.Welcome) or (isinstance(msg, m.ErrorReply) and msg.req == 0)) and m.Welcome in self._replies:
            if not self._replies[m.Welcome].done():  # an ErrorReply with no request number answers the Hello
                self._replies[m.Welcome].set_result(msg)
        elif isinstance(msg, (m.Accepted, m.Reply, m.ErrorReply)):
            reply = self._replies.get(msg.req)
            if reply is not None and not reply.done():
                reply.set_result(msg)
