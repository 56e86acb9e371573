"""sd_notify: READY, STATUS, STOPPING and WATCHDOG pings for systemd.

Uses systemd-python when installed; otherwise writes the datagram to
$NOTIFY_SOCKET itself (the protocol is one line per field), so parad runs the
same with or without libsystemd.
"""

from __future__ import annotations

import os
import socket

try:
    from systemd import daemon as _sd  # type: ignore[import-not-found]
except ImportError:  # systemd-python needs libsystemd headers to build
    _sd = None


def notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1\\nSTATUS=serving"); False when not under systemd."""
    if _sd is not None:
        return bool(_sd.notify(state))
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(state.encode(), path)
        except OSError:
            return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half systemd's WatchdogSec), or None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 2_000_000
