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
