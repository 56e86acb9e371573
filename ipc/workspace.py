"""What both ends agree a workspace can never be: the filesystem root, the home
folder itself and system folders.

The daemon refuses them (daemon/workspaces.py); the client never proposes one
as a default (client/context.py), so a command typed in /etc or ~ runs in the
pool's default workspace instead of being refused.
"""

from __future__ import annotations

import os

# Never a workspace, nor anything inside them.
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run", "/sbin",
                "/sys", "/usr", "/var/lib", "/var/log", "/var/cache", "/var/spool", "/var/mail", "/var/run", "/snap")
# Never a workspace themselves; a folder inside them may be one.
SYSTEM_FOLDERS = ("/", "/home", "/root", "/tmp", "/var", "/var/tmp", "/opt", "/srv", "/mnt", "/media")


def within(path: str, root: str) -> bool:
    """Whether `path` is `root` or lies under it (both normalized, absolute)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def never_a_workspace(path: str, home: str | None = None) -> bool:
    """Whether `path` (resolved) is the root, the home folder `home` (default: this process's) or a system folder."""
    home = home if home is not None else os.path.realpath(os.path.expanduser("~"))
    return path in SYSTEM_FOLDERS or path == home or any(within(path, tree) for tree in SYSTEM_TREES)
