"""Starting a per-user parad in the background when none answers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

from para.client.errors import DaemonUnavailable
from para.ipc.endpoints import Endpoints


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "para"


def daemon_running(endpoints: Endpoints) -> bool:
    """Whether the parad named in the runtime dir's lock file is alive.

    Reading the pid (rather than probing the flock) cannot make a starting
    parad lose its own lock race. A socket without a live owner is stale.
    """
    try:
        pid = int(endpoints.lock_path.read_text().strip() or 0)
    except (OSError, ValueError):
        return False
    if pid <= 0 or not _alive(pid):
        return False
    return endpoints.control_path.exists()


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie (a dead parad its starter has not reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def _open_log(path: Path, endpoints: Endpoints) -> BinaryIO:
    """parad's log, appended to; a path that cannot be made is DaemonUnavailable naming it."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return open(path, "ab")
    except OSError as exc:
        raise DaemonUnavailable(
            f"cannot start parad: cannot create its log file {path}: {exc.strerror}; make {path.parent} a "
            f"writable directory or set XDG_STATE_HOME to one", str(endpoints.control_path)) from None


def _daemon_env() -> dict[str, str]:
    """Our environment, less the PYTHONPATH entries the caller's folder decides (a project's `src`)."""
    from para.daemon.safe_path import safe_pythonpath   # here: importing para.client stays thin

    env = dict(os.environ)
    pythonpath = safe_pythonpath(env.pop("PYTHONPATH", None))
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


def start_daemon(endpoints: Endpoints, timeout: float = 20.0) -> None:
    """Launch `parad --runtime-dir DIR` detached and wait until its socket exists.

    Two clients racing to start one is fine: the loser exits because the
    winner holds the runtime directory's lock, and both connect to the winner.
    """
    log_path = state_dir() / "parad.log"
    with _open_log(log_path, endpoints) as log:
        proc = subprocess.Popen(
            # -P: the caller's folder (our cwd, which parad keeps as its own) is not
            # on parad's sys.path, so no project file can stand in for a module.
            [sys.executable, "-P", "-m", "para.daemon", "--runtime-dir", str(endpoints.runtime_dir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=_daemon_env(),
            start_new_session=True, close_fds=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon_running(endpoints):
            return
        if proc.poll() is not None and not endpoints.lock_path.exists():
            raise DaemonUnavailable(
                f"parad exited with code {proc.returncode} while starting; see {log_path}",
                str(endpoints.control_path))
        time.sleep(0.02)
    raise DaemonUnavailable(
        f"parad did not create {endpoints.control_path} within {timeout:g}s; see {log_path}",
        str(endpoints.control_path))
