"""Resource limits applied to a command in its child process, before exec."""

from __future__ import annotations

import resource
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """rlimits for one command; None leaves a limit as inherited."""
    cpu_seconds: int | None = None
    file_size: int | None = None
    open_files: int | None = None
    processes: int | None = None
    address_space: int | None = None
    core_dumps: bool = False

    def rlimits(self) -> list[tuple[int, int]]:
        """(resource, value) pairs; apply() sets soft == hard so a command cannot raise them."""
        pairs = []
        for res, value in (
            (resource.RLIMIT_CPU, self.cpu_seconds),
            (resource.RLIMIT_FSIZE, self.file_size),
            (resource.RLIMIT_NOFILE, self.open_files),
            (resource.RLIMIT_NPROC, self.processes),
            (resource.RLIMIT_AS, self.address_space),
        ):
            if value is not None:
                pairs.append((res, int(value)))
        if not self.core_dumps:
            pairs.append((resource.RLIMIT_CORE, 0))
        return pairs

    def inheritable(self) -> "Limits":
        """The part a long-lived parent can hold itself, for its children to inherit.

        CPU seconds accumulate per process, so a parent cannot hold a command's
        CPU limit; an address-space limit could starve the parent itself.
        """
        return Limits(file_size=self.file_size, open_files=self.open_files,
                      processes=self.processes, core_dumps=self.core_dumps)

    def apply_inheritable(self) -> None:
        """Hold the inheritable limits on the calling process (a worker, once at start)."""
        self.inheritable().apply()

    def apply(self) -> None:
        """Set the limits on the calling process (the child, after fork)."""
        for res, value in self.rlimits():
            if res == resource.RLIMIT_CPU:
                # The hard limit one second above the soft one lets the kernel
                # send SIGXCPU, which the result can attribute, before SIGKILL.
                resource.setrlimit(res, (value, value + 1))
            else:
                resource.setrlimit(res, (value, value))
