"""ZeroMQ socket setup and the few socket operations on every message's path, shared by daemon,
workers and clients.

pyzmq's friendly forms cost more than the message they carry on the paths that matter here
(a run() crosses four sockets): `get(EVENTS)` and `recv_multipart` look each option up as an
enum (two Python calls a lookup, each time), and the Python `send` wrapper checks arguments
these callers never pass. The functions below do the same with pyzmq's compiled calls only.
"""

from __future__ import annotations

import zmq
from zmq.backend import Socket as _BaseSocket
from zmq.backend import zmq_poll

# Plain ints: ORing zmq's IntFlags makes an enum member per call.
NOBLOCK, MORE_NOBLOCK = int(zmq.NOBLOCK), int(zmq.SNDMORE | zmq.NOBLOCK)
_POLLIN = int(zmq.POLLIN)
_send = _BaseSocket.send
_recv = _BaseSocket.recv


def make_socket(ctx: zmq.Context, kind: int, *, hwm: int | None = None, identity: bytes | None = None) -> zmq.Socket:
    """A socket that never blocks close (LINGER 0) and, optionally, a bounded queue."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if hwm is not None:
        sock.setsockopt(zmq.SNDHWM, hwm)
        sock.setsockopt(zmq.RCVHWM, hwm)
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity)
    return sock


def has_message(sock: zmq.Socket) -> bool:
    """Whether a message waits on `sock` (as `sock.get(zmq.EVENTS) & zmq.POLLIN`, which asks EVENTS too)."""
    if sock.closed:   # zmq_poll would take a closed socket's item for descriptor 0
        raise zmq.ZMQError(zmq.ENOTSOCK)
    return bool(zmq_poll([(sock, _POLLIN)], 0))


def recv_message(sock: zmq.Socket, routed: bool) -> list[bytes]:
    """The next message's frames, never blocking (zmq.Again if none waits). `routed`: a ROUTER's,
    whose first frame ZeroMQ itself puts there (the sender's identity), so more always follow it;
    whether more follow a sender's own frame only the frame can say (as RCVMORE would)."""
    frames = [_recv(sock, NOBLOCK)] if routed else []
    while True:
        frame = _recv(sock, NOBLOCK, False)   # a whole message arrives at once: only its first frame may be missing
        frames.append(frame.bytes)
        if not frame.more:
            return frames


def send_pair(sock: zmq.Socket, first: bytes, second: bytes) -> None:
    """A two-frame message (a ROUTER's peer and what it is sent, or a topic and its event), never
    blocking: zmq.Again if it cannot be queued, ZMQError if a ROUTER cannot route it. A full queue
    or an unknown peer refuses the first frame, so no half message is left."""
    _send(sock, first, MORE_NOBLOCK)
    _send(sock, second, NOBLOCK)


def send_frame(sock: zmq.Socket, frame: bytes, flags: int = 0) -> None:
    """One frame, as `sock.send(frame, flags)`."""
    _send(sock, frame, flags)
