"""Where a task runs when its caller does not say: where the caller is.

A task of a pool that runs commands (the daemon names them in
`Welcome.workspace_tools`; `bash` before it has said) is sent, unless it names
them, with:

- `workspace` (a task option): the project of its `cwd` (the one it names,
  else the caller's): the nearest folder up that holds `.git`, else that
  folder itself. None where no project can be (the home folder itself, `/`,
  system folders): such a task runs in the pool's default workspace. None
  for a nested client, whose task gets its parent's workspace;
- `cwd` (an argument): the caller's working directory, if it lies in the
  workspace (a task sent to another project starts in that project);
- `caller_env` (an argument): the caller's environment, which the pool's
  sandbox policy filters (secret-looking names never reach the command).

Every other task gets the `workspace` alone: when parad runs as root, a
read-only tool (read, glob, grep) reads as the owner of its caller's project.
`workspace=None`, `cwd=None` or `caller_env=None` leave them to the pool.
`paractl bash`, `Client` and `AsyncClient` all send tasks this way; a batch's
tasks get the workspace and cwd only (see para.client.batch).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Collection
from typing import Any

from para.ipc.endpoints import CHILD_ENDPOINT_ENV
from para.ipc.workspace import never_a_workspace, within

DEFAULT_CONTEXT_TOOLS = ("bash",)   # before the daemon names its pools that run commands


def caller_cwd() -> str | None:
    """The caller's working directory; None when it no longer exists (the pool's default applies)."""
    try:
        return os.getcwd()
    except OSError:
        return None


@functools.lru_cache(maxsize=64)
def project_of(cwd: str) -> str | None:
    """The workspace of a caller in `cwd`: its git top level, else `cwd`; None where no project
    can be (the home folder itself, `/`, system folders: ipc/workspace.py) or `cwd` is no folder
    (the task then says what is wrong with its cwd)."""
    if not os.path.isdir(cwd):
        return None
    path = cwd
    while not os.path.exists(os.path.join(path, ".git")):
        parent = os.path.dirname(path)
        if parent == path:
            path = cwd   # in no repository
            break
        path = parent
    if never_a_workspace(path):
        path = cwd   # a repository of the whole home folder (dotfiles) is no project
    return None if never_a_workspace(path) else path


def with_caller_context(tool: str, args: dict[str, Any], options: dict[str, Any], tools: Collection[str],
                        env: bool = True, owner_tools: Collection[str] = ()) -> tuple[dict[str, Any], dict[str, Any]]:
    """`args` and `options` with the caller's cwd, workspace (and, if `env`, environment) filled in
    where a task of a pool in `tools` names none; the workspace alone for a task of a pool in `owner_tools`
    (whose permissions a read-only tool reads with)."""
    if tool not in tools and tool not in owner_tools:
        return args, options
    named = args.get("cwd")
    cwd = named if isinstance(named, str) and os.path.isabs(named) else caller_cwd()
    if cwd is not None and "workspace" not in options:
        # Nested (inside a task's command): the daemon gives the parent's workspace.
        options = {**options, "workspace": None if _nested() else project_of(cwd)}
    if tool not in tools:
        return args, options
    workspace = options.get("workspace")
    # A task sent to another project starts there, not in a folder of the caller's it cannot write.
    if "cwd" not in args and cwd is not None and (not isinstance(workspace, str) or within(cwd, workspace)):
        args["cwd"] = cwd
    if env and "caller_env" not in args:
        args["caller_env"] = caller_env()
    return args, options


_CHILD_KEY = os.fsencode(CHILD_ENDPOINT_ENV)


def _nested() -> bool:
    # os.environ.get raises and catches a KeyError for a name that is not set, about 3 us a
    # task; the bytes os.environ keeps answer in one lookup.
    return bool(os.environ._data.get(_CHILD_KEY))  # type: ignore[attr-defined]


_env_seen: tuple[dict[bytes, bytes], dict[str, str]] = ({}, {})


def caller_env() -> dict[str, str]:
    """The caller's environment as it is now; the same dict while it does not change (not to be changed).

    `dict(os.environ)` decodes every variable, about 100 us for 40 of them,
    which a map() of bash tasks paid per task. The bytes os.environ keeps
    (`os.environ._data`) compare in C in about a microsecond.
    """
    global _env_seen
    data = os.environ._data  # type: ignore[attr-defined]
    if data != _env_seen[0]:
        _env_seen = (dict(data), dict(os.environ))
    return _env_seen[1]
