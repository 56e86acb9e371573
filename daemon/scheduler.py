"""The per-pool task queue: five priorities, fair across sessions, bounded.

Priority 0 is served before 1, and so on. Within a priority, sessions take
turns (round-robin): a client's 10,000-task batch gets one task out, then
another session's single call does, so the call waits for at most the tasks
already running, not for the batch. Within a session, first in, first out.
A task's session is the one it names, else the client that submitted it.

The queue is bounded by count (`max_depth`) and by bytes (`max_bytes`): each
task counts its share of the request frame it came in (`TaskRecord.arg_bytes`),
queued or `held` (a batch task waiting for its dependencies, not yet queued).

Cancelled tasks are removed lazily (skipped when popped) so cancel is O(1).
The tasks of a client in `blocked` (over its output budget, see outbox.py)
wait until that client reads: they are skipped, and a session shared with
other clients serves theirs meanwhile, in order. They do not count toward
the workers the pool wants (`runnable`). Tasks of a pool that runs commands
are counted by workspace too (`by_workspace`), and `pop` passes over those
of workspaces with no worker free.
"""

from __future__ import annotations

import collections
from collections.abc import Collection, Hashable, Iterator

from para.daemon.tasks import TaskRecord
from para.ipc import messages as m

LEVELS = 5


def session_key(record: TaskRecord) -> Hashable:
    if record.session is not None:
        return record.session
    return record.spec.session or record.owner or b""


class PoolQueue:
    def __init__(self, max_depth: int, max_bytes: int, workspaces: bool = False) -> None:
        self.max_depth = max_depth
        self.max_bytes = max_bytes
        self.bytes = 0                  # arg_bytes of queued tasks
        self._held: dict[str, int] = {}  # pending batch tasks of this pool: id -> arg_bytes
        self._held_bytes = 0
        # One rotation of sessions per priority; each session a FIFO.
        self._levels: list[collections.OrderedDict[Hashable, collections.deque[TaskRecord]]] = [
            collections.OrderedDict() for _ in range(LEVELS)]
        self.depth = 0
        self.blocked: Collection[Hashable] = ()  # owners whose tasks wait: the outbox's set
        self._owners: collections.Counter[Hashable] = collections.Counter()  # queued tasks by owner
        # A pool that runs commands: queued tasks by workspace, and by (owner, workspace).
        self.workspaces = workspaces
        self.by_workspace: collections.Counter[str | None] = collections.Counter()
        self._shares: collections.Counter[tuple[Hashable, str | None]] = collections.Counter()

    @property
    def runnable(self) -> int:
        """Queued tasks that may start now: those of blocked owners wait."""
        if not self.blocked:
            return self.depth
        return self.depth - sum(self._owners[o] for o in self.blocked if o in self._owners)

    def runnable_by_workspace(self) -> collections.Counter[str | None]:
        """`runnable`, by workspace."""
        if not self.blocked:
            return self.by_workspace
        out = collections.Counter(self.by_workspace)
        for (owner, workspace), n in self._shares.items():
            if owner in self.blocked:
                _decrement(out, workspace, n)
        return out

    def full(self, adding: int = 1) -> bool:
        return self.depth + adding > self.max_depth

    @property
    def bytes_held(self) -> int:
        """Bytes of tasks queued here or waiting to be (pending batch tasks)."""
        return self.bytes + self._held_bytes

    def too_big(self, adding: int) -> bool:
        return self.bytes_held + adding > self.max_bytes

    def hold(self, record: TaskRecord) -> None:
        """A batch task that waits for its dependencies: its bytes count until it is queued or ends."""
        self._held[record.spec.id] = record.arg_bytes
        self._held_bytes += record.arg_bytes

    def unhold(self, record: TaskRecord) -> None:
        self._held_bytes -= self._held.pop(record.spec.id, 0)

    def _fifo(self, record: TaskRecord) -> collections.deque[TaskRecord]:
        level = self._levels[record.spec.priority]
        key = session_key(record)
        fifo = level.get(key)
        if fifo is None:
            fifo = level[key] = collections.deque()
        return fifo

    def push(self, record: TaskRecord) -> None:
        self._fifo(record).append(record)
        self._entered(record)

    def push_front(self, record: TaskRecord) -> None:
        """A task that goes back (a retry, an unroutable assignment) goes ahead of its session."""
        self._fifo(record).appendleft(record)
        self._entered(record)

    def _entered(self, record: TaskRecord) -> None:
        self.depth += 1
        self.bytes += record.arg_bytes
        self._owners[record.owner] += 1
        if self.workspaces:
            self.by_workspace[record.spec.workspace] += 1
            self._shares[record.owner, record.spec.workspace] += 1

    def pop(self, workspaces: Collection[str | None] | None = None) -> TaskRecord | None:
        """The next task to run, passing over the tasks of blocked owners, and of workspaces
        not in `workspaces` (those with no worker free) when it is given."""
        blocked = self.blocked
        for level in self._levels:
            turns = len(level)
            while turns:
                turns -= 1
                key, fifo = next(iter(level.items()))
                while fifo and fifo[0].state != m.QUEUED:
                    fifo.popleft()
                if not fifo:
                    del level[key]
                    continue
                record = _first_unblocked(fifo, blocked, workspaces)
                if record is None:
                    level.move_to_end(key)
                    continue
                if fifo:
                    level.move_to_end(key)  # this session's turn is over
                else:
                    del level[key]
                self._left(record)
                return record
        return None

    def discard(self, record: TaskRecord) -> None:
        """Called when a queued task is cancelled; pop() will skip it."""
        self._left(record)

    def _left(self, record: TaskRecord) -> None:
        self.depth -= 1
        self.bytes -= record.arg_bytes
        n = self._owners[record.owner] - 1
        if n:
            self._owners[record.owner] = n
        else:
            del self._owners[record.owner]
        if self.workspaces:
            _decrement(self.by_workspace, record.spec.workspace)
            _decrement(self._shares, (record.owner, record.spec.workspace))

    def queued(self) -> Iterator[TaskRecord]:
        for level in self._levels:
            for fifo in level.values():
                yield from (r for r in fifo if r.state == m.QUEUED)

    def drain(self) -> list[TaskRecord]:
        records = list(self.queued())
        for level in self._levels:
            level.clear()
        self.depth = self.bytes = 0
        self._owners.clear()
        self.by_workspace.clear()
        self._shares.clear()
        return records


def _decrement(counter: collections.Counter, key: Hashable, by: int = 1) -> None:
    n = counter[key] - by
    if n > 0:
        counter[key] = n
    else:
        del counter[key]


def _first_unblocked(fifo: collections.deque[TaskRecord], blocked: Collection[Hashable],
                     workspaces: Collection[str | None] | None) -> TaskRecord | None:
    """Take the session's first queued task that may start (owner not blocked, workspace served); None if none may."""
    head = fifo[0]
    if (not blocked or head.owner not in blocked) and (workspaces is None or head.spec.workspace in workspaces):
        return fifo.popleft()
    for i, record in enumerate(fifo):
        if record.state == m.QUEUED and record.owner not in blocked and (
                workspaces is None or record.spec.workspace in workspaces):
            del fifo[i]
            return record
    return None
