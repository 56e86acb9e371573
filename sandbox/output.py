"""Capped capture of one output stream: head and tail kept around a marker."""

from __future__ import annotations


class CappedBuffer:
    """Keeps at most `cap` bytes: the first half and the last half of the stream.

    `total` counts every byte seen, so a result can report the full size even
    when the middle was dropped.
    """

    __slots__ = ("cap", "_head", "_tail", "total")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0

    def write(self, data: bytes) -> None:
        self.total += len(data)
        head_room = self.cap - self.cap // 2 - len(self._head)
        if head_room > 0:
            self._head += data[:head_room]
            data = data[head_room:]
        if data:
            self._tail += data
            keep = self.cap // 2
            if len(self._tail) > keep:
                del self._tail[: len(self._tail) - keep]

    @property
    def truncated(self) -> bool:
        return self.total > self.cap

    def getvalue(self) -> bytes:
        if not self.truncated:
            # One copy: head + tail would build a bytearray first (rg's output can be 100s of MB).
            return b"".join((self._head, self._tail))
        dropped = self.total - len(self._head) - len(self._tail)
        marker = f"\n[... para: {dropped} bytes truncated ...]\n".encode()
        return bytes(self._head) + marker + bytes(self._tail)
