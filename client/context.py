"""Where a task runs when its caller does not say: where the caller is.

A task of a pool that runs commands (the daemon names them in
`Welcome.workspace_tools`; `bash` before it has said) is sent, unless it names
them, with:

- `workspace` (a task option): the caller's project, the nearest folder up
  from its cwd that holds `.git`, else the cwd itself. None from the home
  folder itself or `/`: such a task runs in the pool's default workspace;
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

DEFAULT_CONTEXT_TOOLS = ("bash",)   # before the daemon names its pools that run commands


def caller_cwd() -> str | None:
    """The caller's working directory; None when it no longer exists (the pool's default applies)."""
    try:
        return os.getcwd()
    except OSError:
        return None


@functools.lru_cache(maxsize=64)
def project_of(cwd: str) -> str | None:
    """The workspace of a caller in `cwd`: its git top level, else `cwd`; None for the home folder and `/`."""
    home = os.path.realpath(os.path.expanduser("~"))
    path = cwd
    while not os.path.exists(os.path.join(path, ".git")):
        parent = os.path.dirname(path)
        if parent == path:
            path = cwd   # in no repository
            break
        path = parent
    if path in (home, "/"):
        path = cwd   # a repository of the whole home folder (dotfiles) is no project
    return None if path in (home, "/") else path


def with_caller_context(tool: str, args: dict[str, Any], options: dict[str, Any], tools: Collection[str],
                        env: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """`args` and `options` with the caller's cwd, workspace (and, if `env`, environment) filled in
    where a task of a pool in `tools` names none; the workspace alone for another pool's task."""
    cwd = caller_cwd()
    if tool not in tools:
        if cwd is not None and "workspace" not in options:
            options = {**options, "workspace": project_of(cwd)}
        return args, options
    if cwd is not None:
        if "workspace" not in options:
            options = {**options, "workspace": project_of(cwd)}
        workspace = options["workspace"]
        # A task sent to another project starts there, not in a folder of the caller's it cannot write.
        if "cwd" not in args and (not isinstance(workspace, str) or _within(cwd, workspace)):
            args["cwd"] = cwd
    if env and "caller_env" not in args:
        args["caller_env"] = dict(os.environ)
    return args, options


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")
