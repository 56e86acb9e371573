"""What `Client` and `AsyncClient` share, with no sockets and no waiting.

The way httpx's BaseClient holds everything that needs no I/O, `BaseClient`
here builds requests (task ids, Submit frames of up to MAP_BATCH tasks, the
split of task options from tool arguments), routes every frame the daemon
sends (results and refusals to their task's handle, chunks to its stream,
answers to the request awaiting them), keeps the tasks in flight, and decides
when a quiet daemon is pinged or given up on (`Silence`) and, when it restarted
or went away, how the tasks are got back (`client/resume.py`). `Client` and
`AsyncClient` add only the socket and the waiting, so both behave the same.
A task of a tool that runs commands gets the caller's cwd and environment
(`client/context.py`).
"""

from __future__ import annotations

import collections
import itertools
import numbers
import os
import secrets
import time
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from para.client.autostart import daemon_running
from para.client.batch import batch_message
from para.client.context import DEFAULT_CONTEXT_TOOLS, with_caller_context
from para.client.errors import DaemonUnavailable, InvalidRequest, ParaError, error_for, refusal
from para.client.result import Chunk, Result
from para.client.resume import Resume, restarted
from para.ipc import codec
from para.ipc import messages as m
from para.ipc.channels import INPUT_CHUNK, INPUT_WINDOW
from para.ipc.endpoints import CHILD_ENDPOINT_ENV, CHILD_TOKEN_ENV, Endpoints, default_runtime_dir
from para.ipc.options import TASK_OPTIONS  # task options a caller may pass beside a tool's own arguments

MAP_WINDOW = 2048    # tasks in flight during map()
MAP_BATCH = 128      # tasks per Submit message during map() (fewer when they are large)


def split_options(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tool arguments, task options) from one call's keyword arguments."""
    options = {k: kwargs.pop(k) for k in TASK_OPTIONS if k in kwargs}
    return kwargs, options


def check_options(options: dict[str, Any]) -> None:
    """InvalidRequest naming any option that is not a task option (map's options cannot be tool arguments)."""
    unknown = set(options) - set(TASK_OPTIONS)
    if unknown:
        raise InvalidRequest(f"unknown task option(s): {', '.join(sorted(unknown))}; task options are "
                             f"{', '.join(TASK_OPTIONS)}: put tool arguments in the args dicts", m.E_INVALID)


class ReplySlot:
    """Where a synchronous wait finds its answer (AsyncClient uses an asyncio future in its place)."""
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: Any = None

    def done(self) -> bool:
        return self.value is not None

    def set_result(self, value: Any) -> None:
        self.value = value


class Slot(Protocol):
    def done(self) -> bool: ...
    def set_result(self, value: Any) -> None: ...


class TaskState:
    """What a task handle knows, whichever client made it: its spec (None for a handle on another's
    task, made by id), and once finished its Result or error."""

    _client: Any   # the Client or AsyncClient tracking it (set by the subclass)

    def __init__(self, spec: m.TaskSpec | None, task_id: str = "") -> None:
        self.id, self.spec = (spec.id if spec else task_id), spec
        self.tool, self.streaming = (spec.tool, spec.stream) if spec else ("", False)
        self.batch: str | None = None   # the batch it belongs to (client/batch.py track_tasks)
        self.submit_req: int | None = None   # the Submit without an ack that carried it: a refusal of it whole names it
        self._result: Result | None = None
        self._error: ParaError | None = None
        self._stdin = StdinFlow()

    def done(self) -> bool:
        """Whether the task has finished (or was refused)."""
        return self._result is not None or self._error is not None

    def close(self) -> None:
        """Stop tracking this task, as a batch handle's close() does: a long-lived client forgets
        what it has collected. parad keeps its result by id (`result(task_id)`)."""
        self._client._forget([self])

    def outcome(self) -> Result:
        """The finished task's Result, whatever its status (result() raises for failures); for a
        refused task, a Result with status 'failed' and the refusal as its error."""
        if self._result is not None:
            return self._result
        if self._error is not None:
            return Result(self.id, self.tool, m.FAILED, error=str(self._error), error_code=getattr(self._error, "code", None))
        raise RuntimeError(f"task {self.id} has not finished")

    def _settle(self, result: Result | None, error: ParaError | None) -> None:
        self._result, self._error = result, error
        self._stdin_changed()

    def _put_chunk(self, chunk: Chunk) -> None:
        raise NotImplementedError

    def _input_ack(self, ack: m.InputAck) -> None:
        flow = self._stdin
        flow.open, flow.acked = True, max(flow.acked, ack.written)
        flow.closed = flow.closed or ack.closed
        flow.error = flow.error or ack.error
        self._stdin_changed()

    def _stdin_changed(self) -> None:
        """An InputAck came, or the task ended: a writer waiting for room may go on (AsyncTask wakes it)."""


class StdinFlow:
    """A task's streamed stdin as its client sees it: at most INPUT_WINDOW bytes sent and not acknowledged."""
    __slots__ = ("open", "sent", "acked", "eof", "closed", "error")

    def __init__(self) -> None:
        self.open = False          # the worker's first InputAck came: the command's stdin is open
        self.sent = self.acked = 0
        self.eof = False           # EOF sent
        self.closed = False        # the worker takes no more
        self.error: str | None = None   # parad refused input, and why

    def room(self) -> int:
        return INPUT_WINDOW - (self.sent - self.acked) if self.open and not self.closed else 0


# The longest one wait on the socket lasts; its caller then looks at its deadline and waits again.
# A wait is given in milliseconds as a C int: a timeout of weeks, or inf (wait as long as it takes), would not fit.
MAX_WAIT = 3600.0


def wait_ms(seconds: float) -> int:
    """A wait of `seconds`, at most MAX_WAIT, in whole milliseconds, rounded up."""
    return int(min(seconds, MAX_WAIT) * 1000) + 1


# A Hello unanswered this long is sent again: one that reached a parad that died before answering
# is lost with it, and the socket reconnects to the next parad by itself.
HELLO_AGAIN = 1.0


def hello_waits(timeout: float) -> Iterator[float]:
    """How long each Hello waits for its Welcome, sent again after each, within `timeout` in all."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        yield min(HELLO_AGAIN, left)


# A quiet daemon is pinged at least this often, whatever the timeout: the Pong of a parad that
# restarted names its new boot, so a long wait (timeout=inf too) notices the restart and resumes.
PING_EVERY = 10.0


class Silence:
    """When to ping a quiet daemon and when to give up on it: a ping after `timeout` seconds (at most
    `every`) without a message, again every as many while none comes, and DaemonUnavailable once
    `timeout` seconds passed after the first unanswered ping (never for an infinite timeout)."""
    PING, GIVE_UP = "ping", "give up"

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.every = min(timeout, PING_EVERY)
        self.reset()

    def reset(self) -> None:
        """Something was heard (or a wait begins): the clock starts again."""
        self.quiet_since = self.since = time.monotonic()
        self.first_ping: float | None = None

    def remaining(self) -> float:
        """Seconds until step() has something to do."""
        due = self.since + self.every
        if self.first_ping is not None:
            due = min(due, self.first_ping + self.timeout)
        return max(0.0, due - time.monotonic())

    def step(self) -> str | None:
        """PING (the caller sends one now), GIVE_UP, or None while the daemon is not yet quiet for long enough."""
        now = time.monotonic()
        if self.first_ping is not None and now - self.first_ping >= self.timeout:
            return self.GIVE_UP
        if now - self.since < self.every:
            return None
        if self.first_ping is None:
            self.first_ping = now
        self.since = now
        return self.PING

    def quiet_for(self) -> float:
        return time.monotonic() - self.quiet_since


class BaseClient:
    """Everything of a para client but its socket: requests, routing of replies, tasks in flight."""

    def __init__(self, runtime_dir: str | Path | None, timeout: float, autostart: bool, name: str,
                 reconnect: float) -> None:
        if isinstance(timeout, bool) or not (isinstance(timeout, numbers.Real) and timeout > 0):   # NaN too
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        self.endpoints = Endpoints(Path(runtime_dir or default_runtime_dir()).absolute())
        self.path = str(self.endpoints.control_path)
        self.timeout, self.autostart, self.name, self.reconnect = timeout, autostart, name, reconnect
        # Inside a para bash command: tasks submitted here are the running task's children.
        self._nested = runtime_dir is None and bool(os.environ.get(CHILD_ENDPOINT_ENV))
        self._address = os.environ[CHILD_ENDPOINT_ENV] if self._nested else f"ipc://{self.path}"
        if self._nested:
            self.path = self._address
        self._prefix = secrets.token_hex(4)
        self._ids, self._reqs = itertools.count(1), itertools.count(1)
        self._tasks: dict[str, Any] = {}          # task id -> its handle, until collected or forgotten
        self._replies: dict[Any, Slot] = {}       # request number (Welcome for Hello) -> where its answer goes
        self._silence = Silence(timeout)
        self._restart_seen = False                # a Pong named another run of parad: resume
        self.daemon: m.Welcome | None = None
        self.max_message_size = 1 << 20  # until the daemon says its own

    # ---- requests ---------------------------------------------------------------

    def _needs_start(self) -> bool:
        """Whether a daemon must be started first; DaemonUnavailable if none runs and autostart is off."""
        if self._nested or daemon_running(self.endpoints):
            return False
        if not self.autostart:
            raise DaemonUnavailable(f"no para daemon at {self.path}: start one with `parad`, or use autostart", self.path)
        return True

    def _hello(self) -> m.Hello:
        return m.Hello(self.name, os.getpid(), os.environ.get(CHILD_TOKEN_ENV) if self._nested else None)

    def _welcomed(self, welcome: m.Welcome) -> None:
        self.daemon, self.max_message_size = welcome, welcome.max_message_size

    def _spec(self, tool: str, args: dict[str, Any], options: dict[str, Any]) -> m.TaskSpec:
        """A TaskSpec with a fresh id; `options` already split out (split_options) or checked (check_options)."""
        owner_tools = self.daemon.owner_tools if self.daemon is not None else ()
        args, options = with_caller_context(tool, args, options, self._context_tools(), owner_tools=owner_tools)
        return m.TaskSpec(f"{self._prefix}-{next(self._ids)}", tool, args, **options)

    def _context_tools(self) -> Collection[str]:
        """The pools whose tasks run in the caller's workspace, cwd and environment (client/context.py)."""
        named = self.daemon.workspace_tools if self.daemon is not None else None
        return named or DEFAULT_CONTEXT_TOOLS

    def _track(self, handle: Any) -> Any:
        self._tasks[handle.id] = handle
        return handle

    def _forget(self, handles: Iterable[Any]) -> None:
        for handle in handles:
            self._tasks.pop(handle.id, None)

    def _submit(self, specs: list[m.TaskSpec], ack: bool = False) -> m.Submit:
        return m.Submit(next(self._reqs), specs, ack=ack)

    def _submit_frames(self, specs: list[m.TaskSpec]) -> Iterator[bytes]:
        """Submit frames for `specs`, halved until each fits the daemon's max_message_size
        (tasks that carry their caller's environment are a few KiB each)."""
        msg = self._submit(specs)
        try:
            frame = self._frame(msg)
        except InvalidRequest as exc:
            if len(specs) == 1 or exc.code != m.E_TOO_LARGE:
                raise
            half = len(specs) // 2
            yield from self._submit_frames(specs[:half])
            yield from self._submit_frames(specs[half:])
            return
        for spec in specs:
            handle = self._tasks.get(spec.id)
            if handle is not None:
                handle.submit_req = msg.req
        yield frame

    def _cancel(self, tasks: tuple[Any, ...], session: str | None, everything: bool) -> m.Cancel:
        ids = [t if isinstance(t, str) else t.id for t in tasks]
        return m.Cancel(next(self._reqs), ids, session, everything)

    def _scale(self, pool: str, workers: int | None) -> m.Scale:
        return m.Scale(next(self._reqs), pool, workers)

    def _query_msg(self, what: str, arg: str | None = None) -> m.Query:
        return m.Query(next(self._reqs), what, arg)

    def _shutdown(self) -> m.Shutdown:
        return m.Shutdown(next(self._reqs))

    def _ping(self) -> bytes:
        return codec.encode(m.Ping(next(self._reqs)))

    def _await_msg(self, task_id: str) -> m.Await:
        return m.Await(next(self._reqs), [task_id])

    def _prune_msg(self, older_than: float | None) -> m.Prune:
        return m.Prune(next(self._reqs), older_than)

    def _resume_plan(self, silent: bool) -> Resume:
        """A reconnection after parad restarted (or, `silent`, stopped answering): the tasks to get back.
        A nested client has nothing to resume (its parent command died with parad): DaemonUnavailable."""
        if self._nested:
            raise self._silent()
        self._restart_seen = False
        why = (f"para daemon not answering at {self.path} (silent for {self._silence.quiet_for():.1f}s)" if silent
               else f"para daemon at {self.path} restarted")
        start = self.autostart and not daemon_running(self.endpoints)
        return Resume(self.daemon, self.path, list(self._tasks.values()), why, start)

    def _resumed(self, plan: Resume, welcome: m.Welcome) -> None:
        self._welcomed(welcome)
        plan.new = welcome
        self._silence.reset()

    def _resubmit_frames(self, specs: list[m.TaskSpec]) -> Iterator[bytes]:
        for i in range(0, len(specs), MAP_BATCH):
            yield from self._submit_frames(specs[i:i + MAP_BATCH])

    def _batch(self, spec: dict[str, Any]) -> tuple[str, m.SubmitBatch]:
        batch_id = f"{self._prefix}-b{next(self._ids)}"
        return batch_id, batch_message(next(self._reqs), batch_id, spec, self._context_tools())

    def _frame(self, msg: Any) -> bytes:
        """`msg` encoded; InvalidRequest if the daemon would refuse it for its size."""
        frame = codec.encode(msg)
        if len(frame) > self.max_message_size:
            raise InvalidRequest(
                f"request of {len(frame)} bytes exceeds the daemon's max_message_size "
                f"({self.max_message_size}); pass large inputs as a file path", m.E_TOO_LARGE)
        return frame

    def _expect(self, msg: Any, slot: Slot) -> Any:
        """Register `slot` for the answer to `msg`; the key to drop it by."""
        key = m.Welcome if isinstance(msg, m.Hello) else msg.req
        self._replies[key] = slot
        return key

    def _map_plan(self, tool: str, args_iter: Iterable[dict[str, Any]], options: dict[str, Any],
                  pending: collections.deque, make: Any) -> Iterator[Any]:
        """map() as steps: a frame (bytes) to send, or a handle to collect next, in input order.

        Tasks go out MAP_BATCH to a Submit, at most MAP_WINDOW in flight; what has
        been batched is sent before any wait.
        """
        check_options(options)
        batch: list[m.TaskSpec] = []
        for args in args_iter:
            handle = self._track(make(self._spec(tool, dict(args), options)))
            pending.append(handle)
            batch.append(handle.spec)
            if len(batch) >= MAP_BATCH:
                yield from self._submit_frames(batch)
                batch = []
            while len(pending) > MAP_WINDOW or (pending and pending[0].done()):
                if batch:
                    yield from self._submit_frames(batch)
                    batch = []
                yield pending.popleft()
        if batch:
            yield from self._submit_frames(batch)
        while pending:
            yield pending.popleft()

    def _stdin_step(self, task: TaskState, data: memoryview, eof: bool) -> tuple[list[bytes], int, bool | None]:
        """Input frames for as much of `data` (then EOF, if `eof`) as the window takes now:
        (frames, bytes of data taken, done) where done is True once everything is sent,
        False if the task ended or its stdin closed (the rest is dropped), None while it must wait."""
        flow = task._stdin
        if task.done() or flow.closed:   # input that crossed the end is refused: not an error, as for a pipe
            return [], 0, False
        if flow.error is not None:
            raise InvalidRequest(flow.error, m.E_INVALID)
        frames, taken = [], 0
        while taken < len(data) and (n := min(INPUT_CHUNK, flow.room(), len(data) - taken)) > 0:
            last = eof and taken + n == len(data)
            frames.append(codec.encode(m.Input(next(self._reqs), task.id, bytes(data[taken:taken + n]), last)))
            flow.sent += n
            flow.eof = last
            taken += n
        if taken == len(data) and eof and not flow.eof and flow.open:
            frames.append(codec.encode(m.Input(next(self._reqs), task.id, b"", True)))
            flow.eof = True
        return frames, taken, (taken == len(data) and flow.eof == eof) or None

    def _stdin_check(self, task: TaskState) -> None:
        """ValueError unless `task` is this client's and streams its stdin, with EOF not sent yet."""
        if self._tasks.get(task.id) is not task:
            raise ValueError(f"task {task.id} is not one this client is waiting for: only its own tasks take input")
        if task.spec is None or not task.spec.args.get("stdin_stream"):
            raise ValueError("submit the task with stdin_stream=True to write to its stdin")
        if task._stdin.eof:
            raise ValueError(f"task {task.id}'s stdin is closed: EOF was sent")

    # ---- answers ---------------------------------------------------------------

    def _answer(self, reply: Any) -> Any:
        """A request's answer; the refusal's exception if it was refused."""
        if isinstance(reply, m.ErrorReply):
            raise refusal(reply.code, reply.message)
        return reply

    def _accepted(self, handle: TaskState) -> None:
        """After a Submit's answer: raise (and forget the task) if the daemon refused it."""
        if handle._error is not None and handle._result is None:
            self._tasks.pop(handle.id, None)
            raise handle._error

    @staticmethod
    def _task_body(body: dict[str, Any]) -> dict[str, Any]:
        if body.get("result") is not None:
            body["result"] = Result.from_wire(body["result"])
        return body

    def _no_answer(self, what: str) -> DaemonUnavailable:
        return DaemonUnavailable(f"para daemon not answering at {self.path} (waited {self.timeout:g}s for {what})", self.path)

    def _silent(self) -> DaemonUnavailable:
        return DaemonUnavailable(
            f"para daemon not answering at {self.path} (silent for {self._silence.quiet_for():.1f}s)", self.path)

    def _receive(self, frame: bytes) -> None:
        """Route every message of one frame from the daemon."""
        self._silence.reset()
        for part in codec.split(frame):
            self._dispatch(codec.decode(part, newer_ok=True))   # a newer parad's appended fields are left out

    def _dispatch(self, msg: Any) -> None:
        if isinstance(msg, m.Done):
            handle = self._tasks.get(msg.result.id)
            if handle is not None and not handle.done():
                result = Result.from_wire(msg.result)
                handle._settle(result, error_for(result))
        elif isinstance(msg, m.Chunk):
            handle = self._tasks.get(msg.task_id)
            if handle is not None:
                handle._put_chunk(Chunk(msg.stream, msg.data))
        elif isinstance(msg, m.InputAck):
            handle = self._tasks.get(msg.task_id)
            if handle is not None:
                handle._input_ack(msg)
        elif isinstance(msg, m.ErrorReply) and msg.task_id is not None and msg.task_id in self._tasks:
            handle = self._tasks[msg.task_id]
            if not handle.done():
                handle._settle(None, refusal(msg.code, msg.message))
        elif isinstance(msg, m.ErrorReply) and msg.task_id is None and msg.req and msg.req not in self._replies:
            self._submit_refused(msg)
        elif isinstance(msg, m.Welcome) or (isinstance(msg, m.ErrorReply) and msg.req == 0 and m.Welcome in self._replies):
            self._resolve(m.Welcome, msg)  # an ErrorReply with no request number answers the Hello
        elif isinstance(msg, (m.Accepted, m.Reply, m.ErrorReply)):
            self._resolve(msg.req, msg)
        elif isinstance(msg, m.Pong) and restarted(self.daemon, msg.boot) and not self._nested:
            self._restart_seen = True   # the socket reconnected to a new parad by itself; it knows us not
        # Any message resets the silence clock.

    def _submit_refused(self, reply: m.ErrorReply) -> None:
        """An ErrorReply no request waits for: a Submit sent without an ack (run(), map()) refused whole,
        as a frame parad could not read. Each of its tasks fails with the refusal, instead of waiting for
        an end that cannot come. (Rare: a look at every task in flight is cheaper than an index.)"""
        error = refusal(reply.code, reply.message)
        for handle in [h for h in self._tasks.values() if h.submit_req == reply.req and not h.done()]:
            handle._settle(None, error)

    def _resolve(self, key: Any, msg: Any) -> None:
        slot = self._replies.get(key)
        if slot is not None and not slot.done():
            slot.set_result(msg)
