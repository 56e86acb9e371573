"""A task's result, from what its tool answered and how its command ended."""

from __future__ import annotations

from para.daemon.tools.base import Finished
from para.ipc import messages as m
from para.sandbox.command import Outcome


def task_result(task: m.TaskSpec, answer: Finished | None, outcome: Outcome | None) -> m.TaskResult:
    """The TaskResult of `task`: the command's `outcome` (if it ran one) read through the tool's `answer`."""
    result = m.TaskResult(task.id, task.tool, m.SUCCEEDED)
    if outcome is not None:
        result.exit_code, result.signal = outcome.exit_code, outcome.signal
        result.stdout, result.stderr = outcome.stdout, outcome.stderr
        result.stdout_bytes, result.stderr_bytes = outcome.stdout_bytes, outcome.stderr_bytes
        result.truncated, result.duration = outcome.truncated, outcome.duration
        result.rusage, result.limit = outcome.rusage, outcome.limit
        if outcome.cancelled:
            result.status, result.error = m.CANCELLED, "cancelled while running"
        elif outcome.limit in ("timeout", "no_output"):
            result.status, result.error = m.TIMED_OUT, f"timed out after {outcome.limit_detail}; the command's process tree was killed"
        elif outcome.limit:
            result.status = m.FAILED
            result.error = f"the {outcome.limit} limit ({outcome.limit_detail}) ended the command; its process tree was killed"
        elif answer is not None:
            pass  # the tool read the outcome (rg exits 1 for "no match"): its answer decides
        elif outcome.signal:
            result.status, result.error = m.FAILED, f"killed by signal {outcome.signal}"
        elif outcome.exit_code:
            result.status = m.FAILED
    if answer is not None:
        # The tool turned the command's output into its answer: don't ship the raw output too.
        result.stdout = b""
        result.value = answer.value
        if answer.error is not None:
            result.status, result.error, result.error_code = m.FAILED, answer.error, m.E_TOOL
    return result


def interrupted(task: m.TaskSpec, timed_out: bool) -> m.TaskResult:
    """The result of an async tool's task whose coroutine was cancelled: at its timeout, or by a
    CancelTask. The same statuses, limit and wording as a command's (above)."""
    if timed_out:
        return m.TaskResult(task.id, task.tool, m.TIMED_OUT, limit="timeout",
                            error=f"timed out after {task.timeout:g}s; the tool's coroutine was cancelled")
    return m.TaskResult(task.id, task.tool, m.CANCELLED, error="cancelled while running")
