"""ZeroMQ socket setup shared by daemon, workers and clients."""

from __future__ import annotations

import zmq


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
