"""Exceptions raised by the para client. Every one says what happened and what to do."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from para.client.result import Result


class ParaError(Exception):
    """Base class of every para client error."""


class DaemonUnavailable(ParaError):
    """No daemon answers at the socket path (not running, hung, or gone)."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


class InvalidRequest(ParaError):
    """The daemon refused a request: unknown tool, wrong argument, malformed frame, too large."""

    def __init__(self, message: str, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.code = code


class QueueFull(ParaError):
    """The pool's queue is at its bound; nothing was accepted. Retry later."""


class PoolUnavailable(ParaError):
    """The pool's workers keep crashing (circuit open) or the daemon is shutting down."""


class TaskError(ParaError):
    """A task ended without a usable answer; `result` holds what is known."""

    def __init__(self, message: str, result: Result | None = None) -> None:
        super().__init__(message)
        self.result = result


class ToolError(TaskError):
    """The tool reported an error (missing file, bad regex) or its worker died holding the task."""


class TaskTimeout(TaskError):
    """The task ran out of time, or the wait for it did (then `result` is None)."""
