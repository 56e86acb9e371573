"""What another user can reach: tests that drop to one (nobody, a throwaway user) ask first."""

from __future__ import annotations

import os
from pathlib import Path


def open_to_others(path: str | Path) -> bool:
    """Whether a user of no group of ours can get to `path`: every folder above its real path
    (links followed, as exec and open follow them) searchable by others. A file under a 0700
    /root is not, whatever its own mode."""
    real = Path(os.path.realpath(path))
    return all(os.stat(folder).st_mode & 0o001 for folder in real.parents)


def bwrap_closed_to_run_as() -> str | None:
    """Why a command run as a pool's run_as user (as root) cannot start the bubblewrap para uses,
    as a task's own policy has it do inside the worker's sandbox; None when it can, or we are not root."""
    if os.geteuid() != 0:
        return None
    from para.sandbox import bwrap
    found = bwrap.path()
    if found is None or open_to_others(found):
        return None
    return (f"a run_as user cannot reach {found} (a folder above it is closed to other users, e.g. a 0700 "
            f"/root), and a task's own policy starts it as that user")
