"""A parad of a bench's own, with a given config, in a temporary directory (para.testing's Daemon)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from para.testing import Daemon, DaemonError


def start(tmp: Path, config: dict[str, Any], deadline: float = 60.0) -> Daemon:
    """Start parad on `config` (sockets in tmp/r) and wait until every pool has min_workers ready.

    `python -P`: the bench's own folder (peers.py, floor.py, ...) must not shadow what parad imports.
    The status that showed it ready is the Daemon's `status`.
    """
    try:
        return Daemon(config, tmp, runtime_dir=tmp / "r", python_flags=("-P",), ready_timeout=deadline)
    except DaemonError as exc:
        raise SystemExit(str(exc)) from None


def stop(daemon: Daemon, timeout: float) -> None:
    """SIGTERM parad; after `timeout` s kill it and say so."""
    try:
        daemon.stop(timeout)
    except DaemonError as exc:
        raise SystemExit(str(exc)) from None
