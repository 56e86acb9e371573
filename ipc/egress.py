"""The first line a worker's relay sends on each connection to the egress proxy.

A JSON object on one line, before the command's own bytes: `{"task": ID,
"allow": [...]}` opens a connection for that task's command, under that
allow-list (the proxy applies it only as a narrowing of its pool's);
`{"report": ID}` asks for the requests the proxy refused that task, and
forgets them: the answer is one JSON line, a list of `{"host", "port",
"rule"}`. Only workers reach the proxy's sockets (they live in parad's
runtime directory, which commands cannot see), so the line is the worker's,
never a command's: a command's bytes follow it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# A report holds at most MAX_REFUSALS entries, their host and rule cut to MAX_HOST and MAX_RULE
# characters: JSON-escaped (6 bytes a character at worst) that is under MAX_REPORT, the limit the
# relay reads it with. Uncut, a command's 60 kB host names made it overflow, and lose every entry.
MAX_REFUSALS = 100
MAX_HOST = 256
MAX_RULE = 1024
MAX_REPORT = 1 << 20


@dataclass(frozen=True, slots=True)
class Opening:
    """What a relay connection says it is: a task's command connecting, or a report asked for."""
    task: str
    allow: list[str] | None = None
    report: bool = False


def connect_line(task_id: str, allow: list[str]) -> bytes:
    return json.dumps({"task": task_id, "allow": allow}).encode() + b"\n"


def report_line(task_id: str) -> bytes:
    return json.dumps({"report": task_id}).encode() + b"\n"


def parse_line(line: bytes) -> Opening:
    """The opening line's meaning; ValueError if it is not one."""
    try:
        obj: Any = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("the relay's opening line is not JSON") from None
    if isinstance(obj, dict) and isinstance(obj.get("report"), str):
        return Opening(obj["report"], report=True)
    if (isinstance(obj, dict) and isinstance(obj.get("task"), str) and isinstance(obj.get("allow"), list)
            and all(isinstance(p, str) for p in obj["allow"])):
        return Opening(obj["task"], obj["allow"])
    raise ValueError("the relay's opening line names no task")
