"""The trust boundary for client requests: is this task well formed, and runnable here?

A task that fails here is refused with an ErrorReply that names what was wrong
and what to do; nothing about it reaches a queue.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from para.daemon.envelope_check import any_args_ok, envelope_ok, takes_any_args
from para.daemon.pool import FAILED, Pool
from para.daemon.tools.base import Tool, ToolFailure
from para.daemon.workspaces import WorkspaceError, WorkspacePolicy
from para.ipc.workspace import within
from para.ipc import messages as m
from para.sandbox.identity import IdentityError

ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"


class TaskEnvelope(BaseModel):
    """The task fields every tool shares (its args are checked by the tool's model)."""
    model_config = ConfigDict(strict=True)
    id: str = Field(pattern=ID_PATTERN)
    tool: str = Field(min_length=1, max_length=64)
    args: dict
    timeout: float | int | None = Field(None, gt=0)
    priority: int = Field(2, ge=0, le=4)
    session: str | None = Field(None, max_length=256)
    retries: int | None = Field(None, ge=0, le=100)
    stream: bool = False
    retry_on: list[Literal["lost", "failed", "timed_out"]] | None = None
    retry_backoff: float | int | None = Field(None, ge=0, le=3600)
    idempotency_key: str | None = Field(None, min_length=1, max_length=256)
    workspace: str | None = Field(None, min_length=1, max_length=4096)


class Refusal(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _describe(exc: ValidationError, prefix: str) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        got = "" if err["type"] in ("missing", "extra_forbidden") else f" (got {err['input']!r:.80})"
        parts.append(f"{prefix}{where}: {err['msg']}{got}")
    return "; ".join(parts)


def admit(spec: m.TaskSpec, pools: dict[str, Pool], workspaces: WorkspacePolicy, adding: int = 1,
          accepted: bool = False, size: int = 0, inherited: str | None = None) -> Pool:
    """Check one task; return its pool or raise Refusal with a clear message.

    `accepted`: the task was taken before (a batch task whose dependencies just
    finished), so a drain since then does not refuse it: it waits, like queued work,
    and its bytes are in the queue's count already. `size`: the bytes it adds to the queue.
    `workspaces` says which folders may be its workspace; `inherited` is its parent's (nested tasks).
    """
    if not isinstance(spec, m.TaskSpec):
        raise Refusal(m.E_INVALID, "Submit.tasks must hold TaskSpec messages")
    if not envelope_ok(spec):   # pydantic only when the quick check is unsure: it names what is wrong
        try:
            TaskEnvelope.model_validate(spec, from_attributes=True)
        except ValidationError as exc:
            raise Refusal(m.E_INVALID, _describe(exc, "task ")) from None
    if spec.retries and spec.args.get("stdin_stream") is True:
        raise Refusal(m.E_INVALID, f"{spec.tool}: a task whose stdin is streamed cannot be retried (its input is "
                                   f"consumed by the first attempt); drop retries or stdin_stream")
    pool = pool_for(spec, pools)
    place(spec, pool, workspaces, inherited)
    _check_args(spec, pool)
    if pool.state == FAILED:
        raise Refusal(m.E_POOL_FAILED, pool.failure_message())
    if not accepted:
        refuse_if_drained(pool)
    if pool.queue.full(adding):
        raise Refusal(
            m.E_QUEUE_FULL,
            f"queue full: pool {pool.name!r} holds {pool.queue.depth} queued tasks (max_queue "
            f"{pool.queue.max_depth}); wait for results and submit again",
        )
    if not accepted:
        refuse_if_full_bytes(pool, size)
    return pool


def _check_args(spec: m.TaskSpec, pool: Pool) -> None:
    """The tool's argument model, the tool's own admission (its options may forbid more), max_timeout."""
    if not (_any_args(pool) and any_args_ok(spec.args)):
        try:
            args = pool.tool.parse_args(spec.args)   # as the worker will: a tool may know a cheaper way (bash)
        except ValidationError as exc:
            raise Refusal(m.E_INVALID, _describe(exc, f"{spec.tool} argument ")) from None
        try:
            pool.checker.admit(args, pool.options_model, spec.timeout)
        except ToolFailure as exc:
            raise Refusal(m.E_INVALID, f"{spec.tool}: {exc}") from None
    max_timeout = pool.config.max_timeout
    if spec.timeout is not None and max_timeout is not None and spec.timeout > max_timeout:
        raise Refusal(m.E_INVALID, f"timeout {spec.timeout:g}s exceeds the max_timeout of pool {pool.name!r} ({max_timeout:g}s)")


# Per (Args model, tool class): whether its arguments need no model built (envelope_check.takes_any_args).
_ANY_ARGS: dict[tuple[type, type], bool] = {}


def _any_args(pool: Pool) -> bool:
    key = (pool.tool.Args, type(pool.checker))
    known = _ANY_ARGS.get(key)
    if known is None:
        known = _ANY_ARGS[key] = takes_any_args(pool.tool.Args, type(pool.checker).admit, Tool.admit)
    return known


def pool_for(spec: m.TaskSpec, pools: dict[str, Pool]) -> Pool:
    pool = pools.get(spec.tool)
    if pool is None:
        raise Refusal(m.E_UNKNOWN_TOOL, f"unknown tool {spec.tool!r}; this daemon runs: {', '.join(sorted(pools))}")
    return pool


def place(spec: m.TaskSpec, pool: Pool, workspaces: WorkspacePolicy, inherited: str | None = None) -> None:
    """Settle the task's workspace: checked, resolved, for a pool that runs commands (else none);
    one that names none gets its parent's (`inherited`, nested tasks), else the pool's default
    (parad's working directory). A nested task may name only its parent's workspace or a folder in it:
    a command must not widen what it may write by asking for a child elsewhere.

    A read-only tool's task keeps one only to say whose permissions it reads with (parad is
    root, run_as 'owner'); a folder that may not be a workspace gives it the default's. The
    workspace's identity must be one the pool's policy allows (identities.py)."""
    reads_by_owner = pool.reads_as_owner
    if not pool.uses_workspace and not reads_by_owner:
        spec.workspace = None
        return
    if spec.workspace is None:
        spec.workspace = inherited or pool.default_workspace
    elif not (spec.workspace == pool.default_workspace and inherited is None):   # else the operator's choice
        try:
            spec.workspace = workspaces.check(spec.workspace)
        except WorkspaceError as exc:
            if not reads_by_owner:
                raise Refusal(m.E_INVALID, str(exc)) from None
            spec.workspace = inherited or pool.default_workspace
        if inherited is not None and pool.uses_workspace and not within(spec.workspace, inherited):
            raise Refusal(m.E_INVALID, f"workspace {spec.workspace!r} is outside the parent task's ({inherited!r}); "
                                       f"a nested task works in its parent's workspace or a folder in it")
    if pool.identity is not None:
        _check_identity(spec, pool, inherited)


def _check_identity(spec: m.TaskSpec, pool: Pool, inherited: str | None) -> None:
    """The workspace's owner is an identity the pool's policy allows; a nested task's is its parent's."""
    try:
        ids = pool.identity.ids(spec.workspace)
        # A command may submit children (nested tasks): naming another user's workspace
        # must not make them run as that user.
        if inherited is not None and spec.workspace != inherited and ids != pool.identity.ids(inherited):
            raise IdentityError(f"a nested task runs as its parent does, and workspace {spec.workspace!r} "
                                f"belongs to another user than {inherited!r}; send it to a workspace of the same owner")
    except IdentityError as exc:
        raise Refusal(m.E_INVALID, f"{spec.tool}: {exc}") from None


def refuse_if_full_bytes(pool: Pool, size: int) -> None:
    """Queued tasks are bounded by bytes too: their arguments are parad's memory until they run."""
    if pool.queue.too_big(size):
        raise Refusal(
            m.E_QUEUE_FULL,
            f"queue full: pool {pool.name!r} holds {pool.queue.bytes_held / 2**20:.1f} MiB of queued tasks (max_queue_bytes "
            f"{pool.queue.max_bytes / 2**20:.1f} MiB); wait for results and submit again, or put large inputs in a "
            f"file and pass its path",
        )


def refuse_if_drained(pool: Pool) -> None:
    """A pool pinned to 0 workers has none coming: a new task would wait in silence until
    an operator scales it, so it is refused at once, naming the command that ends the drain."""
    if pool.pinned == 0:
        raise Refusal(
            m.E_POOL_DRAINED,
            f"pool {pool.name!r} is drained (pinned to 0 workers), so nothing would run this task; "
            f"`paractl scale {pool.name} auto` (or `paractl scale {pool.name} N`) brings its workers back",
        )
