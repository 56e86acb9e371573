"""Keep the caller's folder off sys.path in para's own processes.

parad, its fork server and its workers import para and its dependencies
(zmq, msgpack, pydantic, the standard library) by module name. A path entry
that means "the current directory" lets a project's `random.py`, `typing.py`
or `zmq/` stand in for them, outside any sandbox. Every para process is
started with `python -P` (no script or current directory prepended); this
check at each entry point catches a start that forgot, and relative entries
(from PYTHONPATH), which the current directory decides the meaning of.
"""

import os
import sys


def drop_caller_paths() -> None:
    """Remove the sys.path entries that mean the current directory.

    Absolute entries other than the cwd itself (site-packages, PYTHONPATH's
    absolute dirs) stay: an editable or PYTHONPATH install of para may need
    them. Relative entries go when they name a directory, since they resolve
    against the cwd; path-hook tokens (setuptools' editable finder) are no
    directory and stay. Only os and sys are imported here (no __future__
    either): both are loaded before any path entry is consulted.
    """
    try:
        cwd = os.path.realpath(os.getcwd())
    except OSError:  # the cwd was removed: no entry can resolve to it
        cwd = None
    sys.path[:] = [entry for entry in sys.path if not _from_caller(entry, cwd)]


def _from_caller(entry: str, cwd: str | None) -> bool:
    if entry in ("", "."):
        return True
    if not os.path.isabs(entry):
        return os.path.isdir(entry)
    return cwd is not None and os.path.realpath(entry) == cwd
