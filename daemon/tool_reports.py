"""A Python tool's output and progress, sent while its `run` goes on (TaskContext.output/progress).

A tool that does not run a command (echo, read, a plugin) answers inside the
worker's loop, which stands still meanwhile. So each report leaves at once,
not at the end of the loop's turn, and also sends a heartbeat that is due:
a long tool that reports stays alive in parad's eyes; one that goes silent
for daemon.failure_detection_timeout is killed as hung, like any worker.
"""

from __future__ import annotations

from typing import Protocol

from para.daemon.data_out import DataOut
from para.ipc import channels, codec
from para.ipc import messages as m


class ReportingWorker(Protocol):
    id: str
    out: DataOut
    events: list[bytes]

    def beat_if_due(self) -> None: ...
    def flush_events(self) -> None: ...


class ToolReports:
    """The TaskContext.reports of one task in a worker."""

    __slots__ = ("worker", "assign", "seq")

    def __init__(self, worker: ReportingWorker, assign: m.Assign) -> None:
        self.worker = worker
        self.assign = assign
        self.seq = 0   # its Chunks' sequence numbers

    def output(self, data: bytes) -> None:
        """A chunk of stdout, for a task submitted with stream=True (others keep only their answer)."""
        worker = self.worker
        if self.assign.task.stream and data:
            self.seq += 1
            worker.out.add(m.Chunk(self.assign.task.id, "stdout", data, self.seq))
            # Bounded: past the channel's high-water mark the tool waits until parad has read.
            if not worker.out.flush(block=False) and len(worker.out.backlog) >= channels.DATA_HWM:
                worker.out.flush(block=True)
        worker.beat_if_due()

    def progress(self, done: float, total: float | None, message: str) -> None:
        """A `progress` task event, sent only while someone watches (as the `started` event is)."""
        worker = self.worker
        if self.assign.events:
            info = {"done": done, "total": total, "message": message, "attempt": self.assign.attempt}
            worker.events.append(codec.encode(m.TaskEvent(self.assign.task.id, worker.id, "progress", info)))
            worker.flush_events()
        worker.beat_if_due()
