"""Which folders of a caller's PATH a private /tmp would hide: a virtualenv under /tmp, say.

A command runs with its caller's PATH (sandbox/environment.py), but its
sandbox has an empty /tmp of its own, so `pytest` from a venv made under
/tmp (outside the project, which is bound in) would be "command not found".
Those folders are bound read-only into the sandbox of the worker made for a
workspace; a venv is kept whole (its bin/ is nothing without its lib/).
"""

from __future__ import annotations

import os

TMP = "/tmp"


def hidden_by_private_tmp(path: str | None, workspace: str | None) -> list[str]:
    """The folders, resolved, that PATH `path` needs under /tmp and outside `workspace`."""
    found: dict[str, None] = {}
    for entry in (path or "").split(":"):
        if not os.path.isabs(entry):
            continue
        real = os.path.realpath(entry)
        if not _within(real, TMP) or real == TMP or (workspace and _within(real, workspace)) or not os.path.isdir(real):
            continue
        parent = os.path.dirname(real)
        keep = parent if parent != TMP and os.path.isfile(os.path.join(parent, "pyvenv.cfg")) else real
        found[keep] = None
    return list(found)


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")
