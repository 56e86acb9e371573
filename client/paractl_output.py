"""How paractl reports: exit codes, messages, and a task's result as a shell would.

Shared by paractl's commands (paractl.py) and its tool commands (paractl_tools.py).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from para.client import paractl_format as fmt
from para.client.client import Client, TaskFuture
from para.client.errors import DaemonUnavailable, InvalidRequest, ParaError, PoolUnavailable, QueueFull, TaskError, TaskTimeout
from para.client.result import Result
from para.ipc import messages as m

EX_TOOL, EX_USAGE, EX_UNAVAILABLE, EX_TEMPFAIL = 1, 2, 69, 75
EX_TIMEOUT, EX_INTERRUPTED = 124, 130


class UsageError(Exception):
    """A command line that cannot be run; exit 2. `usage` is the command's synopsis, shown to people."""

    code = "usage"

    def __init__(self, message: str, usage: str = "") -> None:
        super().__init__(message)
        self.usage = usage


@dataclass
class Globals:
    json: bool = False
    runtime_dir: str | None = None
    autostart: bool = True
    timeout: float = 10.0
    version: bool = False


def wait(future: TaskFuture) -> Result:
    """The task's result, also when it ended badly (the client raises those)."""
    try:
        return future.result()
    except TaskError as exc:
        if exc.result is None:
            raise
        return exc.result


def command_exit(result: Result) -> int:
    """A command's exit status as a shell reports it."""
    if result.status == m.TIMED_OUT:
        return EX_TIMEOUT
    if result.signal:
        return 128 + result.signal
    if result.exit_code is not None:
        return result.exit_code
    return 0 if result.ok else EX_TOOL


def command_notes(result: Result, streamed: bool = False) -> list[str]:
    """Why a command ended other than by itself, and whether output was dropped (never from `streamed` output)."""
    notes = []
    if result.limit:
        notes.append(f"{result.limit} limit ended the command after {fmt.duration(result.duration)}")
    elif result.status in (m.CANCELLED, m.LOST) or result.error_code:
        notes.append(result.error or f"task {result.status}")
    elif result.signal:
        notes.append(f"command killed by signal {result.signal}")
    if result.truncated and not streamed:
        notes.append(f"output truncated: the middle was dropped (full size: stdout {result.stdout_bytes} bytes, "
                     f"stderr {result.stderr_bytes} bytes)")
    return notes


def tool_exit(result: Result, failure: int = EX_TOOL) -> int:
    if result.status == m.TIMED_OUT:
        return EX_TIMEOUT
    return 0 if result.ok else failure


def exit_code(exc: ParaError) -> int:
    """The exit status that stands for a client error (see paractl --help)."""
    if isinstance(exc, DaemonUnavailable):
        return EX_UNAVAILABLE
    if isinstance(exc, (QueueFull, PoolUnavailable)):
        return EX_TEMPFAIL
    if isinstance(exc, InvalidRequest):
        return EX_USAGE
    if isinstance(exc, TaskTimeout):
        return EX_TIMEOUT
    return EX_TOOL


def fail(as_json: bool, code: str, message: str, status: int) -> int:
    """Report an error and return `status`: `paractl: MESSAGE` on stderr, or with --json one line
    {"error": {"code": CODE, "message": MESSAGE}} on stdout, so a script reads one stream."""
    if as_json:
        emit_line({"error": {"code": code, "message": message}})
    else:
        say(message)
    return status


def say(message: str) -> None:
    print(f"paractl: {message}", file=sys.stderr, flush=True)


def emit(text: str, flush: bool = False) -> None:
    if text:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if flush:
        sys.stdout.flush()


def emit_line(obj: Any) -> None:
    """`obj` as JSON on one line, flushed: one line of a --json stream (JSON Lines)."""
    emit(fmt.to_json_line(obj), flush=True)


def show_result(g: Globals, result: Result) -> int:
    """Print a finished task as `paractl run` does (a command's output as it wrote it, a tool's
    value as JSON, the whole Result with --json); the exit code that stands for it."""
    is_command = result.value is None and (result.exit_code is not None or result.signal is not None)
    code = command_exit(result) if is_command else tool_exit(result)
    if g.json:
        emit(fmt.to_json(result))
        return code
    if result.value is not None:
        emit(fmt.to_json(result.value))
    else:
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
    notes = command_notes(result) if is_command else [] if result.ok else [result.error or f"{result.tool} task {result.status}"]
    for note in notes:
        say(note)
    return code


def run_tool(client: Client, g: Globals, tool: str, args: dict[str, Any]) -> Result:
    """Run a structured tool; print the whole result with --json, else only a failure's reason."""
    result = wait(client.submit(tool, **args))
    if g.json:
        emit(fmt.to_json(result))
    elif not result.ok:
        say(result.error or f"{tool} task {result.status}")
    return result
