"""What a worker's loop waits on, registered per owner and changed only where it changed.

A worker drives many commands; each owns a few descriptors (its pipes, its
pidfd, its stdin while input waits) that come and go as it runs. They live
in an epoll, whose own descriptor the ZeroMQ poller watches beside the
worker's sockets: epoll adds and removes in constant time, where
`zmq.Poller.unregister` walks its whole list (about 30 us a descriptor with
32 commands running). An owner's set is diffed against what it had, so a
turn pays only for what changed.
"""

from __future__ import annotations

import select
from collections.abc import Hashable, Iterable

import zmq

_EPOLL_FLAGS = {zmq.POLLIN: select.EPOLLIN, zmq.POLLOUT: select.EPOLLOUT}


class PollSet:
    def __init__(self) -> None:
        self._sockets = zmq.Poller()
        self._epoll = select.epoll()
        self._sockets.register(self._epoll.fileno(), zmq.POLLIN)
        self._owned: dict[Hashable, frozenset[tuple[object, int]]] = {}
        self.owner_of: dict[object, Hashable] = {}   # socket or descriptor -> whose it is

    def set(self, owner: Hashable, wanted: Iterable[tuple[object, int]]) -> None:
        """`owner` now wants exactly `wanted` polled: (ZeroMQ socket or descriptor, POLLIN or POLLOUT) pairs."""
        new = frozenset(wanted)
        old = self._owned.get(owner, frozenset())
        if new == old:
            return
        kept = {fd for fd, _ in new}
        for fd, _ in old - new:
            # A closed descriptor's number may already be another owner's: leave that one be.
            if fd not in kept and self.owner_of.get(fd) == owner:
                del self.owner_of[fd]
                self._forget(fd)
        for fd, flags in new - old:
            self._watch(fd, flags)
            self.owner_of[fd] = owner
        if new:
            self._owned[owner] = new
        else:
            self._owned.pop(owner, None)

    def drop(self, owner: Hashable) -> None:
        self.set(owner, ())

    def closing(self, fd: int) -> None:
        """Descriptor `fd` is about to be closed: no longer polled, for whichever owner had it.

        Called before the close, not after: the file of a closed descriptor
        outlives it while a copy does (a child between its spawn and its exec
        holds all of ours), and its epoll entry with it, reporting a number
        that is no descriptor of ours, or another's by then.
        """
        owner = self.owner_of.pop(fd, None)
        if owner is None:
            return
        left = frozenset(pair for pair in self._owned[owner] if pair[0] != fd)
        if left:
            self._owned[owner] = left
        else:
            del self._owned[owner]
        self._forget(fd)

    def poll(self, timeout_ms: int) -> list[tuple[object, int]]:
        """The sockets and descriptors ready within `timeout_ms`, as (socket or descriptor, events)."""
        ready = []
        for sock, events in self._sockets.poll(timeout_ms):
            if sock == self._epoll.fileno():
                ready += self._epoll.poll(0)
            else:
                ready.append((sock, events))
        return ready

    def close(self) -> None:
        self._epoll.close()

    def _watch(self, fd: object, flags: int) -> None:
        if not isinstance(fd, int):
            self._sockets.register(fd, flags)   # registering again changes the flags
            return
        try:
            self._epoll.register(fd, _EPOLL_FLAGS[flags])
        except FileExistsError:
            self._epoll.modify(fd, _EPOLL_FLAGS[flags])

    def _forget(self, fd: object) -> None:
        if not isinstance(fd, int):
            self._sockets.unregister(fd)
            return
        try:
            self._epoll.unregister(fd)
        except OSError:
            pass   # closed already, which took it out of the epoll
