"""Raw clients that behave as no para client would, for tests of parad's bounds."""

from __future__ import annotations

from pathlib import Path

import zmq


def silent_client(ctx: zmq.Context, runtime_dir: Path) -> zmq.Socket:
    """A DEALER on parad's control socket that has stopped reading: its own side takes in one message and no more."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 1)
    sock.connect(f"ipc://{runtime_dir}/control.sock")
    return sock
