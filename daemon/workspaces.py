"""Which folders may be workspaces, and the workspace a task runs in.

A workspace is the project a task works in: for a tool that runs commands
(bash) it is the command's writable root ('.' in the sandbox policy) and its
default working directory, and the pool keeps warm workers per workspace
(pool.py): each worker's sandbox is made for one workspace, so the first
command in a new workspace pays one sandbox start and later ones a fork.

The client sends its project (the git top level of its cwd, else the cwd);
the daemon decides whether that folder may be one (`WorkspacePolicy`):

- `owned`: any folder parad's user owns, except the filesystem root, the
  home folder itself and system folders (`SYSTEM_TREES` and everything in
  them, `SYSTEM_FOLDERS` themselves: ipc/workspace.py, which the client
  shares), so a project in ~/src/app, /tmp/x or
  a container's /app works as it is. On by default for a user's parad,
  off for the system service (`parad --system`);
- `roots`: folders under which any folder may be a workspace, whoever owns it.

A task that names no workspace runs in the pool's default, parad's working
directory, as before workspaces existed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from para.ipc.workspace import never_a_workspace, within

CACHE_SECONDS = 1.0   # a checked folder is taken again without a stat for this long (a map() repeats it)
CACHE_SIZE = 256

class WorkspaceError(ValueError):
    """A folder that may not be a workspace; the message says why and what to do."""


@dataclass
class WorkspacePolicy:
    owned: bool                     # folders parad's user owns may be workspaces
    roots: tuple[str, ...] = ()     # and any folder under these (resolved)
    uid: int = field(default_factory=os.geteuid)
    home: str = field(default_factory=lambda: os.path.realpath(os.path.expanduser("~")))
    _checked: dict[str, tuple[float, str]] = field(default_factory=dict, repr=False)

    def check(self, path: object, fresh: bool = False) -> str:
        """`path` resolved (symlinks followed) if it may be a workspace; WorkspaceError naming why not.

        A folder checked in the last CACHE_SECONDS is taken as it was, unless `fresh`
        (before a worker is made for it: what is bound into a sandbox is checked then)."""
        if not fresh and isinstance(path, str):
            hit = self._checked.get(path)
            if hit is not None and time.monotonic() - hit[0] < CACHE_SECONDS:
                return hit[1]
        real = self._check(path)
        if len(self._checked) >= CACHE_SIZE:
            self._checked.clear()
        self._checked[path] = (time.monotonic(), real)
        return real

    def _check(self, path: object) -> str:
        if not isinstance(path, str) or not os.path.isabs(path):
            raise WorkspaceError(f"workspace {path!r} is not an absolute path; send the project's full path")
        real = os.path.realpath(path)
        try:
            st = os.stat(real)
        except OSError as exc:
            raise WorkspaceError(f"workspace {path!r} cannot be used: {exc.strerror}") from None
        if not os.path.isdir(real):
            raise WorkspaceError(f"workspace {path!r} is not a directory")
        if not os.access(real, os.R_OK | os.X_OK):
            raise WorkspaceError(f"workspace {real!r} cannot be read by parad's user; make it readable, or pick another")
        if any(within(real, r) for r in self.roots):
            return real
        if never_a_workspace(real, self.home):
            raise WorkspaceError(f"workspace {real!r} is a system folder, the filesystem root or the home folder; "
                                 f"run from a project folder (e.g. ~/src/app), or list it in daemon.workspaces.roots")
        if not self.owned:
            raise WorkspaceError(f"workspace {real!r} is not under daemon.workspaces.roots "
                                 f"({', '.join(self.roots) or 'none set'}); an operator adds it there")
        if st.st_uid != self.uid:
            raise WorkspaceError(f"workspace {real!r} belongs to uid {st.st_uid}, not to parad's user (uid {self.uid}); "
                                 f"run from a folder you own, or list it in daemon.workspaces.roots")
        return real
