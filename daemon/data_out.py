"""What a worker sends parad on its data channel: output, input acks and results, many to a frame.

Everything ready in a turn of the worker's loop waits here and leaves at its
end (`flush`), with no wait for more. The channel's high-water mark counts
frames, so a frame holds at most one pipe read's worth (a bigger result goes
alone): what a worker has in flight toward parad stays DATA_HWM reads,
however many commands it drives. Output read in one turn is bounded too
(`turn_full`): with many commands readable at once, the rest waits in their
pipes, and the level-triggered poll brings it back next turn.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

from para.ipc import codec
from para.ipc.channels import DATA_HWM
from para.sandbox.command import READ_SIZE

BATCH_BYTES = READ_SIZE   # most bytes of output or results packed into one data frame
TURN_BYTES = 4 << 20      # output read in one turn, at most, before it is sent


class DataOut:
    def __init__(self, send: Callable[[list[bytes], bool], bool]) -> None:
        self._send = send   # (encoded messages, block) -> False when the channel is full
        self.backlog: collections.deque[bytes] = collections.deque()
        self.turn_bytes = 0   # output read this turn, not sent yet

    def add(self, msg: Any) -> None:
        self.backlog.append(codec.encode(msg))

    def output_read(self, size: int) -> None:
        self.turn_bytes += size

    @property
    def turn_full(self) -> bool:
        return self.turn_bytes >= TURN_BYTES

    @property
    def room(self) -> bool:
        """Whether a sync tool's next answer may join the backlog."""
        return len(self.backlog) < DATA_HWM

    def flush(self, block: bool = False) -> bool:
        """Send what waits, many per frame; False while the channel is full and some still waits."""
        backlog = self.backlog
        while backlog:
            batch, size = [], 0
            for frame in backlog:
                if batch and (size + len(frame) > BATCH_BYTES or len(batch) >= codec.BATCH_FRAMES):
                    break
                batch.append(frame)
                size += len(frame)
            if not self._send(batch, block):
                return False
            for _ in batch:
                backlog.popleft()
        self.turn_bytes = 0
        return True
