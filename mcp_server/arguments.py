"""A call's arguments: checked against the schema its tool was published with, then made a para task.

The check names the field and what is wrong with it, as a tool error the agent
can act on. parad checks a task's arguments again at admission (the schema is
generated from the same model), so nothing here is the trust boundary.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from para.mcp_server.catalog import DEFAULTS_TO_CWD, HIDDEN, PATHS, WAIT_DEFAULT, Catalog, Entry

MAX_ERRORS = 3   # an agent fixes the first ones first


class ArgumentError(ValueError):
    """A call's arguments do not fit its tool's schema, or name what does not exist."""


@dataclass
class Call:
    """A pool's call as a para task: the tool's arguments, task options, and how long to wait."""
    args: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    wait: float = WAIT_DEFAULT
    view: dict[str, Any] = field(default_factory=dict)   # how its answer is shown (results.py)


def check(tool: str, schema: dict[str, Any], arguments: dict[str, Any]) -> None:
    """ArgumentError naming each field of `arguments` that `schema` refuses."""
    errors = sorted(Draft202012Validator(schema).iter_errors(arguments), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ArgumentError("; ".join(_describe(tool, e, schema) for e in errors[:MAX_ERRORS]))


def _describe(tool: str, error: ValidationError, schema: dict[str, Any]) -> str:
    error, message = _reason(error)
    where = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "additionalProperties" and not where:
        known = schema.get("properties", {})
        extra = sorted(set(error.instance) - set(known))
        return f"{tool}: unknown argument {', '.join(extra)}; it takes {', '.join(known) or 'no arguments'}"
    if error.validator == "required":
        return f"{tool}: {message}" + (f" in {where}" if where else "")
    return f"{tool}: argument {where}: {message}" if where else f"{tool}: {message}"


def _reason(error: ValidationError) -> tuple[ValidationError, str]:
    """The error that says most, and its message. An optional field's schema is anyOf [its type, null]:
    the branch whose type the value has says what is wrong with it; if none has, the types wanted."""
    while error.context:
        fitting = [e for e in error.context if e.validator != "type"]
        if not fitting:
            wanted = [e.validator_value for e in error.context if e.validator_value != "null"] or ["null"]
            return error, f"{error.instance!r} is not of type {' or '.join(map(repr, wanted))}"
        error = max(fitting, key=lambda e: len(e.absolute_path))
    return error, error.message


def pool_call(entry: Entry, arguments: dict[str, Any], cwd: str) -> Call:
    """The para task for a call of a pool's tool (arguments already checked)."""
    call = Call(dict(arguments))
    if entry.runs_commands:
        call.wait = float(call.args.pop("wait", WAIT_DEFAULT))
        if "timeout" in call.args:
            call.options["timeout"] = call.args.pop("timeout")
    resolve_paths(entry.tool, call.args, cwd)
    call.view["tool"] = entry.tool   # a pool of another name shows its answer as its tool's
    if entry.tool == "grep":   # ripgrep names files relative to the directory searched, or the searched file's
        path = call.args["path"]
        call.view.update(root=path if os.path.isdir(path) else os.path.dirname(path), context=call.args.get("context", 0))
    return call


def resolve_paths(tool: str, args: dict[str, Any], cwd: str) -> None:
    """Make a built-in tool's path argument absolute against `cwd`, which is also grep's and glob's default.
    A path starting with `~` is left to the tool; one starting with `$` is a batch reference."""
    name = PATHS.get(tool)
    if name is None:
        return
    value = args.get(name)
    if value is None and tool in DEFAULTS_TO_CWD:
        args[name] = cwd
    elif isinstance(value, str) and value and not value.startswith(("/", "~", "$")):
        args[name] = os.path.normpath(os.path.join(cwd, value))


def batch_spec(catalog: Catalog, arguments: dict[str, Any], cwd: str) -> tuple[dict[str, Any], float]:
    """The batch spec for AsyncClient.batch (client/batch.py) and how long to wait for it."""
    tasks = []
    for n, task in enumerate(arguments["tasks"]):
        entry = catalog.pools.get(task["tool"])
        if entry is None:
            raise ArgumentError(f"batch: tasks[{n}] ({task['id']}): unknown tool {task['tool']!r}; "
                                f"the tools are {', '.join(catalog.pools)}")
        args = dict(task.get("args") or {})
        hidden = sorted(set(args) & set(HIDDEN.get(entry.tool, ())))
        if hidden:   # as for a call of the tool itself: a batch has no stdin stream to feed, its env is the server's
            raise ArgumentError(f"batch: tasks[{n}] ({task['id']}): unknown argument {', '.join(hidden)} of "
                                f"{task['tool']} over MCP; give the command's input as `stdin` text")
        resolve_paths(entry.tool, args, cwd)
        tasks.append({**task, "args": args})
    spec = {"tasks": tasks, "on_failure": arguments.get("on_failure", "fail_fast")}
    return spec, float(arguments.get("wait", WAIT_DEFAULT))
