"""para.testing: start a real parad for tests and benchmarks, and wait for conditions with deadlines.

No pytest here (benchmarks use it too): a wait that times out raises
WaitTimeout, a parad that fails to start or stop cleanly raises DaemonError.
"""

from para.testing.clients import silent_client
from para.testing.daemon import (
    ALL_POOLS, FAST, Daemon, DaemonError, bad_frames, only_pools, paractl, paractl_argv, stop_and_check,
)
from para.testing.filesystems import mount_tmpfs, unmount
from para.testing.paths import bwrap_closed_to_run_as, open_to_others
from para.testing.processes import alive, daemons_serving, marked
from para.testing.wait import WaitTimeout, running, wait_running, wait_until

__all__ = [
    "mount_tmpfs", "unmount",
    "ALL_POOLS", "FAST", "Daemon", "DaemonError", "WaitTimeout", "alive", "bad_frames", "daemons_serving", "marked",
    "only_pools", "open_to_others", "paractl", "paractl_argv", "running", "silent_client", "stop_and_check", "wait_running", "wait_until",
    "bwrap_closed_to_run_as",
]
