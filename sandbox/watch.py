"""Memory and process limits enforced by sampling, where no cgroup enforces them.

The owner calls `check()` every `interval` seconds while a command runs. It
counts the command's own processes and sums their resident memory. A worker
drives several commands at once, so "everything below the worker" is not one
command's: the caller says which processes are (Command asks its Family, see
family.py), and a sibling's processes never count against another's limit.
Sampling can overshoot by what a command allocates or forks within one
interval; a cgroup (memory.max, pids.max) has no such window.
"""

from __future__ import annotations

import os
from collections.abc import Callable

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass  # exited between the scan and the read
    return total


class TreeWatch:
    """Which limit, if any, a command's processes have passed."""

    __slots__ = ("memory", "processes", "interval")

    def __init__(self, memory: int | None, processes: int | None, interval: float = 0.05) -> None:
        self.memory = memory
        self.processes = processes
        self.interval = interval

    @property
    def active(self) -> bool:
        return self.memory is not None or self.processes is not None

    def check(self, members: Callable[[int | None], list[int]]) -> str | None:
        """`members(more_than)` lists the command's processes; it may stop once it has found more than `more_than`."""
        # Past the process limit the count is all that matters: stop walking there.
        pids = members(self.processes)
        if self.processes is not None and len(pids) > self.processes:
            return "pids"
        if self.memory is not None and rss_bytes(pids) > self.memory:
            return "memory"
        return None
