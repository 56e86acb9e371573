"""What the read-only tools (read, glob, grep) share: whose permissions they read with.

When parad runs as root, a read-only pool's worker reads files as its
sandbox's `run_as` user (see sandbox/identity.py), and starts rg as that
user, as the bash tool runs commands: root's files stay root's.
"""

from __future__ import annotations

from typing import Any

from para.daemon.tools.base import Tool, ToolFailure
from para.sandbox import identity


class ReadOnlyTool(Tool):
    retry_safe = True
    default_credit = 8

    def identity(self, options: Any) -> tuple[int, int] | None:
        """(uid, gid) files are read as: run_as when parad is root, else parad's own user (None).

        ToolFailure when run_as names no user: the task must not be run as root instead.
        """
        cached = self.__dict__.get("_identity")
        if cached is None or cached[0] is not options:
            try:
                cached = self._identity = (options, identity.run_as_ids(options.sandbox.run_as))
            except KeyError as exc:
                raise ToolFailure(exc.args[0]) from None
        return cached[1]

    def denied_hint(self, options: Any) -> str:
        """What to add to "permission denied" when the files are read as another user than parad's."""
        if self.identity(options) is None:
            return ""
        return (f" (read as user {options.sandbox.run_as!r}, the pool's sandbox.run_as, because parad runs as root: "
                f"make it readable by that user, or run parad as the files' owner)")

    def warm_up(self) -> None:
        """Look up, while still root, what the run_as user may not be able to (rg on PATH)."""

    def reads_as(self, options: Any) -> tuple[int, int] | None:
        self.warm_up()
        try:
            return self.identity(options)
        except ToolFailure:
            return None  # each task will say why

    def command_user(self, options: Any) -> tuple[int, int] | None:
        return self.reads_as(options)
