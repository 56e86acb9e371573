"""paractl's commands on results by id: `result ID` (wait for it), `task ID` (its state now), `gc` (prune).

`add_parsers` adds their command lines to paractl's; COMMANDS in paractl.py maps them here.
"""

from __future__ import annotations

import argparse

from para.client import paractl_format as fmt
from para.client.client import Client
from para.client.errors import TaskError
from para.client.paractl_output import Globals, UsageError, emit, show_result


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The command lines of result, task and gc."""
    sub.add_parser("result", help="wait for a task by id, whoever submitted it; print its output, exit with its code").add_argument("id")
    sub.add_parser("task", help="one task's state now, and its result once finished").add_argument("id")
    gc = sub.add_parser("gc", help="drop finished tasks from the journal now (retention also runs by itself)")
    gc.add_argument("--older-than", type=float, metavar="SECONDS", help="those finished more than SECONDS ago "
                    "(default: only those past the retention limits)")


def cmd_result(client: Client, g: Globals, args: argparse.Namespace) -> int:
    try:
        result = client.result(args.id)
    except TaskError as exc:   # it ended badly: still a result to show, as `paractl run` shows one
        if exc.result is None:
            raise
        result = exc.result
    return show_result(g, result)


def cmd_task(client: Client, g: Globals, args: argparse.Namespace) -> int:
    body = client.task(args.id)
    emit(fmt.to_json(body) if g.json else fmt.task(body))
    return 0


def cmd_gc(client: Client, g: Globals, args: argparse.Namespace) -> int:
    if args.older_than is not None and args.older_than < 0:
        raise UsageError("gc: --older-than wants seconds >= 0")
    body = client.prune(args.older_than)
    if g.json:
        emit(fmt.to_json(body))
    else:
        emit(f"removed {body.get('tasks', 0)} finished tasks ({fmt.size(body.get('bytes', 0))}) "
             f"and {body.get('files', 0)} output files")
    return 0


COMMANDS = {"result": cmd_result, "task": cmd_task, "gc": cmd_gc}
