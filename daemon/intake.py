"""Decode-or-count: how every frame a peer sends parad gets in, or does not.

A frame that does not decode, is not a message the socket expects, or has a
field of the wrong type is dropped here (client sockets answer it with an
ErrorReply instead, in clients.py) and counted per socket in
para_bad_frames_total. One bad frame costs that frame, never the loop.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from typing import Any

from para.ipc import codec, shapes

log = logging.getLogger("parad")

# Every socket a frame can enter by, so the metric shows each one from the start.
SOCKETS = ("control", "relay", "worker_command", "worker_event", "worker_data", "worker_error",
           "worker_metrics", "forkserver")
WARN_EVERY = 10.0   # seconds between warnings per socket: a flood of bad frames must not flood the log


class Intake:
    def __init__(self) -> None:
        self.bad: collections.Counter[str] = collections.Counter({s: 0 for s in SOCKETS})
        self._warned: dict[str, float] = {}

    def decode(self, socket: str, frame: bytes, expected: tuple[type, ...]) -> Any:
        """The message in `frame` if it is one of `expected` and well-formed; else None, counted."""
        try:
            message = codec.decode(frame)
            shapes.check(message, expected)
        except codec.ProtocolError as exc:
            self.drop(socket, str(exc))
            return None
        return message

    def split(self, socket: str, frame: bytes) -> list[bytes]:
        """The frames inside a batch frame; none (counted) if it is malformed."""
        try:
            return codec.split(frame)
        except codec.ProtocolError as exc:
            self.drop(socket, str(exc))
            return []

    def guard(self, socket: str, handler: Callable[[list[bytes]], None]) -> Callable[[list[bytes]], None]:
        """`handler`, except that what it raises costs the frame it was handling, counted, not the loop."""
        def guarded(frames: list[bytes]) -> None:
            try:
                handler(frames)
            except Exception as exc:  # a bug, or a value no check foresaw: log it, go on
                self.drop(socket, f"parad failed on it ({type(exc).__name__}: {exc})", trace=True)
        return guarded

    def drop(self, socket: str, why: str, trace: bool = False) -> None:
        """Count a bad frame on `socket`; warn now and then, saying why."""
        self.bad[socket] += 1
        now = time.monotonic()
        if now - self._warned.get(socket, -WARN_EVERY) >= WARN_EVERY:
            self._warned[socket] = now
            log.warning("bad frame on %s (%d so far): %s", socket, self.bad[socket], why, exc_info=trace)
        else:
            log.debug("bad frame on %s: %s", socket, why)
