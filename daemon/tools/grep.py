"""grep: regex search through `rg --json`, answered as structured matches."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from para.daemon.tools.base import Finished, RunCommand, StrictModel, TaskContext
from para.daemon.tools.globmatch import compile_globs
from para.daemon.tools.rg_json import parse_rg_json
from para.daemon.tools.ripgrep import RipgrepTool, absolute_dir
from para.sandbox.command import Outcome
from para.sandbox.policy import ReadOnlySandbox

CASE_FLAGS = {"smart": "--smart-case", "sensitive": "--case-sensitive", "insensitive": "--ignore-case"}


class GrepArgs(StrictModel):
    pattern: str = Field(min_length=1, description="regular expression (Rust regex syntax), or text with fixed_strings")
    path: str | None = Field(None, description="file or directory searched (absolute); default: the pool's default_root")
    glob: list[str] = Field(default_factory=list, description="include globs, '!glob' to exclude")
    case: Literal["smart", "sensitive", "insensitive"] = Field("smart", description="smart: insensitive unless the pattern has capitals")
    context: int = Field(0, ge=0, le=100, description="lines of context before and after each match")
    max_results: int = Field(500, gt=0, description="matches returned at most; may not exceed the pool's max_results")
    fixed_strings: bool = Field(False, description="the pattern is literal text")
    hidden: bool = Field(False, description="search hidden files and directories")


class GrepOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    default_root: str = Field("~", description="path searched when a task names none")
    max_results: int = Field(10000, gt=0, description="matches returned at most per task")
    sandbox: ReadOnlySandbox = Field(default_factory=ReadOnlySandbox)


class Grep(RipgrepTool):
    name = "grep"
    description = ("Searches file contents with ripgrep (Rust regex syntax), skipping what .gitignore excludes; "
                   "answers with structured matches (path, line number, text, context) and counts.")
    Args = GrepArgs
    Options = GrepOptions

    def run(self, args: GrepArgs, options: GrepOptions, ctx: TaskContext) -> RunCommand:
        user = self.read_as(options, ctx)
        target = absolute_dir(args.path or options.default_root, "path", self.denied_hint(options, user))
        cwd, where = (target, []) if target.is_dir() else (target.parent, [target.name])
        argv = self.rg_argv(user, "--json", "--no-require-git", CASE_FLAGS[args.case])
        if args.context:
            argv += ["--context", str(args.context)]
        if args.fixed_strings:
            argv.append("--fixed-strings")
        if args.hidden:
            argv.append("--hidden")
        argv += _glob_flags(args.glob)
        argv += ["--regexp", args.pattern, "--", *where]
        limit = min(args.max_results, options.max_results)
        wanted = compile_globs(args.glob) if args.glob else None

        def finish(outcome: Outcome) -> Finished:
            if outcome.exit_code == 2 and b'"type":"match"' not in outcome.stdout:
                message = outcome.stderr.decode(errors="replace").strip()
                if "regex" in message:
                    return Finished(error=f"invalid regex {args.pattern!r}: {message}")
                return Finished(error=f"grep failed: {message}")
            return Finished(value=parse_rg_json(outcome.stdout, limit, wanted, args.context))

        return self.rg_command(argv, cwd, user, ctx, finish)


def _glob_flags(globs: list[str]) -> list[str]:
    """rg flags that narrow the search to `globs` without unhiding anything.

    A positive `rg --glob` whitelists whatever it matches, ignored and hidden
    files included; an rg file type (matched on the file name) keeps the ignore
    rules. So includes become a type on their last path part, and the whole
    pattern is checked again on each match; excludes pass through as globs.
    """
    flags: list[str] = []
    for glob in globs:
        if glob.startswith("!"):
            flags += ["--glob", glob]
        else:
            flags += ["--type-add", f"para:{glob.rstrip('/').rsplit('/', 1)[-1]}"]
    if any(not g.startswith("!") for g in globs):
        flags += ["--type", "para"]
    return flags
