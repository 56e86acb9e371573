"""Where a task runs when its caller does not say: where the caller is.

A task of a tool that runs commands (bash) is sent, unless its arguments name
them, with the caller's working directory (`cwd`) and environment
(`caller_env`, which the pool's sandbox policy filters: secret-looking names
never reach the command). `cwd=None` or `caller_env=None` leave them to the
pool. `paractl bash`, `Client` and `AsyncClient` all send tasks this way; a
batch's bash tasks get the cwd only (see para.client.batch).
"""

from __future__ import annotations

import os
from typing import Any

CALLER_CONTEXT_TOOLS = ("bash",)   # tools whose tasks run in the caller's cwd and environment by default


def caller_cwd() -> str | None:
    """The caller's working directory; None when it no longer exists (the pool's default applies)."""
    try:
        return os.getcwd()
    except OSError:
        return None


def with_caller_context(tool: str, args: dict[str, Any], env: bool = True) -> dict[str, Any]:
    """`args` with the caller's cwd (and, if `env`, environment) filled in where a command-running tool names none."""
    if tool not in CALLER_CONTEXT_TOOLS:
        return args
    if "cwd" not in args and (cwd := caller_cwd()) is not None:
        args["cwd"] = cwd
    if env and "caller_env" not in args:
        args["caller_env"] = dict(os.environ)
    return args
