"""What a finished task gives back to a client."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from para.ipc import messages as m


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a streamed task's output."""
    stream: str      # "stdout" or "stderr"
    data: bytes


@dataclass(frozen=True, slots=True)
class Result:
    """The outcome of one task.

    `status` is one of succeeded, failed, timed_out, cancelled, lost. A command
    that exits non-zero is `failed` with its `exit_code`; `limit` names the
    limit that ended it, if one did. `value` is a structured answer (grep
    matches, file lines) for tools that give one. Output is capped per stream:
    `truncated` says whether the middle was dropped, `stdout_bytes` and
    `stderr_bytes` give the full sizes. `network_refused` lists the requests
    the egress proxy refused a command whose network is an allow-list (host,
    port, rule); None where there was no proxy.
    """
    id: str
    tool: str
    status: str
    exit_code: int | None = None
    signal: int | None = None
    stdout: str = ""
    stderr: str = ""
    truncated: bool = False
    value: Any = None
    duration: float = 0.0
    attempts: int = 1
    worker: str | None = None
    error: str | None = None
    error_code: str | None = None
    limit: str | None = None
    rusage: dict[str, float] = field(default_factory=dict)
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    network_refused: list[dict[str, Any]] | None = None

    @property
    def ok(self) -> bool:
        return self.status == m.SUCCEEDED

    @classmethod
    def from_wire(cls, r: m.TaskResult) -> "Result":
        # Positional, in TaskResult's field order (ours is the same; tests/test_ipc.py checks it):
        # a map() builds one per task, and keywords cost a third more.
        return cls(
            r.id, r.tool, r.status, r.exit_code, r.signal,
            r.stdout.decode("utf-8", "replace") if r.stdout else "",
            r.stderr.decode("utf-8", "replace") if r.stderr else "",
            r.truncated, r.value, r.duration, r.attempts, r.worker, r.error, r.error_code, r.limit,
            r.rusage, r.stdout_bytes, r.stderr_bytes, r.network_refused,
        )

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}
