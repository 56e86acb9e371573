"""A small filesystem of a test's own, to fill up: a tmpfs mounted on a folder, unmounted after."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def mount_tmpfs(where: Path, size: str = "3m") -> str | None:
    """Mount a tmpfs of `size` on `where` (made if missing); None, or why it cannot be done here
    (not root, no CAP_SYS_ADMIN, no mount(8)): the caller skips, saying so."""
    where.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        return "no mount(8) here to make a small filesystem"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        return f"cannot mount a {size} tmpfs (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}"
    return None


def unmount(where: Path) -> None:
    """Unmount what mount_tmpfs mounted; lazily if it is still in use."""
    if subprocess.run(["umount", str(where)]).returncode != 0:
        subprocess.run(["umount", "-l", str(where)], check=True)
