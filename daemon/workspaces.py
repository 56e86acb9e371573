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
  them, `SYSTEM_FOLDERS` themselves), so a project in ~/src/app, /tmp/x or
  a container's /app works as it is. On by default for a user's parad,
  off for the system service (`parad --system`);
- `roots`: folders under which any folder may be a workspace, whoever owns it.

A task that names no workspace runs in the pool's default, parad's working
directory, as before workspaces existed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

# Never a workspace, nor anything inside them.
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run", "/sbin",
                "/sys", "/usr", "/var/lib", "/var/log", "/var/cache", "/var/spool", "/var/mail", "/var/run", "/snap")
# Never a workspace themselves; a folder inside them may be one.
SYSTEM_FOLDERS = ("/", "/home", "/root", "/tmp", "/var", "/var/tmp", "/opt", "/srv", "/mnt", "/media")


class WorkspaceError(ValueError):
    """A folder that may not be a workspace; the message says why and what to do."""


@dataclass(frozen=True)
class WorkspacePolicy:
    owned: bool                     # folders parad's user owns may be workspaces
    roots: tuple[str, ...] = ()     # and any folder under these (resolved)
    uid: int = field(default_factory=os.geteuid)
    home: str = field(default_factory=lambda: os.path.realpath(os.path.expanduser("~")))

    def check(self, path: object) -> str:
        """`path` resolved (symlinks followed) if it may be a workspace; WorkspaceError naming why not."""
        if not isinstance(path, str) or not os.path.isabs(path):
            raise WorkspaceError(f"workspace {path!r} is not an absolute path; send the project's full path")
        real = os.path.realpath(path)
        try:
            st = os.stat(real)
        except OSError as exc:
            raise WorkspaceError(f"workspace {path!r} cannot be used: {exc.strerror}") from None
        if not os.path.isdir(real):
            raise WorkspaceError(f"workspace {path!r} is not a directory")
        if any(_within(real, r) for r in self.roots):
            return real
        if real in SYSTEM_FOLDERS or real == self.home or any(_within(real, t) for t in SYSTEM_TREES):
            raise WorkspaceError(f"workspace {real!r} is a system folder, the filesystem root or the home folder; "
                                 f"run from a project folder (e.g. ~/src/app), or list it in daemon.workspaces.roots")
        if not self.owned:
            raise WorkspaceError(f"workspace {real!r} is not under daemon.workspaces.roots "
                                 f"({', '.join(self.roots) or 'none set'}); an operator adds it there")
        if st.st_uid != self.uid:
            raise WorkspaceError(f"workspace {real!r} belongs to uid {st.st_uid}, not to parad's user (uid {self.uid}); "
                                 f"run from a folder you own, or list it in daemon.workspaces.roots")
        return real


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")
