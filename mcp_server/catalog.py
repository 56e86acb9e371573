"""The tools para-mcp offers: one per pool parad runs, and the MCP-only ones.

A pool's tool keeps the JSON Schema parad generates from the tool's own
argument model (`AsyncClient.tools()`), so what an agent is told is what
admission checks, with three changes for MCP: `$ref`s are inlined (some
clients do not follow them), fields an agent cannot use over MCP are dropped
(its environment is the server's; a call has no stdin stream to feed), and
path arguments may be relative to the directory the server was started in.
A pool of the bash tool also takes `timeout` and `wait` (see server.py).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

import mcp.types as types

from para.client.tool_defs import inline_refs

WAIT_DEFAULT = 15.0   # well under the 60 s after which many MCP clients give up on a call
WAIT_MAX = 50.0
NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")   # MCP's tool names (SEP-986)
TASK_ID = {"type": "string", "minLength": 1, "description": "a task id, as a call that started it returned"}

# Fields an agent must not set, or cannot use, over MCP: the server sends its own environment
# (as paractl does), and a tools/call has no stream to feed a command's stdin from.
HIDDEN = {"bash": ("caller_env", "stdin_stream")}
# The path argument of each built-in tool, resolved against the server's directory when relative;
# for grep and glob that directory is also the default (the pool's own default is the home).
PATHS = {"bash": "cwd", "read": "path", "grep": "path", "glob": "root"}
DEFAULTS_TO_CWD = ("grep", "glob")
HERE = "the directory para-mcp was started in"
PATH_DESCRIPTIONS = {
    "bash": f"working directory: absolute, or relative to {HERE} (the default)",
    "read": f"the file: absolute (~ allowed), or relative to {HERE}",
    "grep": f"file or directory searched: absolute, or relative to {HERE} (the default)",
    "glob": f"directory searched: absolute, or relative to {HERE} (the default)",
}
COMMAND_ARGS = {
    "timeout": {"type": "number", "exclusiveMinimum": 0,
                "description": "seconds after which the command's whole process tree is killed (default: the pool's limit)"},
    "wait": {"type": "number", "minimum": 0, "maximum": WAIT_MAX, "default": WAIT_DEFAULT,
             "description": f"seconds to wait for the command to end (at most {WAIT_MAX:g}); a command still running "
                            "then returns its task_id and output so far: follow it with task_output"},
}
HANDLE_NOTE = (" A command still running after `wait` seconds returns a task_id and its output so far instead of "
               "blocking: follow it with task_output, stop it with task_cancel; it runs on whatever the client's timeout.")


@dataclass(frozen=True)
class Entry:
    """One of parad's pools as an MCP tool."""
    name: str            # the pool's name, which is the MCP tool's
    tool: str            # the para tool the pool runs
    read_only: bool
    schema: dict[str, Any]   # the input schema published, which calls are checked against
    description: str

    @property
    def runs_commands(self) -> bool:
        """Takes `timeout` and `wait`, and streams its output as it comes."""
        return self.tool == "bash"

    def definition(self) -> types.Tool:
        return types.Tool(name=self.name, description=self.description, input_schema=self.schema,
                          annotations=types.ToolAnnotations(title=self.name, read_only_hint=self.read_only))


class Catalog:
    """parad's pools (from `AsyncClient.tools()`) and the MCP-only tools, by name."""

    def __init__(self, described: list[dict[str, Any]]) -> None:
        self.pools: dict[str, Entry] = {}
        self.skipped: list[str] = []   # why a pool is not offered, one line each
        for pool in described:
            name = pool["name"]
            if not NAME.match(name):
                self.skipped.append(f"pool {name!r}: not a valid MCP tool name (letters, digits, _ . - only)")
            elif name in MCP_TOOLS:
                self.skipped.append(f"pool {name!r}: its name is taken by para-mcp's own {name} tool")
            else:
                self.pools[name] = entry(pool)

    def tools(self) -> list[types.Tool]:
        """Every tool offered: the pools in name order, then the MCP-only ones."""
        return [e.definition() for e in self.pools.values()] + list(MCP_TOOLS.values())

    def schema(self, name: str) -> dict[str, Any] | None:
        """The input schema of tool `name`; None if no such tool is offered."""
        if name in self.pools:
            return self.pools[name].schema
        return MCP_TOOLS[name].input_schema if name in MCP_TOOLS else None


def entry(pool: dict[str, Any]) -> Entry:
    """A pool as described by parad (daemon/tool_catalog.py) as an MCP tool."""
    tool = pool["tool"]
    schema = inline_refs(copy.deepcopy(pool["input_schema"]))
    props = schema.setdefault("properties", {})
    for name in HIDDEN.get(tool, ()):
        props.pop(name, None)
    if tool in PATH_DESCRIPTIONS and PATHS[tool] in props:
        props[PATHS[tool]]["description"] = PATH_DESCRIPTIONS[tool]
    description = pool.get("description") or f"para's {tool} tool"
    if tool == "bash":
        if "stdin" in props:   # text only: JSON has no bytes
            props["stdin"] = {"type": "string", "description": "text fed to the command's standard input"}
        props.update(copy.deepcopy(COMMAND_ARGS))
        description += HANDLE_NOTE
    if pool["name"] != tool:
        description = f"(pool {pool['name']} of para's {tool} tool) {description}"
    return Entry(pool["name"], tool, bool(pool.get("read_only")), schema, description)


def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


_WAIT_FOR_MORE = {"type": "number", "minimum": 0, "maximum": WAIT_MAX, "default": 0,
                  "description": f"seconds to wait (at most {WAIT_MAX:g}) for output past `offset` or for the task to end"}
_BATCH_TASK = _object({
    "id": {"type": "string", "minLength": 1,
           "description": "the task's name within the batch, used by `after` and by ${NAME.stdout} references"},
    "tool": {"type": "string", "description": "the tool (pool) that runs it, e.g. bash, grep, read, glob"},
    "args": {"type": "object", "description": "the tool's arguments, as for a call of that tool (bash: no timeout/wait); "
                                              "strings may use ${NAME.stdout}, ${NAME.stderr}, ${NAME.exit_code}, "
                                              "${NAME.value.KEY} of a task named in `after`"},
    "after": {"type": "array", "items": {"type": "string", "description": "the id of a task of this batch"},
              "description": "tasks that must succeed before this one starts"},
    "timeout": {"type": "number", "exclusiveMinimum": 0, "description": "seconds before the task is ended"},
}, ("id", "tool"))

MCP_TOOLS: dict[str, types.Tool] = {t.name: t for t in (
    types.Tool(
        name="task_output",
        description="Output of a task this server started (a command that outlived its call's wait, or any other), "
                    "from byte `offset` on, and its state; waits up to `wait` seconds for more output or for the end. "
                    "Call again with the returned `offset` until `state` is no longer running and `more` is false; "
                    "a finished task also gives its exit code and the limit that ended it.",
        input_schema=_object({"task_id": TASK_ID,
                              "offset": {"type": "integer", "minimum": 0, "default": 0,
                                         "description": "byte offset in the task's output to read from (0: the start)"},
                              "wait": _WAIT_FOR_MORE}, ("task_id",)),
        annotations=types.ToolAnnotations(title="task_output", read_only_hint=True)),
    types.Tool(
        name="task_cancel",
        description="Cancel a running task: its command's whole process tree is killed. Answers with its final state.",
        input_schema=_object({"task_id": TASK_ID}, ("task_id",)),
        annotations=types.ToolAnnotations(title="task_cancel", read_only_hint=False, destructive_hint=True)),
    types.Tool(
        name="task_list",
        description="The tasks this server started and still holds: id, tool, state, command, start and end times.",
        input_schema=_object({}),
        annotations=types.ToolAnnotations(title="task_list", read_only_hint=True)),
    types.Tool(
        name="batch",
        description="Run many tool calls in one request, in parallel, with optional dependencies (`after`): a task "
                    "starts once the tasks it names have succeeded and may use their output. Returns every task's "
                    "result by id; if some still run after `wait` seconds, their task_ids (follow with task_output).",
        input_schema=_object({
            "tasks": {"type": "array", "minItems": 1, "items": _BATCH_TASK, "description": "the tool calls to run"},
            "on_failure": {"type": "string", "enum": ["fail_fast", "continue"], "default": "fail_fast",
                           "description": "fail_fast: a failure skips every task not started yet; continue: only "
                                          "the tasks that depend on the failed one"},
            "wait": {**COMMAND_ARGS["wait"], "description": f"seconds to wait for every task to end (at most "
                     f"{WAIT_MAX:g}); tasks still running then are given by task_id: follow them with task_output"},
        }, ("tasks",)),
        annotations=types.ToolAnnotations(title="batch", read_only_hint=False)),
)}
