"""Whose ids a pool's commands and reads run with when parad runs as root, decided by parad.

A pool's rule (`IdentityRule`, from its sandbox policy and its isolation on
this host) gives each workspace an identity (sandbox/identity.py `ids_for`):
admission refuses a task whose workspace may not have one, and a worker made
for a workspace is told its identity at spawn (`WorkerSettings.uid`/`gid`),
which also decides the capabilities its sandbox keeps. A read-only tool's
worker serves every workspace and switches its file ids per task.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass

from pydantic import BaseModel

from para.daemon.isolation import PoolIsolation, policy_of
from para.sandbox import identity, namespaces


@dataclass(frozen=True, slots=True)
class IdentityRule:
    run_as: str | None      # identity.OWNER, a user name, or None (parad's own ids)
    allow_root: str
    confined: bool          # the pool's workers live in namespaces
    per_task: bool          # a read-only tool: one worker reads for every workspace

    @property
    def by_owner(self) -> bool:
        return self.run_as == identity.OWNER

    def ids(self, workspace: str | None) -> tuple[int, int] | None:
        """The (uid, gid) tasks in `workspace` run as; None: parad's own. IdentityError if refused."""
        try:
            return identity.ids_for(self.run_as, workspace, self.allow_root, self.confined)
        except KeyError as exc:
            raise identity.IdentityError(exc.args[0]) from None
        except OSError as exc:
            raise identity.IdentityError(f"workspace {workspace!r} cannot be used: {exc.strerror}") from None

    def for_worker(self, workspace: str | None) -> tuple[tuple[int, int] | None, str | None]:
        """(its ids, None), or (None, why none of its tasks may run) for a worker made for `workspace`."""
        if self.per_task:
            return None, None
        try:
            return self.ids(workspace), None
        except identity.IdentityError as exc:
            return None, str(exc)

    def worker_caps(self, ids: tuple[int, int] | None) -> tuple[str, ...]:
        """The capabilities a worker of identity `ids` keeps in its sandbox: those to act as another
        user; for root, only what it takes to drop every capability, bounding set included."""
        if self.per_task:
            return namespaces.RUN_AS_CAPS if self.run_as is not None else ()
        if ids == identity.ROOT:
            return namespaces.AS_ROOT_CAPS
        return namespaces.RUN_AS_CAPS if ids is not None else ()


def rule_of(plan: PoolIsolation, options: BaseModel) -> IdentityRule | None:
    """The pool's rule; None when nothing switches (parad is not root, or the tool has no sandbox policy)."""
    policy, read_only = policy_of(options)
    if policy is None or os.geteuid() != 0:
        return None
    return IdentityRule(policy.run_as, policy.allow_root, plan.effective == "namespaces", read_only)


def describe(rule: IdentityRule | None, workspace: str | None) -> str:
    """Who tasks in `workspace` run as, in a few words (paractl status)."""
    if rule is None:
        return "parad's user"
    try:
        ids = rule.ids(workspace)
    except identity.IdentityError:
        return "no one: its tasks are refused (sandbox.allow_root)"
    if ids is None:
        return "root (sandbox.run_as is null)"
    if ids == identity.ROOT:
        return "root, without capabilities"
    try:
        name = pwd.getpwuid(ids[0]).pw_name
    except KeyError:
        name = "a user with no name"
    return f"{name} (uid {ids[0]}, gid {ids[1]})"
