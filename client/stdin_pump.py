"""A file read as its data arrives, in a thread, for Client.stream(future, stdin=...).

Why a thread: the file is usually the caller's stdin, whose open file
description the caller's shell and its other processes share. Making it
non-blocking (O_NONBLOCK is set on that shared description) would change it
under them, and a regular file always polls readable anyway. A blocking
read in a thread works for pipes, files and sockets alike. The thread holds
at most DEPTH chunks: while they wait for the task's input window, it stops
reading, and whatever writes into the pipe blocks.

The client's own thread waits on its socket and on `fileno()`, a pipe the
reader writes a byte to after each chunk, so it wakes for new input.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import BinaryIO

from para.ipc.channels import INPUT_CHUNK

DEPTH = 4   # chunks read ahead of the input window


class StdinPump:
    """Reads `source` (a binary file or a descriptor) until EOF; `take()` gives chunks, b"" at EOF."""

    def __init__(self, source: BinaryIO | int) -> None:
        self._fd = source if isinstance(source, int) else source.fileno()
        self._chunks: queue.Queue[bytes] = queue.Queue(DEPTH)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._lock = threading.Lock()
        self._closed = False
        self.held: bytes | None = None   # taken, not yet sent (the window was full)
        threading.Thread(target=self._read, name="para-stdin", daemon=True).start()

    def fileno(self) -> int:
        """Readable when a chunk may be waiting (drain it with clear())."""
        return self._wake_r

    def _read(self) -> None:
        while not self._closed:
            try:
                data = os.read(self._fd, INPUT_CHUNK)
            except OSError:
                data = b""   # an unreadable stdin ends like an empty one
            while not self._closed:
                try:
                    self._chunks.put(data, timeout=0.5)   # the timeout only lets close() end the thread
                    break
                except queue.Full:
                    continue
            with self._lock:
                if not self._closed:
                    try:
                        os.write(self._wake_w, b"\0")
                    except BlockingIOError:
                        pass   # a wake-up is pending already
            if not data:
                return

    def clear(self) -> None:
        try:
            os.read(self._wake_r, 4096)
        except BlockingIOError:
            pass

    def ready(self) -> bool:
        """Whether a chunk (or EOF) waits to be sent."""
        return self.held is not None or not self._chunks.empty()

    def take(self) -> bytes | None:
        """The next chunk to send (b"" at EOF), or None if none has arrived."""
        if self.held is not None:
            chunk, self.held = self.held, None
            return chunk
        try:
            return self._chunks.get_nowait()
        except queue.Empty:
            return None

    def close(self) -> None:
        """Stop: the thread ends after its current read (it may still take one chunk of the file)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self._wake_r)
            os.close(self._wake_w)
