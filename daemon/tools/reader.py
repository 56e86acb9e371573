"""What the read-only tools (read, glob, grep) share: whose permissions they read with.

When parad runs as root, a read-only pool's worker reads each task's files as
that task's identity (sandbox/identity.py): the owner of its workspace
(run_as 'owner'), the pinned run_as user, or root without capabilities for a
workspace of root's where the policy allows it. It switches its thread's
file ids per task and starts rg as that user, as the bash tool runs commands:
a file only its owner may read is read in that owner's workspace alone.
"""

from __future__ import annotations

import os
from typing import Any

from para.daemon.tools.base import TaskContext, Tool, ToolFailure
from para.sandbox import identity, prctl


class ReadOnlyTool(Tool):
    retry_safe = True
    read_only = True
    default_credit = 8

    def identity(self, options: Any, ctx: TaskContext | None = None) -> tuple[int, int] | None:
        """(uid, gid) this task's files are read as; None: the worker's own (parad is not root, or run_as is null).

        ToolFailure when there is none: the task must not be read as root instead.
        """
        policy = options.sandbox
        try:
            return identity.ids_for(policy.run_as, ctx.workspace if ctx else None, policy.allow_root, self.confined)
        except (KeyError, identity.IdentityError) as exc:
            raise ToolFailure(exc.args[0]) from None
        except OSError as exc:
            raise ToolFailure(f"workspace {ctx.workspace!r} cannot be used: {exc.strerror}") from None

    def read_as(self, options: Any, ctx: TaskContext) -> tuple[int, int] | None:
        """Switch this thread's file ids to the task's identity, and return it (for rg)."""
        ids = self.identity(options, ctx)
        if ids is not None:
            identity.as_reader(*ids)
        return ids

    @staticmethod
    def denied_hint(options: Any, ids: tuple[int, int] | None) -> str:
        """What to add to "permission denied" when the files are read as another user than parad's."""
        if ids is None:
            return ""
        who = f"uid {ids[0]}, the owner of the task's workspace" if options.sandbox.run_as == identity.OWNER \
            else f"user {options.sandbox.run_as!r}, the pool's sandbox.run_as"
        return f" (read as {who}, because parad runs as root: make it readable by that user, or run parad as the files' owner)"

    def warm_up(self) -> None:
        """Look up, while still root, what the task's user may not be able to (rg on PATH)."""

    def reads_as(self, options: Any) -> tuple[int, int] | None:
        self.warm_up()
        if os.geteuid() == 0 and options.sandbox.run_as is not None:
            # This thread reads as tasks' users, root among them: it keeps what switching ids and
            # signalling rg take, and no file-access capability, even outside namespaces.
            prctl.keep_capabilities((prctl.CAP_KILL, prctl.CAP_SETGID, prctl.CAP_SETUID))
        if not identity.pinned(options.sandbox.run_as):
            return None   # switched per task (read_as)
        try:
            return identity.run_as_ids(options.sandbox.run_as)
        except KeyError:
            return None  # each task will say why

    def command_user(self, options: Any) -> tuple[int, int] | None:
        return self.reads_as(options)
