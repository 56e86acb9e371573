"""What parad holds for each client, counted in bytes, and the backpressure that bounds it.

Frames for a client (replies, results, streamed output) wait in its outbox
and go out in messages of at most BATCH_BYTES, as fast as its socket takes
them. The control socket queues at most SNDHWM messages per client, and with
ROUTER_MANDATORY a full queue refuses a send (zmq.Again) instead of dropping
it; so what a client does not read stays here, counted.

A client whose outbox passes `budget` bytes is over budget until it drains to
half of it. Meanwhile a chunk of streamed output for it pauses the command
that produced it (PauseOutput to that task's worker, which stops reading the
command's pipes; the command blocks on write, the worker's heartbeats, cancels
and other tasks go on), and its queued tasks do not start (`blocked`, read by
the scheduler); other clients' tasks go ahead. Results of its tasks already
running still arrive and are held: at most a worker's credit times a
result's size each. Once drained, its paused commands resume.

Nothing is dropped, except for a client that is gone (the socket no longer
routes to it): its outbox is freed, and its results stay queryable by id.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq

from para.daemon import children
from para.ipc import codec
from para.ipc import messages as m

BATCH_BYTES = 1 << 20   # most bytes of frames sent to a client in one message
BATCH_FRAMES = 1024     # and most frames (a client refuses more than codec.MAX_BATCH_FRAMES)
SNDHWM = 4              # messages the control socket queues per client, so at most ~4 MiB in zmq
RETRY_FIRST = 0.002     # seconds before a client whose queue was full is tried again; doubles
RETRY_MAX = 0.1


@dataclass(slots=True)
class _Box:
    relay: tuple[str, bytes] | None     # a client inside a worker's command: (worker, its identity there)
    frames: collections.deque[bytes] = field(default_factory=collections.deque)
    size: int = 0                       # bytes of `frames`
    over: bool = False                  # over budget, until drained to half of it
    paused: dict[str, str] = field(default_factory=dict)   # task id -> worker, commands paused for it
    retry_at: float = 0.0               # when its full queue is tried again; 0: not full
    delay: float = 0.0


class Outbox:
    """Per-client outboxes on the control socket; see the module docstring."""

    def __init__(self, sock: zmq.Socket, budget: int, to_worker: Callable[[str, Any], bool],
                 relay: Callable[[str, bytes, list[bytes]], None], on_drained: Callable[[], None]) -> None:
        self.sock = sock
        self.budget = budget
        self.blocked: set[bytes] = set()    # clients over budget: their queued tasks wait
        self._to_worker = to_worker
        self._relay = relay
        self._on_drained = on_drained
        self._boxes: dict[bytes, _Box] = {}
        self._dirty: set[bytes] = set()     # clients with new frames, sent at the next flush
        self._stalled: dict[bytes, _Box] = {}   # clients whose queue was full, tried at retry_at

    # ---- what the daemon owes -------------------------------------------------

    def send(self, owner: bytes, frame: bytes) -> _Box:
        """Queue a frame for a client; flush() sends it."""
        box = self._boxes.get(owner)
        if box is None:
            box = self._boxes[owner] = _Box(children.split_owner(owner))
        box.frames.append(frame)
        box.size += len(frame)
        if box.size > self.budget and not box.over:
            box.over = True
            self.blocked.add(owner)
        if not box.retry_at:
            self._dirty.add(owner)
        return box

    def chunk(self, owner: bytes, task_id: str, worker: str | None, frame: bytes) -> None:
        """Streamed output: queued, and its command paused while the client is over budget."""
        box = self.send(owner, frame)
        if box.over and worker is not None and box.paused.get(task_id) != worker:
            box.paused[task_id] = worker
            self._to_worker(worker, m.PauseOutput(task_id))

    def result(self, owner: bytes, task_id: str, frame: bytes) -> None:
        """A task's Done: queued; its command, if paused, has ended."""
        self.send(owner, frame).paused.pop(task_id, None)

    # ---- sending ------------------------------------------------------------

    def flush(self) -> None:
        """Send what clients take now; called once per loop turn."""
        if self._stalled:
            now = time.monotonic()
            self._dirty.update(o for o, box in self._stalled.items() if box.retry_at <= now)
        for owner in self._dirty:
            box = self._boxes.get(owner)
            if box is not None:
                self._flush_box(owner, box)
        self._dirty.clear()

    def drain(self, seconds: float) -> None:
        """At exit: go on sending, for at most `seconds`, to clients that still read."""
        end = time.monotonic() + seconds
        while self._boxes and time.monotonic() < end:
            self._dirty.update(self._boxes)
            self.flush()
            if self._boxes:
                time.sleep(RETRY_FIRST)

    def wait_cap(self) -> float:
        """Longest the loop may sleep before a full client queue is tried again."""
        if not self._stalled:
            return 1.0
        return max(0.0, min(box.retry_at for box in self._stalled.values()) - time.monotonic())

    def _flush_box(self, owner: bytes, box: _Box) -> None:
        if box.relay is not None:  # batched by the relay, BATCH_FRAMES at a time
            self._relay(*box.relay, list(box.frames))
            box.frames.clear()
            box.size = 0
        sent = False
        while box.frames:
            batch, size = [], 0
            for frame in box.frames:
                if batch and (size + len(frame) > BATCH_BYTES or len(batch) >= BATCH_FRAMES):
                    break
                batch.append(frame)
                size += len(frame)
            try:
                self.sock.send_multipart([owner, codec.encode_batch(batch)], zmq.NOBLOCK)
            except zmq.Again:
                self._stall(owner, box, sent)
                break
            except zmq.ZMQError:
                self._gone(owner, box)
                return
            for _ in batch:
                box.frames.popleft()
            box.size -= size
            sent = True
        else:
            box.retry_at = box.delay = 0.0
            self._stalled.pop(owner, None)
        if box.over and box.size <= self.budget // 2:
            self._drained(owner, box)
        if not box.frames and not box.over:
            del self._boxes[owner]

    def _stall(self, owner: bytes, box: _Box, progressed: bool) -> None:
        box.delay = RETRY_FIRST if progressed else min(RETRY_MAX, box.delay * 2 or RETRY_FIRST)
        box.retry_at = time.monotonic() + box.delay
        self._stalled[owner] = box

    def _drained(self, owner: bytes, box: _Box) -> None:
        box.over = False
        self.blocked.discard(owner)
        for task_id, worker in box.paused.items():
            self._to_worker(worker, m.ResumeOutput(task_id))
        box.paused.clear()
        self._on_drained()

    def _gone(self, owner: bytes, box: _Box) -> None:
        # The client disconnected: zmq freed its queue, and so do we. Its
        # paused commands go on (their output has nobody to go to).
        box.frames.clear()
        box.size = 0
        self._stalled.pop(owner, None)
        if box.over:
            self._drained(owner, box)
        self._boxes.pop(owner, None)

    # ---- figures ------------------------------------------------------------

    def summary(self) -> dict[str, int]:
        boxes = self._boxes.values()
        return {"backlog_bytes": sum(b.size for b in boxes), "clients_over_budget": len(self.blocked),
                "paused_tasks": sum(len(b.paused) for b in boxes)}
