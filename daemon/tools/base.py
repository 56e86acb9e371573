"""The tool API: the interface every tool implements, built-in or plugin (README: Plugin tools).

A tool validates its arguments with a pydantic model (`Args`, checked by the
supervisor when a task is submitted and again in the worker), reads its pool's
options (`Options`, from parad.yaml) and, given both, either finishes at once
(`Finished`) or asks the worker to run a confined command (`RunCommand`) whose
outcome it may turn into a value. An I/O-bound tool (`is_async`) implements
`run_async` instead: its worker serves up to its credit of tasks at once as
coroutines on one event loop (daemon/async_worker.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from para.sandbox.command import CommandSpec, Outcome
from para.sandbox.limits import Limits


class StrictModel(BaseModel):
    """Arguments arrive over the wire: no silent coercion, no unknown keys."""
    model_config = ConfigDict(extra="forbid", strict=True)


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(slots=True)
class Finished:
    """The tool's answer. A non-None `error` makes the task fail with it."""
    value: Any = None
    error: str | None = None


@dataclass(slots=True)
class RunCommand:
    """Run `spec` in the sandbox; `finish` maps its outcome to an answer.

    Without `finish` the command's own exit status is the task's status (bash).
    """
    spec: CommandSpec
    finish: Callable[[Outcome], Finished] | None = None
    egress: tuple[str, list[str]] | None = None   # (proxy socket name, allow-list): reach the web through para's proxy


class Reports(Protocol):
    """Where a running tool's output and progress go (the worker's, see daemon/tool_reports.py)."""
    def output(self, data: bytes) -> Awaitable[None] | None: ...
    def progress(self, done: float, total: float | None, message: str) -> None: ...


@dataclass(slots=True)
class TaskContext:
    """The task a tool's `run` serves, and its way to report while it runs.

    `output` and `progress` may be called any number of times from `run`; each
    call also lets the worker send a heartbeat that is due, so a long tool that
    reports is not taken for hung. One that runs longer than
    daemon.failure_detection_timeout without reporting is killed as hung.
    """
    task_id: str
    worker: str
    timeout: float | None
    workspace: str | None = None   # the task's workspace, as admission resolved it
    reports: Reports | None = None

    def output(self, data: str | bytes) -> Awaitable[None]:
        """Stream `data` (str is sent as UTF-8) to the client of a task submitted with stream=True,
        as stdout chunks; for other tasks it is dropped (the answer is `Finished.value`).

        Flow control: a sync tool's call waits while the data channel to parad is full. An async
        tool's call never blocks its loop; what it returns, when awaited (`await ctx.output(x)`),
        waits while the task's output is paused (its client is not reading) or the data channel
        is full. A tool that does not await it is still bounded: past about 1 MiB held for a
        paused task, or a full channel's worth waiting, its output goes on as a sync tool's does.
        """
        waited = None
        if self.reports is not None:
            waited = self.reports.output(data.encode() if isinstance(data, str) else bytes(data))
        return waited if waited is not None else _NO_WAIT

    def progress(self, done: float, total: float | None = None, message: str = "") -> None:
        """Report progress as a `progress` task event (seen by `paractl watch progress`)."""
        if self.reports is not None:
            self.reports.progress(done, total, message)


class _NoWait:
    """An awaitable that is done at once: what `output` returns where there is nothing to wait for."""
    def __await__(self) -> Generator[Any, None, None]:
        return
        yield


_NO_WAIT = _NoWait()


class ToolFailure(Exception):
    """Raised by a tool for an expected failure; the message reaches the user as is."""


class Tool:
    name: ClassVar[str]
    # What the tool does, for whoever chooses tools (paractl tools, an agent through MCP): a sentence or two.
    description: ClassVar[str] = ""
    Args: ClassVar[type[BaseModel]]
    Options: ClassVar[type[BaseModel]] = NoOptions
    # Safe to run again after a worker died mid-task (no side effects).
    retry_safe: ClassVar[bool] = False
    # Changes nothing outside its answer: agents may run many of its calls at once (MCP's readOnlyHint).
    read_only: ClassVar[bool] = False
    # Tasks a worker of this tool may hold at once (credit window).
    default_credit: ClassVar[int] = 1
    # Runs commands of the user's, which may submit child tasks (nested tasks).
    runs_commands: ClassVar[bool] = False
    # Pool settings (min_workers, max_workers, default_timeout, ...) for a pool of this tool
    # where parad.yaml names none: a plugin's own sizing and limits.
    pool_defaults: ClassVar[dict[str, Any]] = {}
    # The identity parad gave this worker (WorkerSettings), set by the worker before any task:
    # the ids its commands run as (None: its own), why it has none, and whether it lives in namespaces.
    ids: tuple[int, int] | None = None
    identity_error: str | None = None
    confined: bool = False
    # Serves its tasks as coroutines on one asyncio event loop in the worker, up to its credit
    # at once (I/O-bound tools: fetch, search). Implements run_async instead of run.
    is_async: ClassVar[bool] = False

    @classmethod
    def parse_args(cls, args: dict[str, Any]) -> Any:
        """A task's arguments as parad's admission checks them (`admit`) and the worker hands them to
        `run`: `Args`, validated. A tool may
        take a shape it knows to be valid a cheaper way (bash does), never accept more."""
        return cls.Args.model_validate(args)

    def run(self, args: Any, options: Any, ctx: TaskContext) -> Finished | RunCommand:
        raise NotImplementedError

    async def run_async(self, args: Any, options: Any, ctx: TaskContext) -> Finished:
        """An async tool's task, as a coroutine beside the worker's other tasks (README: Plugin tools).

        Raise ToolFailure to fail it with a message. A CancelTask or the task's timeout cancels
        it (CancelledError at its current await; it ends `cancelled` or `timed_out`). It must not
        block the loop: a loop silent for daemon.failure_detection_timeout is killed as hung."""
        raise NotImplementedError

    async def open(self, options: Any) -> None:
        """Called once in the worker's event loop before its first task (HTTP sessions, caches)."""

    async def close(self) -> None:
        """Called once when the worker stops, after its last task."""

    def admit(self, args: Any, options: Any, timeout: float | None) -> None:
        """Refuse a task at submission (raise ToolFailure) that its pool's options do not allow."""

    def held_limits(self, options: Any) -> Limits | None:
        """Limits a worker of this tool holds itself, so its commands inherit them cheaply."""
        return None

    def reads_as(self, options: Any) -> tuple[int, int] | None:
        """(uid, gid) the worker itself opens files as (see sandbox/identity.py), if not its own."""
        return None

    def command_user(self, options: Any) -> tuple[int, int] | None:
        """(uid, gid) this tool's commands run as, if not the worker's own; None if unknown."""
        return None
