"""Which isolation each pool gets on this host: decided once at start, never silently.

A pool whose tool has a sandbox policy asks for `isolation: namespaces` or
`none`. What the host cannot give (no bubblewrap, no user namespaces, no
delegated cgroup) either makes parad refuse to start or, where the policy
allows degraded mode, is named in one log line, in `paractl status` and in
the `para_sandbox_degraded` metric.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import site
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from para.daemon.safe_path import safe_pythonpath
from para.ipc import messages as m
from para.sandbox import bwrap, caller_path, cgroup, identity, namespaces
from para.sandbox.environment import build_env
from para.sandbox.policy import ReadOnlySandbox, SandboxPolicy, WebSandbox, resolve_path
from para.sandbox.probe import HostSupport

log = logging.getLogger("parad")


class IsolationError(Exception):
    """A policy asks for isolation this host cannot give, and does not allow degraded mode."""


@dataclass(slots=True)
class PoolIsolation:
    pool: str
    requested: str
    effective: str
    memory: str                       # how memory and process limits are enforced
    degraded: list[str] = field(default_factory=list)
    launch: list[str] | None = None   # argv prefix that puts a worker in its sandbox (as of the last spawn)
    env: dict[str, str] | None = None # the sandboxed worker's whole environment
    cgroup: Path | None = None        # the pool's cgroup, when parad owns a subtree
    policy: SandboxPolicy | None = None
    rebuild: tuple | None = None      # (bwrap, unshare_user, hide, keep): what launch_argv needs
    lend_ids: bool = False            # workers may lend a pinned run_as its real ids (see sandbox/spawn.py)

    def launch_argv(self, binds: list[str] = (), workspace: str | None = None,
                    keep_caps: tuple[str, ...] | None = None, shown: list[str] = ()) -> list[str] | None:
        """The sandbox argv for a new worker, built now: paths to hide or protect that
        appeared since parad started (a new credentials file, a .git/hooks) are covered too.
        `binds` are the worker's own writable paths (its command cgroup leaf); relative
        writable roots ('.') are the `workspace`'s, and the worker starts in it.
        `keep_caps`: what a root worker keeps (default: what acting as run_as takes, unless it is null).
        `shown`: folders kept visible, read-only, under the private /tmp (the caller's venv)."""
        if self.rebuild is None:
            return None
        bwrap, unshare_user, hide, keep = self.rebuild
        policy = in_workspace(self.policy, workspace) if workspace else self.policy
        if keep_caps is None:
            keep_caps = namespaces.RUN_AS_CAPS if policy.run_as is not None else ()
        self.launch = namespaces.worker_argv(bwrap, policy, unshare_user, hide, [], keep=[*keep, *shown], binds=binds,
                                             cwd=workspace, keep_caps=keep_caps)
        return self.launch

    def summary(self) -> dict[str, Any]:
        return {"requested": self.requested, "effective": self.effective, "limits": self.memory,
                "degraded": self.degraded, "cgroup": str(self.cgroup) if self.cgroup else None}


def worker_settings(plan: PoolIsolation, worker: str, *, runtime_dir: Path, heartbeat_interval: float,
                    credit: int, options: dict[str, Any], max_message_size: int,
                    workspace: str | None = None, ids: tuple[int, int] | None = None,
                    identity_error: str | None = None, keep_caps: tuple[str, ...] | None = None,
                    caller_path: str | None = None) -> m.WorkerSettings:
    """What worker `worker` of `plan`'s pool starts with: its sandbox argv (made for `workspace`,
    if given), its identity (`ids`, or why it has none) and its cgroup leaves, made now when
    parad owns a cgroup subtree. The folders of `caller_path` (a PATH) that its private /tmp
    would hide are shown read-only."""
    worker_leaf = command_leaf = None
    if plan.cgroup is not None:
        worker_leaf, command_leaf = cgroup.make_worker(plan.cgroup, worker)
    # The worker moves each command into its leaf from inside the sandbox, so the leaf is bound in.
    launch = plan.launch_argv(binds=[str(command_leaf)] if command_leaf is not None else [], workspace=workspace,
                              keep_caps=keep_caps, shown=_hidden_tools(plan, caller_path, workspace))
    uid, gid = ids if ids is not None else (None, None)
    return m.WorkerSettings(
        str(runtime_dir), heartbeat_interval, credit, options, launch=launch, env=plan.env, lend_ids=plan.lend_ids,
        cgroup_worker=_str(worker_leaf), cgroup_command=_str(command_leaf), max_message_size=max_message_size,
        workspace=workspace, uid=uid, gid=gid, identity_error=identity_error, confined=plan.effective == "namespaces")


def writable_in(options: BaseModel, workspace: str) -> list[str]:
    """What a command of a pool with these options may write in `workspace` (nothing without a sandbox policy)."""
    policy, read_only = policy_of(options)
    if policy is None or read_only:
        return []
    return in_workspace(policy, workspace).filesystem.writable


def in_workspace(policy: SandboxPolicy, workspace: str) -> SandboxPolicy:
    """`policy` with its relative writable roots ('.') made absolute in `workspace`."""
    fs = policy.filesystem
    writable = [resolve_path(w, workspace) for w in fs.writable]
    return policy.model_copy(update={"filesystem": fs.model_copy(update={"writable": writable})})


def _hidden_tools(plan: PoolIsolation, path: str | None, workspace: str | None) -> list[str]:
    if plan.policy is None or not plan.policy.filesystem.private_tmp:
        return []
    return caller_path.hidden_by_private_tmp(path, workspace)


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def policy_of(options: BaseModel) -> tuple[SandboxPolicy | None, bool]:
    """(the pool's policy, whether its tool runs no user commands: it reads files, or the web, in-process)."""
    sandbox = getattr(options, "sandbox", None)
    if isinstance(sandbox, (ReadOnlySandbox, WebSandbox)):
        return sandbox.as_policy(), True
    return sandbox, False


def plan(pool_options: dict[str, BaseModel], host: HostSupport, hide: list[str]) -> dict[str, PoolIsolation]:
    """Decide every pool's isolation; IsolationError when a policy cannot be met and may not degrade."""
    plans = {}
    if host.bwrap:
        log.info("bubblewrap: %s %s (from %s)", host.bwrap, host.bwrap_version or "(version unknown)", host.bwrap_source)
    cg_root = _adopt_cgroup(host)
    for name, options in pool_options.items():
        policy, read_only = policy_of(options)
        if policy is None:
            plans[name] = PoolIsolation(name, "none", "none", "none (no commands)")
            continue
        web = isinstance(getattr(options, "sandbox", None), WebSandbox)
        plans[name] = _plan_pool(name, policy, host, hide, None if read_only else cg_root, read_only, web)
    _plan_lent_ids(plans, pool_options)
    return plans


def _plan_lent_ids(plans: dict[str, PoolIsolation], pool_options: dict[str, BaseModel]) -> None:
    """Which pools' workers may make a pinned run_as their real ids: those alone in a pid namespace,
    as long as no pool runs commands as that user outside one (they could signal the workers).

    Never a workspace's owner: a real user runs other processes, which could signal the worker.
    A pool that runs commands as workspace owners outside a pid namespace may run them as anyone."""
    if os.geteuid() != 0:
        return
    exposed: dict[str, str] = {}  # run_as user (or "owner": any) -> a pool whose commands share the host's pids
    for name, options in pool_options.items():
        policy, read_only = policy_of(options)
        if policy is not None and not read_only and policy.run_as and plans[name].effective != "namespaces":
            exposed.setdefault(policy.run_as, name)
    for name, options in pool_options.items():
        policy, read_only = policy_of(options)
        p = plans[name]
        if (policy is None or read_only or not identity.pinned(policy.run_as) or not p.launch
                or "--unshare-pid" not in p.launch):
            continue
        seen = exposed.get(policy.run_as) or exposed.get(identity.OWNER)
        if seen is not None:
            log.info("pool %r: commands of pool %r run as %s outside a pid namespace, so %r's workers keep "
                     "their own ids (a fork per command)", name, seen, policy.run_as, name)
        else:
            p.lend_ids = True


def _adopt_cgroup(host: HostSupport) -> Path | None:
    if host.cgroup is None:
        return None
    try:
        cgroup.adopt(host.cgroup)
        return host.cgroup
    except OSError as exc:
        log.warning("cannot use the delegated cgroup %s: %s; limits fall back to sampling", host.cgroup, exc)
        return None


def _plan_pool(name: str, policy: SandboxPolicy, host: HostSupport, hide: list[str], cg_root: Path | None,
               read_only: bool = False, web: bool = False) -> PoolIsolation:
    kind = "web tool" if web else "read-only tool" if read_only else "sampled RSS and process count, rlimits"
    p = PoolIsolation(name, policy.isolation, "none", kind)
    if policy.isolation == "namespaces":
        if host.namespaces:
            p.effective = "namespaces"
            p.policy, p.rebuild = policy, (host.bwrap, host.unshare_user, hide, code_paths())
            p.launch_argv()
            # The worker's nested sandboxes (bash.py) use the bwrap the probe tried, not one found again inside.
            p.env = {**worker_env(policy), bwrap.ENV: host.bwrap}
        else:
            p.degraded.append(f"no namespaces: {host.namespaces_error}")
    if isinstance(policy.network, list) and p.effective != "namespaces":
        p.degraded.append("a network allow-list without namespaces: commands reach the whole network; "
                          "only programs that honour HTTP_PROXY go through the egress proxy")
    if "/" in (resolve_path(w) for w in policy.filesystem.writable):
        p.degraded.append("a writable root is '/' (is parad's working directory '/'?): the whole filesystem is writable")
    p.degraded.extend(denied_in_writable(policy))
    if cg_root is not None:
        p.cgroup = cgroup.make_pool(cg_root, name, policy.cgroup.cpu_weight)
        p.memory = "cgroup v2 (memory.max, pids.max, cpu.max), rlimits"
    elif policy.cgroup.cpu_weight or policy.cgroup.cpu_max:
        p.degraded.append(f"no cgroup for cpu_weight/cpu_max: {host.cgroup_error}")
    if os.geteuid() == 0 and web:   # confined, its root holds no capability; it reads no one's files
        if p.effective != "namespaces":
            p.degraded.append("the worker runs as root, with every capability, outside any sandbox")
    elif os.geteuid() == 0:
        p.degraded.extend(_root_identity(policy, p.effective == "namespaces", read_only))
    if p.degraded and not policy.allow_degraded:
        raise IsolationError(
            f"pool {name!r}: the sandbox policy cannot be met on this host: {'; '.join(p.degraded)}. "
            f"Fix the host, or set pools.{name}.options.sandbox.allow_degraded: true to run without it")
    return p


def _root_identity(policy: SandboxPolicy, confined: bool, read_only: bool) -> list[str]:
    """Why tasks of this pool run as unconfined root (parad is root), if they may."""
    doing = "files are read" if read_only else "commands run"
    if policy.run_as is None:
        return [f"{doing} as root (sandbox.run_as is none)"]
    if policy.run_as == identity.OWNER and not confined:
        if policy.allow_root == "always":
            return [f"in a workspace owned by root, {doing} as root without namespaces (sandbox.allow_root: always)"]
        log.info("without namespaces, tasks in a workspace owned by root are refused (sandbox.allow_root: %s)",
                 policy.allow_root)
    return []


def denied_in_writable(policy: SandboxPolicy) -> list[str]:
    """One reason per writable root that holds deny_read paths (parad started in ~, say).

    sandbox/seal.py never seals inside a writable root: a tmpfs there would
    swallow what commands write. A denied path there is covered only if it
    exists when a worker starts; one created (or saved over by rename) later
    shows through, and nothing safe can hide it in advance: bubblewrap would
    have to create its mount point in the user's directory on the host.
    """
    fs = policy.filesystem
    if not fs.read_only_root:
        return ["read_only_root is off: deny_read paths created after a worker started are not hidden"] \
            if fs.deny_read else []
    denied = [Path(os.path.realpath(resolve_path(entry))) for entry in fs.deny_read]
    reasons = []
    for root in dict.fromkeys(Path(os.path.realpath(resolve_path(w))) for w in fs.writable):
        inside = [str(d.relative_to(root)) for d in denied if d == root or root in d.parents]
        if inside and root != Path("/") and root.exists():  # '/' has a reason of its own; a missing root is not bound
            reasons.append(f"writable root {root} holds denied paths ({', '.join(inside)}): those created or saved "
                           f"over after a worker started are not hidden from commands (a writable directory cannot "
                           f"be sealed); start parad in a project directory, not {root}, or narrow filesystem.writable")
    return reasons


def code_paths() -> list[str]:
    """What a worker must still see inside its sandbox to run at all: Python and para's code.

    They may live under /tmp (a checkout there, installed in editable mode),
    which the sandbox replaces with an empty one.
    """
    paths = {sys.prefix, sys.exec_prefix, *site.getsitepackages()}
    for folder in ("client", "daemon", "ipc", "sandbox", "web"):   # located, not imported: the daemon uses no client code
        spec = importlib.util.find_spec(f"para.{folder}")
        if spec is not None and spec.submodule_search_locations:
            paths.add(str(Path(list(spec.submodule_search_locations)[0]).resolve()))
    return sorted(p for p in paths if os.path.isdir(p))


def worker_env(policy: SandboxPolicy) -> dict[str, str]:
    """What a sandboxed worker (and its bubblewrap) may hold: what its commands may get, and Python's own.

    A command can read the environment of every process in its sandbox that
    runs as its user; parad's other variables must not be among them.
    """
    keep = [*policy.env.allow, "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"]
    named = {k: os.environ[k] for k in policy.env.secrets if k in os.environ}
    env = build_env(os.environ, keep, named)
    pythonpath = safe_pythonpath(env.pop("PYTHONPATH", None))   # not the caller's project dirs
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


def log_plans(plans: dict[str, PoolIsolation]) -> None:
    """One line for the whole daemon; a warning when anything is degraded."""
    parts = []
    for p in plans.values():
        if p.requested == "none" and p.effective == "none" and not p.degraded:
            continue
        parts.append(f"{p.pool}: {p.effective} ({p.memory})" + (f" DEGRADED: {'; '.join(p.degraded)}" if p.degraded else ""))
    line = "isolation: " + (", ".join(parts) or "no sandboxed pools")
    degraded = any(p.degraded for p in plans.values())
    (log.warning if degraded else log.info)("%s", line)


def effective_label(plans: dict[str, PoolIsolation]) -> str:
    """The daemon-wide isolation in one word or two, for status."""
    modes = {p.effective for p in plans.values() if p.requested != "none" or p.degraded}
    label = "/".join(sorted(modes)) or "none"
    return label + (" (degraded)" if any(p.degraded for p in plans.values()) else "")
