"""paractl's tool commands: bash (a drop-in for the command typed), grep, glob and read.

`add_parsers` adds their command lines to paractl's; COMMANDS in paractl.py maps them here.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from typing import Any

from para.client import paractl_format as fmt
from para.client.client import Client
from para.client.paractl_output import (
    EX_INTERRUPTED, EX_TOOL, Globals, UsageError, command_exit, command_notes, emit, fail, run_tool, say, tool_exit,
    wait,
)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The command lines of bash, grep, glob and read."""
    bash = sub.add_parser("bash", help="run a command as typed, streaming its output: bash -- CMD [ARG...], or bash -- 'SHELL STRING'")
    bash.add_argument("--timeout", type=float, metavar="S", help="the command's time limit (exit 124)")
    bash.add_argument("--cwd", metavar="DIR", help="working directory (default: the current one)")
    bash.add_argument("--clean-env", action="store_true",
                      help="the pool's environment instead of this one (which goes through the pool's filter)")
    bash.add_argument("-n", "--no-stdin", action="store_true",
                      help="do not forward stdin (the command reads /dev/null), as `ssh -n`")
    bash.add_argument("words", nargs="*", metavar="CMD",
                      help="several words: a program and its arguments, run as they are; one word: a shell string")
    grep = sub.add_parser("grep", help="search file contents: path:line:text")
    grep.add_argument("pattern")
    grep.add_argument("path", nargs="?")
    grep.add_argument("-i", "--ignore-case", action="store_const", dest="case", const="insensitive", default="sensitive")
    grep.add_argument("-S", "--smart-case", action="store_const", dest="case", const="smart")
    grep.add_argument("-F", "--fixed-strings", action="store_true")
    grep.add_argument("-C", "--context", type=int, default=0, metavar="N")
    grep.add_argument("--glob", action="append", default=[], metavar="G", help="include glob, !G to exclude; repeatable")
    grep.add_argument("--hidden", action="store_true", help="search hidden files too")
    grep.add_argument("--max-results", type=int, metavar="N")
    glob = sub.add_parser("glob", help="files matching a pattern, relative to ROOT")
    glob.add_argument("pattern")
    glob.add_argument("root", nargs="?")
    glob.add_argument("--hidden", action="store_true")
    glob.add_argument("--limit", type=int, metavar="N")
    read = sub.add_parser("read", help="lines of a text file")
    read.add_argument("file")
    read.add_argument("--offset", type=int, default=0, metavar="N", help="lines to skip")
    read.add_argument("--limit", type=int, metavar="N", help="lines to print at most")
    read.add_argument("-n", "--number", action="store_true", help="number the lines (cat -n)")

def bash_program(words: list[str]) -> dict[str, Any]:
    """The bash tool's arguments for the words after `--`: several are an argv, quoted
    exactly as given; one is a shell string, as typed at a prompt."""
    if not words or (len(words) == 1 and not words[0].strip()):
        raise UsageError("bash needs a command: paractl bash -- CMD [ARG...], or paractl bash -- 'SHELL STRING'")
    return {"command": words[0]} if len(words) == 1 else {"argv": list(words)}


def forwarded_stdin() -> int | None:
    """Descriptor 0 when `paractl bash` forwards it: open, not a terminal (typing goes to
    paractl, not to the command, as ssh without -t) and not /dev/null (nothing to send)."""
    try:
        st = os.fstat(0)
    except OSError:
        return None
    if os.isatty(0):
        return None
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == os.stat(os.devnull).st_rdev:
        return None
    return 0


def cmd_bash(client: Client, g: Globals, args: argparse.Namespace) -> int:
    task = bash_program(args.words)
    if args.timeout is not None:
        task["timeout"] = args.timeout
    if args.clean_env:
        task["caller_env"] = None
    cwd = os.path.abspath(args.cwd or os.getcwd())
    stdin = None if args.no_stdin else forwarded_stdin()
    if stdin is not None:
        task["stdin_stream"] = True
    future = client.submit("bash", **task, cwd=cwd, stream=not g.json or stdin is not None)
    try:
        if future.streaming:
            for chunk in client.stream(future, stdin=stdin):
                if g.json:
                    continue   # the result carries it
                out = sys.stdout.buffer if chunk.stream == "stdout" else sys.stderr.buffer
                out.write(chunk.data)
                out.flush()
        result = wait(future)
    except KeyboardInterrupt:
        client.cancel(future)
        return fail(g.json, "interrupted", f"interrupted: cancelled task {future.id}", EX_INTERRUPTED)
    except BrokenPipeError:  # nobody reads the output any more (`paractl bash -- yes | head`)
        client.cancel(future)
        raise
    if g.json:
        emit(fmt.to_json(result))
    else:
        for note in command_notes(result, streamed=True):
            say(note)
    return command_exit(result)


def cmd_grep(client: Client, g: Globals, args: argparse.Namespace) -> int:
    target = os.path.abspath(args.path or ".")
    task = {"pattern": args.pattern, "path": target, "glob": args.glob, "case": args.case,
            "context": args.context, "fixed_strings": args.fixed_strings, "hidden": args.hidden}
    if args.max_results:
        task["max_results"] = args.max_results
    result = run_tool(client, g, "grep", task)
    if not result.ok:
        return tool_exit(result, failure=2)  # like grep: 1 means "no match"
    value = result.value or {}
    if not g.json:
        emit("\n".join(fmt.grep_lines(value.get("matches", []), _grep_path(args.path, target), args.context)))
        if value.get("truncated"):
            say(f"showing {len(value.get('matches', []))} of {value.get('count')} matches; raise --max-results")
    return 0 if value.get("count") else 1


def _grep_path(typed: str | None, target: str):
    """Show paths as grep would: relative to the current directory, under PATH as typed."""
    if typed is None:
        return lambda rel: rel
    if not os.path.isdir(target):
        return lambda rel: typed
    return lambda rel: os.path.join(typed, rel)


def cmd_glob(client: Client, g: Globals, args: argparse.Namespace) -> int:
    task: dict[str, Any] = {"patterns": [args.pattern], "root": os.path.abspath(args.root or "."), "hidden": args.hidden}
    if args.limit:
        task["limit"] = args.limit
    result = run_tool(client, g, "glob", task)
    if g.json or not result.ok:
        return tool_exit(result)
    value = result.value or {}
    emit("\n".join(value.get("files", [])))
    if value.get("truncated"):
        say(f"showing {len(value.get('files', []))} of {value.get('count')} files; raise --limit")
    return 0


def cmd_read(client: Client, g: Globals, args: argparse.Namespace) -> int:
    task: dict[str, Any] = {"path": os.path.abspath(args.file), "offset": args.offset}
    if args.limit:
        task["limit"] = args.limit
    result = run_tool(client, g, "read", task)
    if g.json or not result.ok:
        return tool_exit(result)
    value = result.value or {}
    if value.get("binary"):
        say(f"{value.get('path')} is a binary file ({value.get('size')} bytes); not printed")
        return EX_TOOL
    lines = value.get("lines", [])
    emit("\n".join(fmt.numbered(lines, args.offset + 1) if args.number else lines))
    if value.get("truncated"):
        say(f"stopped at the read size cap; continue with --offset {args.offset + len(lines)}")
    return 0
