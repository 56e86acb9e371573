"""Exceptions raised by the para client. Every one says what happened and what to do."""

from __future__ import annotations

from typing import TYPE_CHECKING

from para.ipc import messages as m

if TYPE_CHECKING:
    from para.client.result import Result


class ParaError(Exception):
    """Base class of every para client error. `code` names the kind for programs (`paractl --json`
    prints it): the daemon's error code for a refusal, else one of the codes below."""

    code = "error"


class DaemonUnavailable(ParaError):
    """No daemon answers at the socket path (not running, hung, or gone)."""

    code = "daemon_unavailable"

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


class InvalidRequest(ParaError):
    """The daemon refused a request: unknown tool, wrong argument, malformed frame, too large."""

    def __init__(self, message: str, code: str = m.E_INVALID) -> None:
        super().__init__(message)
        self.code = code


class NotFound(InvalidRequest):
    """parad knows no such task (or batch): never submitted, or its result is past the retention."""


class QueueFull(ParaError):
    """The pool's queue is at its bound; nothing was accepted. Retry later."""

    code = m.E_QUEUE_FULL


class PoolUnavailable(ParaError):
    """No worker will run the task now: the pool's workers keep crashing (circuit open),
    an operator drained it (`paractl scale POOL auto` hands it back), or the daemon is shutting down
    (`code` says which: pool_failed, pool_drained, shutting_down)."""

    def __init__(self, message: str, code: str = m.E_POOL_FAILED) -> None:
        super().__init__(message)
        self.code = code


class TaskError(ParaError):
    """A task ended without a usable answer; `result` holds what is known."""

    code = "task_failed"

    def __init__(self, message: str, result: Result | None = None) -> None:
        super().__init__(message)
        self.result = result


class ToolError(TaskError):
    """The tool reported an error (missing file, bad regex) or its worker died holding the task."""

    code = m.E_TOOL


class TaskTimeout(TaskError):
    """The task ran out of time, or the wait for it did (then `result` is None)."""

    code = m.TIMED_OUT


def refusal(code: str, message: str) -> ParaError:
    """The exception for a daemon's ErrorReply with `code`."""
    if code == m.E_QUEUE_FULL:
        return QueueFull(message)
    if code == m.E_NOT_FOUND:
        return NotFound(message, code)
    if code in (m.E_POOL_FAILED, m.E_POOL_DRAINED, m.E_SHUTTING_DOWN):
        return PoolUnavailable(message, code)
    return InvalidRequest(message, code)


def error_for(result: Result) -> TaskError | None:
    """The exception `result()` raises for a finished task, or None when it returns the Result."""
    if result.status == m.TIMED_OUT:
        return TaskTimeout(result.error or f"task {result.id} timed out", result)
    if result.status == m.LOST or result.error_code in (m.E_TOOL, m.E_POISON):
        return ToolError(result.error or f"task {result.id} failed", result)
    return None
