"""The descriptors a worker's loop polls, registered per owner and changed only where they changed.

A worker drives many commands; each owns a few descriptors (its pipes, its
pidfd, its stdin while input waits). Rebuilding the whole poll set every
turn costs a registration per descriptor per turn; here an owner's set is
diffed against what it had, so a turn pays only for what changed.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

import zmq


class PollSet:
    def __init__(self) -> None:
        self.poller = zmq.Poller()
        self._owned: dict[Hashable, frozenset[tuple[object, int]]] = {}
        self.owner_of: dict[object, Hashable] = {}   # descriptor -> whose it is

    def set(self, owner: Hashable, wanted: Iterable[tuple[object, int]]) -> None:
        """`owner` now wants exactly `wanted` ((socket or fd, POLLIN/POLLOUT) pairs) polled."""
        new = frozenset(wanted)
        old = self._owned.get(owner, frozenset())
        if new == old:
            return
        for fd, _ in old - new:
            # A closed descriptor's number may already be another owner's: leave that one be.
            if self.owner_of.get(fd) == owner and not any(fd == f for f, _ in new):
                self.poller.unregister(fd)
                del self.owner_of[fd]
        for fd, flags in new - old:
            self.poller.register(fd, flags)   # registering again changes the flags
            self.owner_of[fd] = owner
        if new:
            self._owned[owner] = new
        else:
            self._owned.pop(owner, None)

    def drop(self, owner: Hashable) -> None:
        self.set(owner, ())

    def poll(self, timeout_ms: int) -> list[tuple[object, int]]:
        return self.poller.poll(timeout_ms)
