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

Budgets are per client and for all of them together: while the outboxes
hold more than `total_budget` bytes in all (`squeezed`, until they are down to
half of it), a client's budget is its fair share of the total (`total_budget`
over the number of clients held for, if that is less), and while the total is
past `total_budget` no client may hold more than one message (BATCH_BYTES): so
many clients that do not read hold about `total_budget` plus a message each,
not their number times `budget`.

A client holding more than twice its budget is not served (`refusing`): its
requests are dropped unanswered, counted in `dropped`, until it reads. Past
the budget only results of its running tasks still arrive, which its credit
bounds; a reply is what a client could otherwise multiply without bound
(a thousand queries for one large result). Twice, so that a client that
is merely slow, over budget by its running tasks' results, is still served.

Nothing accepted is dropped, except for a client that is gone (the socket no
longer routes to it): its outbox is freed, and its results stay queryable by id.

A frame that reports what the journal records (an Accepted, a Done) is
`durable`: it waits, with the client's other durable frames and in their
order, until `committed()` says the commit that records it went through, so
a client is never told what a crash could take back. Other frames (output,
refusals, answers to queries and pings) do not wait for it: a client whose
results are held on a full disk still hears why its new tasks are refused.
Held frames count in the budgets like any other, so backpressure sees them
at once.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import zmq

from para.daemon import children
from para.ipc import codec
from para.ipc import messages as m
from para.ipc.sockets import send_pair

BATCH_BYTES = 1 << 20   # most bytes of frames sent to a client in one message
BATCH_FRAMES = codec.BATCH_FRAMES   # and most frames
SNDHWM = 4              # messages the control socket queues per client, so at most ~4 MiB in zmq
RETRY_FIRST = 0.002     # seconds before a client whose queue was full is tried again; doubles
RETRY_MAX = 0.1
HARD_CAP = 2            # times its budget a client may hold before its requests are dropped
WARN_EVERY = 10.0       # seconds between warnings about dropped requests

log = logging.getLogger("parad")


@dataclass(slots=True)
class _Box:
    relay: tuple[str, bytes] | None     # a client inside a worker's command: (worker, its identity there)
    frames: collections.deque[bytes] = field(default_factory=collections.deque)
    size: int = 0                       # bytes of `frames`
    over: bool = False                  # over budget, until drained to half of it
    paused: dict[str, str] = field(default_factory=dict)   # task id -> worker, commands paused for it
    retry_at: float = 0.0               # when its full queue is tried again; 0: not full
    delay: float = 0.0
    held: collections.deque[bytes] = field(default_factory=collections.deque)   # durable frames until the commit


class Outbox:
    """Per-client outboxes on the control socket; see the module docstring."""

    def __init__(self, sock: zmq.Socket, budget: int, to_worker: Callable[..., bool],
                 on_drained: Callable[[], None], total_budget: int | None = None) -> None:
        self.sock = sock
        self.budget = budget
        self.total_budget = max(budget, total_budget or budget)
        self.total = 0                      # bytes held for every client
        self.squeezed = False               # total past total_budget, until drained to half of it
        self.dropped = 0                    # requests not served: their client held past HARD_CAP
        self._warned = -WARN_EVERY
        self.blocked: set[bytes] = set()    # clients over budget: their queued tasks wait
        self._to_worker = to_worker         # (worker id, *messages): its command channel
        self._on_drained = on_drained
        self._boxes: dict[bytes, _Box] = {}
        self._dirty: set[bytes] = set()     # clients with new frames, sent at the next flush
        self._stalled: dict[bytes, _Box] = {}   # clients whose queue was full, tried at retry_at
        self._holding: set[bytes] = set()        # clients with durable frames waiting for a commit

    # ---- what the daemon owes -------------------------------------------------

    def send(self, owner: bytes, frame: bytes, durable: bool = False) -> _Box:
        """Queue a frame for a client; flush() sends it (a `durable` one, after the next commit)."""
        box = self._boxes.get(owner)
        if box is None:
            box = self._boxes[owner] = _Box(children.split_owner(owner))
        if durable:
            box.held.append(frame)
            self._holding.add(owner)
        else:
            box.frames.append(frame)
        box.size += len(frame)
        self.total += len(frame)
        if self.total > self.total_budget and not self.squeezed:
            self.squeezed = True
            log.warning("clients have %d bytes of results and output unread (output_budget_total %d): "
                        "each now gets its share of it", self.total, self.total_budget)
        if box.size > self._budget() and not box.over:
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

    def result(self, owner: bytes, task_id: str, frame: bytes, durable: bool = False) -> None:
        """A task's Done: queued; its command, if paused, has ended."""
        self.send(owner, frame, durable).paused.pop(task_id, None)

    def committed(self) -> None:
        """The journal committed: every durable frame held may go."""
        for owner in self._holding:
            box = self._boxes.get(owner)
            if box is not None:
                box.frames.extend(box.held)
                box.held.clear()
                if not box.retry_at:
                    self._dirty.add(owner)
        self._holding.clear()

    def refusing(self, owner: bytes) -> bool:
        """Whether `owner` holds so much unread that its requests are dropped; counted and logged if so."""
        box = self._boxes.get(owner)
        if box is None or box.size <= HARD_CAP * self._share():
            return False
        self.dropped += 1
        now = time.monotonic()
        if now - self._warned >= WARN_EVERY:
            self._warned = now
            log.warning("a client holds %d bytes it has not read, over %d times its output budget: its requests "
                        "are dropped until it reads (%d dropped so far)", box.size, HARD_CAP, self.dropped)
        return True

    def _share(self) -> int:
        """A client's budget: its own, or while squeezed its share of total_budget if that is less."""
        if not self.squeezed:
            return self.budget
        return min(self.budget, self.total_budget // max(1, len(self._boxes)))

    def _budget(self) -> int:
        # While the total is past total_budget no client grows past one message: clients
        # that come later must not each add a share, or the total grows with their number.
        if self.total > self.total_budget:
            return min(self._share(), BATCH_BYTES)
        return self._share()

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
        if self.squeezed and self.total <= self.total_budget // 2:
            self._unsqueeze()

    def _unsqueeze(self) -> None:
        # Back to each client's own budget: those held to a share but under half their own go on.
        self.squeezed = False
        for owner, box in list(self._boxes.items()):
            if box.over and box.size <= self.budget // 2:
                self._drained(owner, box)
                if not box.frames:
                    del self._boxes[owner]

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
            self._relay_box(box)
        sent = False
        while box.frames:
            batch, size = [], 0
            for frame in box.frames:
                if batch and (size + len(frame) > BATCH_BYTES or len(batch) >= BATCH_FRAMES):
                    break
                batch.append(frame)
                size += len(frame)
            try:
                send_pair(self.sock, owner, codec.encode_batch(batch))
            except zmq.Again:
                self._stall(owner, box, sent)
                break
            except zmq.ZMQError:
                self._gone(owner, box)
                return
            for _ in batch:
                box.frames.popleft()
            box.size -= size
            self.total -= size
            sent = True
        else:
            box.retry_at = box.delay = 0.0
            self._stalled.pop(owner, None)
        if box.over and box.size <= self._budget() // 2:
            self._drained(owner, box)
        if not box.frames and not box.over and not box.held:
            del self._boxes[owner]

    def _relay_box(self, box: _Box) -> None:
        frames = list(box.frames)
        box.frames.clear()
        self._relay(*box.relay, frames)
        size = sum(len(f) for f in frames)
        box.size -= size
        self.total -= size

    def _relay(self, worker_id: str, identity: bytes, frames: list[bytes]) -> None:
        # A client inside a worker's command: its frames go through that worker.
        for start in range(0, len(frames), BATCH_FRAMES):
            self._to_worker(worker_id, m.Relay(identity, codec.encode_batch(frames[start:start + BATCH_FRAMES])))

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
        box.held.clear()
        self.total -= box.size
        box.size = 0
        self._stalled.pop(owner, None)
        self._holding.discard(owner)
        if box.over:
            self._drained(owner, box)
        self._boxes.pop(owner, None)

    # ---- figures ------------------------------------------------------------

    def summary(self) -> dict[str, int]:
        boxes = self._boxes.values()
        return {"backlog_bytes": self.total, "clients_over_budget": len(self.blocked),
                "paused_tasks": sum(len(b.paused) for b in boxes)}
