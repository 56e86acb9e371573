"""Keep the caller's folder off sys.path in para's own processes.

parad, its fork server and its workers import para and its dependencies
(zmq, msgpack, pydantic, the standard library) by module name. A path entry
that means "the current directory", or a PYTHONPATH entry inside it (a
project's `PYTHONPATH=src`), lets a project's `random.py`, `typing.py` or
`zmq/` stand in for them, outside any sandbox. Every para process is
started with `python -P` (no script or current directory prepended); this
check at each entry point catches a start that forgot, and the PYTHONPATH
entries the caller's folder holds. `safe_pythonpath` filters the variable
itself for the environments para hands its children.
"""

import os
import sys


def drop_caller_paths() -> None:
    """Remove the sys.path entries that mean the current directory or come from PYTHONPATH inside it.

    Absolute entries outside the cwd (site-packages, PYTHONPATH's other dirs)
    stay: an editable or PYTHONPATH install of para may need them. Relative
    entries go when they name a directory, since they resolve against the
    cwd; path-hook tokens (setuptools' editable finder) are no directory and
    stay. Only os and sys are imported here (no __future__ either): both are
    loaded before any path entry is consulted.
    """
    cwd = _cwd()
    from_caller = {os.path.realpath(os.path.join(cwd, e)) for e in _caller_entries(os.environ.get("PYTHONPATH"), cwd)}
    sys.path[:] = [entry for entry in sys.path
                   if not _from_caller(entry, cwd) and not (os.path.isabs(entry) and os.path.realpath(entry) in from_caller)]


def safe_pythonpath(value: str | None) -> str | None:
    """PYTHONPATH without the entries that are relative or lie inside the cwd; None when none is left.

    The interpreter's own dirs and the one para is imported from stay, even
    when the cwd is an ancestor of them (cwd / or a home holding a pyenv).
    """
    if not value:
        return None
    caller = set(_caller_entries(value, _cwd()))
    kept = [entry for entry in value.split(os.pathsep) if entry not in caller]
    return os.pathsep.join(kept) or None


def _cwd() -> str | None:
    try:
        return os.path.realpath(os.getcwd())
    except OSError:  # the cwd was removed: no entry can resolve to it
        return None


def _caller_entries(value: str | None, cwd: str | None) -> list[str]:
    """The entries of a PYTHONPATH value that the caller's folder decides."""
    if not value:
        return []
    prefixes, para_entries = _own_dirs()
    caller = []
    for entry in value.split(os.pathsep):
        if not os.path.isabs(entry):
            caller.append(entry)   # "" and relative entries mean the cwd or something in it
            continue
        real = os.path.realpath(entry)
        own = real in para_entries or any(_inside(real, d) for d in prefixes)
        if cwd is not None and _inside(real, cwd) and not own:
            caller.append(entry)
    return caller


def _own_dirs() -> tuple[set[str], set[str]]:
    """The interpreter's prefixes (all inside them is its own) and the entries para itself is imported from."""
    prefixes = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix}
    para = sys.modules.get("para")
    entries = {os.path.dirname(path) for path in getattr(para, "__path__", [])}
    return {os.path.realpath(d) for d in prefixes if d}, {os.path.realpath(d) for d in entries if d}


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _from_caller(entry: str, cwd: str | None) -> bool:
    if entry in ("", "."):
        return True
    if not os.path.isabs(entry):
        return os.path.isdir(entry)
    return cwd is not None and os.path.realpath(entry) == cwd
