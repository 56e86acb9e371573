"""glob: files matching patterns under a root, honouring .gitignore, via `rg --files`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from para.daemon.tools.base import Finished, RunCommand, StrictModel, TaskContext
from para.daemon.tools.globmatch import compile_globs
from para.daemon.tools.ripgrep import RipgrepTool, absolute_dir
from para.sandbox.command import Outcome
from para.sandbox.policy import ReadOnlySandbox


class GlobArgs(StrictModel):
    patterns: list[str] = Field(min_length=1, description="glob patterns, e.g. ['**/*.py']; '!pat' excludes")
    root: str | None = Field(None, description="directory searched (absolute); default: the pool's default_root")
    limit: int = Field(1000, gt=0, description="paths returned at most; may not exceed the pool's max_results")
    hidden: bool = Field(False, description="include hidden files and directories")
    follow_gitignore: bool = Field(True, description="skip what .gitignore, .ignore and .rgignore exclude")


class GlobOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    default_root: str = Field("~", description="directory searched when a task names none")
    max_results: int = Field(10000, gt=0, description="paths returned at most per task")
    sandbox: ReadOnlySandbox = Field(default_factory=ReadOnlySandbox)


class Glob(RipgrepTool):
    name = "glob"
    description = ("Lists the files under a directory that match glob patterns (e.g. **/*.py), skipping what "
                   ".gitignore excludes.")
    Args = GlobArgs
    Options = GlobOptions

    def run(self, args: GlobArgs, options: GlobOptions, ctx: TaskContext) -> RunCommand:
        user = self.read_as(options, ctx)
        root = absolute_dir(args.root or options.default_root, "root", self.denied_hint(options, user))
        argv = self.rg_argv(user, "--files", "--no-require-git")
        matches = compile_globs(args.patterns)
        if args.hidden:
            argv.append("--hidden")
        if not args.follow_gitignore:
            argv.append("--no-ignore")
        limit = min(args.limit, options.max_results)

        def finish(outcome: Outcome) -> Finished:
            if outcome.exit_code == 2 and not outcome.stdout:
                return Finished(error=f"glob failed: {outcome.stderr.decode(errors='replace').strip()}")
            listed = outcome.stdout.decode("utf-8", "replace").splitlines()
            files = sorted(f for f in listed if f and not _in_git_dir(f) and matches(f))
            return Finished(value={"root": str(root), "files": files[:limit], "count": len(files),
                                   "truncated": len(files) > limit})

        return self.rg_command(argv, root, user, ctx, finish)


def _in_git_dir(path: str) -> bool:
    return path.startswith(".git/") or "/.git/" in path
