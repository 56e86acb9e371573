"""paractl: the para daemon from the command line.

    paractl status | workers | ps | metrics | cancel ID... [--session S] | shutdown
    paractl tools [NAME...] [--format openai|anthropic]   (what each tool does, its arguments)
    paractl result ID | task ID | gc [--older-than S]   (results by id, whoever submitted them)
    paractl bash [--timeout S] [--cwd DIR] [--clean-env] [-n] -- make test   (or one shell string: -- 'a | b')
    paractl run TOOL key=value ...          (values are YAML scalars: 1, true, [a, b])
    paractl batch FILE.yaml                 (tasks with dependencies; '-' reads stdin)
    paractl scale TOOL N|auto | drain TOOL  (operators: pin or release a pool's size)
    paractl watch [progress results errors metrics] [--count N]
    paractl grep PATTERN [PATH] | glob PATTERN [ROOT] | read FILE
    paractl mcp [--http 127.0.0.1:PORT]     (an MCP server for AI agents: para-mcp, see para-mcp --help)

Global options (anywhere before `--`): --json, --runtime-dir DIR, --no-autostart,
--version, --timeout SECONDS (how long to wait for the daemon's answers; but
after `bash`, --timeout is the command's own time limit).

--json, for scripts: stdout is JSON only, stderr only logs. An answer is one JSON
value (a task's Result for bash, run, result, grep, glob, read; `tools --json`:
a list with JSON Schemas). Streams are JSON Lines, one object per line as it
comes: watch {"topic", "event"}; batch {"task", "done", "tasks", "result"} per
finished task, then {"batch": totals}. An error is one line
{"error": {"code", "message"}}, with the exit code it has without --json
(code: the daemon's, e.g. unknown_tool, not_found, queue_full; or usage,
daemon_unavailable, timed_out, interrupted).

Exit codes: what the command exited with (bash, run of a command tool); 124 when
a task timed out, 128+N when a signal N killed it; 1 a tool error (grep: 1 no
match, 2 an error); 2 usage or a refused request; 69 no daemon answers
(EX_UNAVAILABLE); 75 queue full or pool unavailable (EX_TEMPFAIL); 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, NoReturn

from para.client import paractl_format as fmt
from para.client import paractl_catalog, paractl_results, paractl_tools
from para.client.client import Client
from para.client.errors import ParaError
from para.client.paractl_batch import cmd_batch
from para.client.paractl_output import (
    EX_INTERRUPTED, EX_TOOL, EX_USAGE, Globals, UsageError, emit, emit_line, exit_code, fail, show_result, wait,
)
from para.client.paractl_tools import cmd_bash, cmd_glob, cmd_grep, cmd_read
from para.client.watch import TOPICS, watch
from para.ipc.options import options_except

# Task options `paractl run` takes as key=value; any other key is the tool's argument. Not these:
# run prints a result when it ends (no stream), and retries are asked for by count alone.
RUN_OPTIONS = options_except("stream", "retry_on", "retry_backoff", "idempotency_key")
NO_AUTOSTART = ("shutdown", "cancel", "task", "result", "gc", "scale", "drain")  # starting a daemon to ask these is pointless


# ---- command line ---------------------------------------------------------------

def split_globals(argv: list[str]) -> tuple[Globals, list[str], list[str] | None]:
    """Take the global options out of argv: (globals, the rest before `--`, the words after `--`)."""
    g, rest, i, command = Globals(), [], 0, None
    while i < len(argv):
        arg = argv[i]
        name, eq, inline = arg.partition("=")
        if arg == "--":
            return g, rest, argv[i + 1:]
        if arg == "--json":
            g.json = True
        elif arg == "--no-autostart":
            g.autostart = False
        elif arg == "--version":
            g.version = True
        elif name == "--runtime-dir" or (name == "--timeout" and command != "bash"):
            value, i = (inline, i) if eq else (_value_of(argv, i), i + 1)
            if name == "--runtime-dir":
                g.runtime_dir = value
            else:
                g.timeout = _seconds(value)
        else:
            command = command or (None if arg.startswith("-") else arg)
            rest.append(arg)
        i += 1
    return g, rest, None


def _value_of(argv: list[str], i: int) -> str:
    if i + 1 >= len(argv) or argv[i + 1] == "--":
        raise UsageError(f"{argv[i]} needs a value")
    return argv[i + 1]


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--timeout wants seconds, not {text!r}") from None
    if not value > 0:   # NaN too
        raise UsageError("--timeout must be more than 0 seconds")
    return value


class Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing and exiting, so --json can report it as JSON.
    Subcommands' parsers are of this class too (argparse makes them of their parent's)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("paractl").strip()
        raise UsageError(f"{command}: {message}" if command else message, usage=self.format_usage())


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="paractl", description=__doc__.split("\n\n")[0],
               epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="JSON on stdout, errors included (see below)")
    p.add_argument("--runtime-dir", metavar="DIR", help="the daemon's runtime directory (default: $XDG_RUNTIME_DIR/para)")
    p.add_argument("--no-autostart", action="store_true", help="fail (exit 69) instead of starting a daemon")
    p.add_argument("--timeout", metavar="SECONDS", help="wait this long for the daemon's answers (default 10)")
    p.add_argument("--version", action="store_true", help="print paractl's version")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    sub.add_parser("status", help="the daemon, its pools and task counts")
    sub.add_parser("workers", help="every worker process")
    sub.add_parser("ps", help="live (queued and running) tasks")
    sub.add_parser("metrics", help="Prometheus metrics, text format")
    cancel = sub.add_parser("cancel", help="cancel tasks by id, or a whole session")
    cancel.add_argument("ids", nargs="*", metavar="ID")
    cancel.add_argument("--session", metavar="NAME", help="also every live task of this session")
    scale = sub.add_parser("scale", help="pin a pool's worker count: scale TOOL N, or scale TOOL auto")
    scale.add_argument("pool", metavar="TOOL")
    scale.add_argument("workers", metavar="N|auto")
    sub.add_parser("drain", help="stop a pool's workers once their tasks finish; queued tasks wait, new ones are refused").add_argument(
        "pool", metavar="TOOL")
    watch = sub.add_parser("watch", help="follow the event stream: watch [TOPIC...] (progress results errors metrics)")
    watch.add_argument("topics", nargs="*", metavar="TOPIC")
    watch.add_argument("--count", type=int, metavar="N", help="stop after N events")
    sub.add_parser("shutdown", help="stop the daemon")
    sub.add_parser("batch", help="run a batch of tasks with dependencies: batch FILE.yaml|FILE.json|-").add_argument(
        "file", metavar="FILE")
    run = sub.add_parser("run", help="run any tool: run TOOL key=value ...")
    run.add_argument("tool")
    run.add_argument("assignments", nargs="*", metavar="key=value")
    paractl_tools.add_parsers(sub)
    paractl_results.add_parsers(sub)
    paractl_catalog.add_parsers(sub)
    sub.add_parser("mcp", help="serve para's tools to AI agents over MCP (para-mcp; see paractl mcp --help)")
    return p


def parse_assignments(words: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """key=value words -> (tool args, task options); values are YAML scalars or [lists]."""
    args: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for word in words:
        key, eq, text = word.partition("=")
        if not eq or not key:
            raise UsageError(f"{word!r} is not key=value")
        (options if key in RUN_OPTIONS else args)[key] = parse_value(text)
    return args, options


def parse_value(text: str) -> Any:
    """YAML where it helps (1, 2.5, true, null, [a, b], {k: v}, 'quoted'); otherwise the text as typed,
    so `command=echo a: b # c` stays a string instead of becoming a mapping minus a comment."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    stripped = text.strip()
    if isinstance(value, str):
        return value if stripped[:1] in "'\"" and stripped[:1] == stripped[-1:] and len(stripped) > 1 else text
    if isinstance(value, (list, dict)) and not stripped.startswith(("[", "{")):
        return text
    return value if _plain(value) else text


def _plain(value: Any) -> bool:
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return value is None or isinstance(value, (bool, int, float, str))


# ---- commands -------------------------------------------------------------------

def cmd_query(client: Client, g: Globals, args: argparse.Namespace) -> int:
    body = getattr(client, args.cmd)()
    if args.cmd == "metrics" and not g.json:
        emit(body)
    elif g.json:
        emit(fmt.to_json(body))
    else:
        emit(getattr(fmt, args.cmd)(body))
    return 0


def cmd_cancel(client: Client, g: Globals, args: argparse.Namespace) -> int:
    if not args.ids and args.session is None:
        raise UsageError("cancel: name task ids, or --session NAME")
    body = client.cancel(*args.ids, session=args.session)
    cancelled, not_running = body.get("cancelled", []), body.get("not_running", [])
    if g.json:
        emit(fmt.to_json({"cancelled": cancelled, "not_running": not_running}))
    else:
        emit("\n".join([f"cancelled {t}" for t in cancelled] + [f"{t}: not running (finished or unknown)" for t in not_running]))
    return 0 if not not_running else EX_TOOL


def cmd_scale(client: Client, g: Globals, args: argparse.Namespace) -> int:
    if args.cmd == "drain":
        workers = 0
    elif args.workers == "auto":
        workers = None
    else:
        try:
            workers = int(args.workers)
        except ValueError:
            raise UsageError(f"scale: N is a number of workers or 'auto', not {args.workers!r}") from None
    body = client.scale(args.pool, workers)
    if g.json:
        emit(fmt.to_json(body))
    else:
        size = "automatic" if body.get("pinned") is None else f"pinned to {body['pinned']}"
        emit(f"pool {body['name']}: {size}; {body['ready']}/{body['workers']} workers ready, "
             f"{body['queued']} queued, {body['running']} running")
    return 0


def cmd_watch(client: Client, g: Globals, args: argparse.Namespace) -> int:
    try:
        events = watch(client.endpoints.runtime_dir, tuple(args.topics) or TOPICS)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    for seen, (topic, msg) in enumerate(events, 1):
        if g.json:
            emit_line({"topic": topic, "event": msg})
        else:
            emit(fmt.event(topic, msg), flush=True)
        if args.count and seen >= args.count:
            break
    return 0


def cmd_shutdown(client: Client, g: Globals, args: argparse.Namespace) -> int:
    body = client.shutdown()
    emit(fmt.to_json(body) if g.json else f"parad (pid {body.get('pid', '?')}) is stopping")
    return 0


def cmd_run(client: Client, g: Globals, args: argparse.Namespace) -> int:
    tool_args, options = parse_assignments(args.assignments)
    return show_result(g, wait(client.submit(args.tool, **tool_args, **options)))


COMMANDS = {"status": cmd_query, "workers": cmd_query, "ps": cmd_query, "metrics": cmd_query, **paractl_results.COMMANDS,
            **paractl_catalog.COMMANDS,
            "cancel": cmd_cancel, "shutdown": cmd_shutdown, "run": cmd_run, "bash": cmd_bash, "batch": cmd_batch,
            "scale": cmd_scale, "drain": cmd_scale, "watch": cmd_watch,
            "grep": cmd_grep, "glob": cmd_glob, "read": cmd_read}


# ---- main -----------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in (argv[:argv.index("--")] if "--" in argv else argv)
    try:
        return _main(argv)
    except UsageError as exc:
        if exc.usage and not as_json:
            sys.stderr.write(exc.usage)
        return fail(as_json, exc.code, str(exc), EX_USAGE)
    except KeyboardInterrupt:   # silent, as a shell's Ctrl-C is; a script reading --json gets a last line
        if as_json:
            emit_line({"error": {"code": "interrupted", "message": "interrupted"}})
        return EX_INTERRUPTED
    except BrokenPipeError:  # `paractl ... | head`: the reader left; stay quiet like cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13


def _main(argv: list[str]) -> int:
    g, before, after = split_globals(argv)
    if g.version:
        from importlib.metadata import version
        emit(fmt.to_json({"version": version("para")}) if g.json else f"paractl {version('para')}")
        return 0
    if _command(before) == "mcp":   # its options are para-mcp's
        return cmd_mcp(g, before[before.index("mcp") + 1:] + ([] if after is None else ["--", *after]))
    parser = build_parser()
    try:
        args = parser.parse_args(before if after is None or _command(before) == "bash" else before + ["--"] + after)
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EX_USAGE
    if args.cmd is None:
        raise UsageError("name a command, e.g. `paractl status`; see paractl --help", usage=parser.format_usage())
    if args.cmd == "bash":
        args.words = args.words + (after or [])
    try:
        with Client(g.runtime_dir, timeout=g.timeout, name="paractl",
                    autostart=g.autostart and args.cmd not in NO_AUTOSTART) as client:
            return COMMANDS[args.cmd](client, g, args)
    except ParaError as exc:
        return fail(g.json, exc.code, str(exc), exit_code(exc))


def cmd_mcp(g: Globals, argv: list[str]) -> int:
    """para-mcp, with paractl's --runtime-dir and --no-autostart: it makes its own client on its own event loop."""
    from para.mcp_server.main import main as mcp_main   # here: paractl's other commands do not load the MCP SDK

    forwarded = (["--runtime-dir", str(g.runtime_dir)] if g.runtime_dir else []) + ([] if g.autostart else ["--no-autostart"])
    return mcp_main(forwarded + argv, prog="paractl mcp")


def _command(before: list[str]) -> str | None:
    return next((a for a in before if not a.startswith("-")), None)


if __name__ == "__main__":
    sys.exit(main())
