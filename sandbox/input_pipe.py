"""A command's stdin as a pipe fed as input arrives, written without blocking.

The owner's poll loop waits for `fd` to be writable while `wants_write()`,
and calls `write()` then. What was fed and not yet written waits here; the
owner's flow control (a window of unacknowledged bytes) bounds it. A command
that does not read its stdin fills the pipe and leaves the rest waiting:
`written` stops growing, so no acknowledgement goes back and the sender stops.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable


class InputPipe:
    """The write end of a command's stdin; `written` bytes went into it, `closed` once it takes no more."""

    def __init__(self, fd: int, on_close: Callable[[int], None] | None = None) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self._on_close = on_close   # told just before the close, as Command's owner is
        self.written = 0
        self.dropped = 0          # bytes fed after it closed (the command had closed its stdin)
        self.closed = False
        self._pending: collections.deque[memoryview] = collections.deque()
        self._eof = False

    @property
    def pending(self) -> int:
        return sum(len(p) for p in self._pending)

    def feed(self, data: bytes, eof: bool = False) -> None:
        """Queue `data` (then EOF, if asked) and write what the pipe takes now."""
        if self.closed:
            self.dropped += len(data)
            return
        if data:
            self._pending.append(memoryview(data))
        self._eof = self._eof or eof
        self.write()

    def wants_write(self) -> bool:
        return not self.closed and bool(self._pending)

    def write(self) -> None:
        """Write what the pipe takes without blocking; close it after EOF, or when the command closed its end."""
        while self._pending:
            head = self._pending[0]
            try:
                n = os.write(self.fd, head)
            except BlockingIOError:
                return
            except OSError:   # EPIPE: nothing reads it any more
                self.dropped += sum(len(p) for p in self._pending)
                self._pending.clear()
                self.close()
                return
            self.written += n
            if n == len(head):
                self._pending.popleft()
            else:
                self._pending[0] = head[n:]
        if self._eof:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._on_close is not None:
                self._on_close(self.fd)
            os.close(self.fd)
