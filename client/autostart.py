"""Starting a per-user parad in the background when none answers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from para.client.errors import DaemonUnavailable
from para.ipc.endpoints import Endpoints


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "para"


def start_daemon(endpoints: Endpoints, timeout: float = 20.0) -> None:
    """Launch `parad --runtime-dir DIR` detached and wait until its socket exists.

    Two clients racing to start one is fine: the loser exits because the
    winner holds the runtime directory's lock, and both connect to the winner.
    """
    log_dir = state_dir()
    log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    log_path = log_dir / "parad.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "para.daemon", "--runtime-dir", str(endpoints.runtime_dir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True, close_fds=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if endpoints.control_path.exists():
            return
        if proc.poll() is not None and not endpoints.lock_path.exists():
            raise DaemonUnavailable(
                f"parad exited with code {proc.returncode} while starting; see {log_path}",
                str(endpoints.control_path))
        time.sleep(0.02)
    raise DaemonUnavailable(
        f"parad did not create {endpoints.control_path} within {timeout:g}s; see {log_path}",
        str(endpoints.control_path))
