"""The asyncio client: the same calls as `Client`, as coroutines, on zmq.asyncio.

    async with AsyncClient() as c:
        r = await c.run("bash", command="make test")
        async for r in c.map("grep", [{"pattern": p, "path": "."} for p in patterns]):
            ...
        batch = await c.batch(spec)
        results = await batch.results()

One reader task owns the socket's receiving side and resolves futures; any
number of coroutines may await tasks at once. A daemon that stays silent for
`timeout` seconds (at most 10) while something is awaited is pinged; if the ping goes
unanswered, or its Pong shows a restarted parad, the client reconnects and
gets its tasks back as Client does (client/resume.py), and if no daemon
answers within `reconnect` seconds every waiter gets DaemonUnavailable:
nothing hangs on a dead daemon.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from para.client.autostart import start_daemon
from para.client.batch import track_tasks
from para.client.core import MAP_BATCH, BaseClient, Silence, TaskState, hello_waits, split_options, wait_ms
from para.client.errors import DaemonUnavailable, ParaError, TaskTimeout
from para.client.result import Chunk, Result
from para.client.resume import AwaitSlot, Resume
from para.ipc import messages as m


class AsyncTask(TaskState):
    """A submitted task: `await task` (or `await task.result()`) for its Result."""

    def __init__(self, client: AsyncClient, spec: m.TaskSpec | None, task_id: str = "") -> None:
        super().__init__(spec, task_id)
        self._client = client
        self._finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Made on first use: most tasks (every run()) neither stream nor take input.
        self._chunks: asyncio.Queue[Chunk | None] | None = None
        self._stdin_event: asyncio.Event | None = None

    @property
    def chunks(self) -> asyncio.Queue[Chunk | None]:
        """The task's streamed output chunks as they arrive, then None once it ended."""
        if self._chunks is None:
            self._chunks = asyncio.Queue()
            if self.done():
                self._chunks.put_nowait(None)
        return self._chunks

    async def result(self, timeout: float | None = None) -> Result:
        """The Result; raises ToolError/TaskTimeout like Client, or TaskTimeout if `timeout` passes first."""
        try:
            await asyncio.wait_for(asyncio.shield(self._finished), timeout)
        except asyncio.TimeoutError:
            raise TaskTimeout(f"gave up waiting for task {self.id} after {timeout:g}s") from None
        if self._error is not None:
            raise self._error
        return self._result

    def __await__(self):
        return self.result().__await__()

    async def cancel(self) -> dict[str, list[str]]:
        """Cancel this task; the daemon's answer as AsyncClient.cancel gives it."""
        return await self._client.cancel(self)

    def _settle(self, result: Result | None, error: ParaError | None) -> None:
        super()._settle(result, error)
        self._finished.set_result(None)
        if self._chunks is not None:
            self._chunks.put_nowait(None)

    def _put_chunk(self, chunk: Chunk) -> None:
        self.chunks.put_nowait(chunk)

    def _stdin_changed(self) -> None:
        if self._stdin_event is not None:
            self._stdin_event.set()

    async def _stdin_wait(self) -> None:
        """Until an InputAck comes or the task ends (the caller looked at both since its last await)."""
        if self._stdin_event is None:
            self._stdin_event = asyncio.Event()
        self._stdin_event.clear()
        await self._stdin_event.wait()


class AsyncBatchHandle:
    """A running batch: the same calls as BatchHandle, as coroutines."""

    def __init__(self, client: AsyncClient, batch_id: str, tasks: dict[str, AsyncTask]) -> None:
        self.id, self.tasks, self._client = batch_id, tasks, client

    @property
    def futures(self) -> dict[str, AsyncTask]:
        """The batch's tasks by name (BatchHandle's name for them)."""
        return self.tasks

    async def progress(self) -> dict[str, Any]:
        """Totals by state, done, failed, skipped, throughput (tasks/s), error_rate, eta (s), complete."""
        return await self._client._query("batch", self.id)

    def done(self) -> bool:
        return all(t.done() for t in self.tasks.values())

    async def wait(self, timeout: float | None = None) -> None:
        """Wait for every task; TaskTimeout if `timeout` seconds pass first."""
        if self.tasks:
            _, left = await asyncio.wait([t._finished for t in self.tasks.values()], timeout=timeout)
            if left:
                raise TaskTimeout(f"gave up waiting for batch {self.id} after {timeout:g}s")

    async def results(self, timeout: float | None = None) -> dict[str, Result]:
        """Wait for every task; each one's Result by name (failed and skipped ones too, never raised)."""
        await self.wait(timeout)
        return {name: t.outcome() for name, t in self.tasks.items()}

    async def as_completed(self, timeout: float | None = None) -> AsyncIterator[tuple[str, Result]]:
        """(name, Result) as tasks finish."""
        deadline = None if timeout is None else time.monotonic() + timeout
        left = dict(self.tasks)
        while left:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            await asyncio.wait([t._finished for t in left.values()], timeout=remaining,
                               return_when=asyncio.FIRST_COMPLETED)
            finished = [n for n, t in left.items() if t.done()]
            if not finished:
                raise TaskTimeout(f"gave up waiting for batch {self.id} after {timeout:g}s")
            for name in finished:
                yield name, left.pop(name).outcome()

    @property
    def ok(self) -> bool:
        return self.done() and all(t.outcome().ok for t in self.tasks.values())

    async def cancel(self) -> dict[str, list[str]]:
        """Cancel every task of the batch that has not finished."""
        return await self._client.cancel(session=self.id)

    def close(self) -> None:
        self._client._forget(self.tasks.values())


class AsyncClient(BaseClient):
    """An asyncio connection to parad. Use `async with AsyncClient(...) as c:`
    (`timeout` and `reconnect` as for Client)."""

    def __init__(self, runtime_dir: str | Path | None = None, *, timeout: float = 10.0,
                 autostart: bool = False, name: str = "para-async-client", reconnect: float = 30.0) -> None:
        super().__init__(runtime_dir, timeout, autostart, name, reconnect)
        self._ctx = zmq.asyncio.Context()
        self._sock: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task | None = None
        self._resuming: asyncio.Task | None = None
        self._unsent: list[AsyncTask] = []   # run() tasks waiting for this loop iteration's Submit frame

    # ---- lifecycle ------------------------------------------------------------

    async def connect(self) -> AsyncClient:
        """Connect and greet the daemon (`async with` does it; a connected client is returned as is)."""
        if self._sock is not None:
            return self
        if self._needs_start():
            await asyncio.get_running_loop().run_in_executor(None, start_daemon, self.endpoints)
        self._open()
        self._reader = asyncio.create_task(self._read())
        self._welcomed(await self._greet(self.timeout))
        return self

    def _open(self) -> None:
        """A fresh socket on the control path (only the reader calls this once it runs: it polls the socket)."""
        if self._sock is not None:
            self._sock.close(linger=0)
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.linger = 0
        self._sock.connect(self._address)

    async def close(self) -> None:
        """Close the socket; unfinished tasks go on in the daemon."""
        for task in (self._reader, self._resuming):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._reader = self._resuming = None
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
        """Run one task and wait for it (task options as in Client.run). The tasks that coroutines
        run() in one turn of the event loop go to parad together, in one Submit frame."""
        task = self._track(AsyncTask(self, self._spec(tool, *split_options(kwargs))))
        self._submit_soon(task)
        try:
            return await task.result()
        finally:
            self._tasks.pop(task.id, None)

    async def submit(self, tool: str, /, **kwargs: Any) -> AsyncTask:
        """Send one task; returns once the daemon accepted it (or raises why not)."""
        task = self._track(AsyncTask(self, self._spec(tool, *split_options(kwargs))))
        try:
            await self._request(self._submit([task.spec], ack=True))
        except BaseException:
            self._tasks.pop(task.id, None)   # not tracked, so a later resume does not submit it again
            raise
        self._accepted(task)
        return task

    async def map(self, tool: str, args_iter: Iterable[dict[str, Any]], *, return_exceptions: bool = False,
                  **options: Any) -> AsyncIterator[Result | ParaError]:
        """One task per args dict, pipelined, results in input order (options as in Client.map)."""
        pending: collections.deque[AsyncTask] = collections.deque()
        make = lambda spec: AsyncTask(self, spec)  # noqa: E731
        try:
            for step in self._map_plan(tool, args_iter, options, pending, make):
                if isinstance(step, bytes):
                    self._send_frame(step)
                else:
                    yield await self._collect(step, return_exceptions)
        finally:
            self._forget(pending)

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
        if not task.streaming:
            raise ValueError("submit the task with stream=True to stream its output")
        while True:
            chunk = await task.chunks.get()
            if chunk is None:
                return
            yield chunk

    async def write_stdin(self, task: AsyncTask, data: bytes = b"", *, eof: bool = False) -> bool:
        """Send `data` to the stdin of the task's command (submitted with stdin_stream=True), then EOF
        if `eof`; waits while channels.INPUT_WINDOW bytes are unacknowledged (as Client.write_stdin).
        True once all is sent; False if the task ended or its command closed its stdin first."""
        self._stdin_check(task)
        view = memoryview(data)
        while True:
            frames, taken, done = self._stdin_step(task, view, eof)
            for frame in frames:
                self._send_frame(frame)
            view = view[taken:]
            if done is not None:
                return done
            await task._stdin_wait()   # no await since the step: nothing came meanwhile

    async def result(self, task_id: str, timeout: float | None = None) -> Result:
        """Wait for task `task_id`, whoever submitted it and whenever (as Client.result)."""
        own = self._tasks.get(task_id)
        if own is not None:
            return await own.result(timeout)
        task = self._track(AsyncTask(self, None, task_id))
        msg = self._await_msg(task_id)
        key = self._expect(msg, AwaitSlot(task))
        try:
            self._send(msg)
            return await task.result(timeout)
        finally:
            self._replies.pop(key, None)
            self._tasks.pop(task_id, None)

    async def prune(self, older_than: float | None = None) -> dict[str, int]:
        """Drop finished tasks from parad's journal now (as Client.prune); what was removed."""
        return (await self._request(self._prune_msg(older_than))).body

    async def cancel(self, *tasks: AsyncTask | str, session: str | None = None,
                     everything: bool = False) -> dict[str, list[str]]:
        """Cancel tasks by handle or id, every live task of `session`, or (`everything`) all this client submitted."""
        return (await self._request(self._cancel(tasks, session, everything))).body

    async def batch(self, spec: dict[str, Any]) -> AsyncBatchHandle:
        """Start a batch of tasks with dependencies (see para.client.batch)."""
        batch_id, msg = self._batch(spec)
        tasks = track_tasks(msg, lambda task_spec: AsyncTask(self, task_spec), self._tasks)
        try:
            await self._request(msg)
        except ParaError:
            self._forget(tasks.values())
            raise
        return AsyncBatchHandle(self, batch_id, tasks)

    async def scale(self, pool: str, workers: int | None) -> dict[str, Any]:
        """Pin `pool` to `workers` (0 drains it), or None for automatic (as Client.scale)."""
        return (await self._request(self._scale(pool, workers))).body

    # ---- daemon queries -----------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """The daemon's state: its pid and version, pools, queues, clients."""
        return await self._query("status")

    async def workers(self) -> list[dict[str, Any]]:
        """One dict per worker process."""
        return await self._query("workers")

    async def ps(self) -> list[dict[str, Any]]:
        """One dict per live task."""
        return await self._query("ps")

    async def tools(self) -> list[dict[str, Any]]:
        """The tools parad runs, one dict per pool: name, tool, description, read_only, retry_safe,
        workspace, and input_schema (the JSON Schema of its arguments)."""
        return await self._query("tools")

    async def metrics(self) -> str:
        """The daemon's Prometheus metrics, in the text exposition format."""
        return await self._query("metrics")

    async def task(self, task_id: str) -> dict[str, Any]:
        """What the daemon knows of task `task_id`; a finished one's `result` as a Result."""
        return self._task_body(await self._query("task", task_id))

    async def shutdown(self) -> dict[str, Any]:
        """Ask the daemon to shut down (running tasks finish, queued ones are failed)."""
        return (await self._request(self._shutdown())).body

    async def _query(self, what: str, arg: str | None = None) -> Any:
        return (await self._request(self._query_msg(what, arg))).body

    # ---- I/O ------------------------------------------------------------------------

    def _send(self, msg: Any) -> None:
        self._send_frame(self._frame(msg))

    def _send_frame(self, frame: bytes) -> None:
        if self._unsent:
            self._send_unsent()   # frames leave in the order they were asked for
        if self._sock is None:
            raise DaemonUnavailable("this AsyncClient is not connected: use `async with AsyncClient()`", self.path)
        self._sock.send(frame)  # DEALER to a live peer: queued at once, never waits

    def _submit_soon(self, task: AsyncTask) -> None:
        """Queue `task` for a Submit sent at the end of this turn of the loop. One frame for many
        run() calls instead of one each: a zmq send wakes the client's and parad's I/O threads,
        and parad reads, checks and journals frame by frame."""
        if self._sock is None:
            self._tasks.pop(task.id, None)
            raise DaemonUnavailable("this AsyncClient is not connected: use `async with AsyncClient()`", self.path)
        if not self._unsent:
            asyncio.get_running_loop().call_soon(self._send_unsent)
        self._unsent.append(task)

    def _send_unsent(self) -> None:
        tasks, self._unsent = self._unsent, []
        for i in range(0, len(tasks), MAP_BATCH):
            self._send_tasks(tasks[i:i + MAP_BATCH])

    def _send_tasks(self, tasks: list[AsyncTask]) -> None:
        """One Submit for `tasks`, halved while it cannot be encoded or is too large; a task that
        cannot be sent gets the error its run() raised when each task had a frame of its own."""
        try:
            msg = self._submit([t.spec for t in tasks])
            frame = self._frame(msg)
        except Exception as exc:   # too large, or arguments msgpack cannot encode: the caller's error
            if len(tasks) > 1:      # ... for one task only: find it
                self._send_tasks(tasks[:len(tasks) // 2])
                self._send_tasks(tasks[len(tasks) // 2:])
            else:
                _fail(tasks, exc)
            return
        for task in tasks:
            task.submit_req = msg.req
        try:
            self._send_frame(frame)
        except ParaError as exc:
            _fail(tasks, exc)

    async def _greet(self, timeout: float) -> m.Welcome:
        """The daemon's Welcome within `timeout` seconds, the Hello sent again every HELLO_AGAIN."""
        for wait in hello_waits(timeout):
            with contextlib.suppress(DaemonUnavailable):
                return await self._request(self._hello(), wait)
        raise self._no_answer("the daemon's greeting")

    async def _request(self, msg: Any, timeout: float | None = None) -> Any:
        reply = asyncio.get_running_loop().create_future()
        key = self._expect(msg, reply)
        try:
            self._send(msg)
            answer = await asyncio.wait_for(reply, timeout or self.timeout)
        except asyncio.TimeoutError:
            raise self._no_answer("the daemon's answer") from None
        finally:
            self._replies.pop(key, None)
        return self._answer(answer)

    async def _read(self) -> None:
        """The one reader: routes every frame, pings a daemon quiet while something is awaited,
        and when it restarted or stays silent, reconnects and has the tasks resumed."""
        while True:
            if self._resuming is not None or not (self._tasks or self._replies):
                self._silence.reset()  # nothing awaited (or the resume has its own bounds): quiet is not silence
            if await self._sock.poll(wait_ms(self._silence.remaining())):
                self._receive(await self._sock.recv())
                if self._restart_seen and self._resuming is None:
                    self._begin_resume(silent=False)
                continue
            if self._resuming is not None or not (self._tasks or self._replies):
                continue
            step = self._silence.step()
            if step == Silence.PING:
                self._sock.send(self._ping())
            elif step == Silence.GIVE_UP:
                self._begin_resume(silent=True)

    def _begin_resume(self, silent: bool) -> None:
        """Open a fresh socket here, in the reader (which polls it), and resume in a task of its own."""
        self._send_unsent()   # to the old socket: the resume then knows them as sent, and submits them again if unknown
        try:
            plan = self._resume_plan(silent)
        except DaemonUnavailable as exc:   # a nested client: its parent command is gone with parad
            self._fail_all(exc)
            self._silence.reset()
            return
        self._open()
        self._resuming = asyncio.create_task(self._resume(plan))

    async def _resume(self, plan: Resume) -> None:
        """Greet whichever parad answers, Await every task, submit again what it does not know (resume.py)."""
        try:
            if plan.start:
                await asyncio.get_running_loop().run_in_executor(None, start_daemon, self.endpoints)
            try:
                welcome = await self._greet(self.reconnect)
            except DaemonUnavailable:
                raise plan.gone(self.reconnect) from None
            self._resumed(plan, welcome)
            for msg in plan.awaits(self._reqs):
                for frame in self._resubmit_frames(plan.answered((await self._request(msg)).body)):
                    self._send_frame(frame)
        except ParaError as exc:
            self._fail_all(exc)
        finally:
            self._resuming = None
            self._silence.reset()

    def _fail_all(self, error: ParaError) -> None:
        for task in self._tasks.values():
            if not task.done():
                task._settle(None, error)
        for reply in self._replies.values():
            if not reply.done():
                reply.set_exception(error)


def _fail(tasks: list[AsyncTask], error: Exception) -> None:
    for task in tasks:
        if not task.done():
            task._settle(None, error)   # type: ignore[arg-type]  (an encoding error is the caller's, raised as is)
