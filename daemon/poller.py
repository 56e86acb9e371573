"""parad's wait for work: one epoll over its ZeroMQ sockets' notification descriptors and plain descriptors.

zmq.Poller (zmq_poll) asks every ZeroMQ socket for its EVENTS before and
after each wait, two system calls a socket, whether or not anything came
for it: about thirty calls a loop turn with seven sockets. Here one epoll
waits, and only a socket whose descriptor fired is asked.

A socket's descriptor (ZMQ_FD) does not say a message waits: it says the
socket got news (its mailbox has commands) and EVENTS should be asked; asking,
and any other operation on the socket (a send, a receive, a bind), reads the
news and quiets the descriptor, messages or not. So a socket can hold
messages with a quiet descriptor, in exactly these cases, each of which the
loop reports with `recheck` (or `readable`, which asks and reports):

- a drain stopped at its per-turn limit with messages left;
- the loop sent on the socket;
- something asked its EVENTS and saw a message.

Before each wait the sockets reported are asked; if one holds a message the
wait does not block. A socket last asked, or last read until empty, with no
operation since, fires its descriptor when the next message comes.
"""

from __future__ import annotations

import select

import zmq

from para.ipc.sockets import has_message

_FD = int(zmq.FD)


class Poller:
    """Waits on ZeroMQ sockets and plain descriptors; see the module docstring."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._sockets: dict[int, zmq.Socket] = {}   # a socket's notification descriptor -> the socket
        self._recheck: set[zmq.Socket] = set()

    def add_socket(self, sock: zmq.Socket) -> None:
        """Wait for messages on a ZeroMQ socket."""
        fd = sock.get(_FD)
        self._sockets[fd] = sock
        self._epoll.register(fd, select.EPOLLIN)
        self._recheck.add(sock)   # it may hold messages already

    def add_fd(self, fd: int) -> None:
        """Wait for a plain descriptor to be readable."""
        self._epoll.register(fd, select.EPOLLIN)

    def remove_fd(self, fd: int) -> None:
        try:
            self._epoll.unregister(fd)
        except OSError:
            pass   # closed already, which took it out of the epoll

    def recheck(self, sock: zmq.Socket) -> None:
        """`sock` may hold a message its descriptor will not announce: ask it before the next wait."""
        self._recheck.add(sock)

    def readable(self, sock: zmq.Socket) -> bool:
        """Whether a message waits on `sock` (asking may quiet its descriptor: a yes is rechecked)."""
        if has_message(sock):
            self._recheck.add(sock)
            return True
        return False

    def poll(self, timeout_ms: int) -> set[object]:
        """The sockets holding a message and the descriptors readable, waiting at most `timeout_ms`
        (not at all while a socket reported to `recheck` holds one)."""
        ready: set[object] = set()
        if self._recheck:
            for sock in self._recheck:
                if has_message(sock):
                    ready.add(sock)
            self._recheck.clear()
        sockets = self._sockets
        for fd, _ in self._epoll.poll(0 if ready else timeout_ms / 1000):
            sock = sockets.get(fd)
            if sock is None:
                ready.add(fd)
            elif sock not in ready and has_message(sock):
                ready.add(sock)
        return ready

    def close(self) -> None:
        self._epoll.close()
