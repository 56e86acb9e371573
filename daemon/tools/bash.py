"""bash: run a command with `bash -c` in its own session, confined by the sandbox."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from para.daemon.tools.base import RunCommand, StrictModel, TaskContext, Tool, ToolFailure
from para.sandbox.command import CommandSpec
from para.sandbox.environment import DEFAULT_ALLOW, build_env
from para.sandbox.limits import Limits


class BashArgs(StrictModel):
    command: str = Field(min_length=1, description="passed to `bash -c`")
    cwd: str | None = Field(None, description="working directory (absolute); default: the pool's")
    env: dict[str, str] = Field(default_factory=dict, description="variables added to the scrubbed environment")
    stdin: str | bytes | None = Field(None, description="fed to the command's standard input")
    max_output: int | None = Field(None, gt=0, description="bytes kept per stream; may only lower the pool's cap")


class LimitsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cpu_seconds: int | None = Field(None, gt=0, description="RLIMIT_CPU")
    file_size: int | None = Field(1 << 30, gt=0, description="RLIMIT_FSIZE, bytes")
    open_files: int | None = Field(1024, gt=0, description="RLIMIT_NOFILE")
    processes: int | None = Field(None, gt=0, description="RLIMIT_NPROC (counts per user: leave unset unless a dedicated user runs commands)")
    address_space: int | None = Field(None, gt=0, description="RLIMIT_AS, bytes (breaks Go, Node and JVM programs)")


class BashOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    default_timeout: float = Field(600.0, gt=0, description="seconds, when a task names none")
    max_timeout: float = Field(3600.0, gt=0, description="a task may not ask for more")
    kill_grace: float = Field(2.0, ge=0, description="seconds between SIGTERM and SIGKILL")
    drain_timeout: float = Field(0.5, gt=0, description="seconds to keep reading output after the command exits")
    max_output_bytes: int = Field(1 << 20, gt=0, description="bytes kept per stream (head and tail)")
    default_cwd: str = Field("~", description="working directory when a task names none")
    env_allow: list[str] = Field(default_factory=lambda: list(DEFAULT_ALLOW), description="daemon variables passed through (globs)")
    limits: LimitsConfig = Field(default_factory=LimitsConfig)


class Bash(Tool):
    name = "bash"
    Args = BashArgs
    Options = BashOptions
    # Credit 1: a command can run for an hour, and a task queued behind it at
    # a worker would wait that long while another worker sits idle.
    default_credit = 1

    def run(self, args: BashArgs, options: BashOptions, ctx: TaskContext) -> RunCommand:
        cwd = Path(os.path.expanduser(args.cwd or options.default_cwd))
        if not cwd.is_absolute():
            raise ToolFailure(f"cwd {args.cwd!r} is not absolute; pass a full path")
        if not cwd.is_dir():
            raise ToolFailure(f"cwd {str(cwd)!r} is not a directory")
        stdin = args.stdin.encode() if isinstance(args.stdin, str) else args.stdin
        cap = options.max_output_bytes
        if args.max_output is not None:
            cap = min(cap, args.max_output)
        spec = CommandSpec(
            argv=["bash", "-c", args.command],
            cwd=str(cwd),
            env={**self._base_env(options), **args.env},
            stdin=stdin,
            limits=self.limits(options),
            timeout=ctx.timeout,
            kill_grace=options.kill_grace,
            drain_timeout=options.drain_timeout,
            output_cap=cap,
        )
        return RunCommand(spec)

    def _base_env(self, options: BashOptions) -> dict[str, str]:
        # The daemon's environment does not change: filter it once per worker, not per task.
        cached = getattr(self, "_env_cache", None)
        if cached is None or cached[0] is not options:
            self._env_cache = (options, build_env(os.environ, options.env_allow))
        return self._env_cache[1]

    @staticmethod
    def limits(options: BashOptions) -> Limits:
        return Limits(**options.limits.model_dump())

    def held_limits(self, options: BashOptions) -> Limits:
        return self.limits(options).inheritable()
