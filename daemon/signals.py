"""Signals as loop events: handlers do nothing but wake the poll loop.

signal.set_wakeup_fd writes each signal's number to a pipe the loop polls, so
no logging or state change ever happens inside a handler.
"""

from __future__ import annotations

import os
import signal

HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)


class SignalPipe:
    def __init__(self) -> None:
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        for sig in HANDLED:
            signal.signal(sig, _noop)

    def fileno(self) -> int:
        return self._r

    def read(self) -> list[signal.Signals]:
        """The signals that arrived since the last call, in order."""
        out = []
        try:
            while data := os.read(self._r, 256):
                out.extend(signal.Signals(b) for b in data)
        except BlockingIOError:
            pass
        return out

    def close(self) -> None:
        # The handlers stay: a stop signal arriving during the (bounded) final
        # cleanup must not kill the daemon before it removed its sockets.
        signal.set_wakeup_fd(-1)
        os.close(self._r)
        os.close(self._w)


def _noop(signum: int, frame: object) -> None:
    pass
