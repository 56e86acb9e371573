"""Streamed stdin: a client's Input goes to its running task's worker, the worker's InputAck back to it.

parad holds no input: an Input is forwarded to the worker at once or
refused. Memory stays bounded by a window: per task, at most
`channels.INPUT_WINDOW` bytes may have been forwarded and not acknowledged
by the worker as written to the command's stdin; an Input past it is
refused. So a command that does not read its stdin fills its pipe, its
worker holds at most the window, acknowledgements stop, and the sender
waits, not parad's memory.

Input may come once the worker's first InputAck (written 0) has reached the
owner: the command's stdin is open. Input for a task that is queued, ended,
not streaming its stdin, closed, or not the sender's is refused, with an
InputAck naming why (`error`), and counted by reason.
"""

from __future__ import annotations

import collections
from typing import Protocol

from para.daemon.core import Ports
from para.daemon.tasks import InputFlow, TaskRecord, TaskTable
from para.ipc import messages as m
from para.ipc.channels import INPUT_WINDOW

REASONS = ("not_running", "not_owner", "not_streaming", "not_started", "closed", "window", "unroutable")
ENDED = ("not_running", "not_owner", "closed", "unroutable")   # not_owner: as if no such task


class InputCore(Protocol):
    tasks: TaskTable
    ports: Ports


class InputRouter:
    def __init__(self, core: InputCore) -> None:
        self.core = core
        self.refused: collections.Counter[str] = collections.Counter({r: 0 for r in REASONS})
        self.forwarded = 0   # bytes of input passed on to workers

    def on_input(self, owner: bytes, msg: m.Input) -> m.InputAck | None:
        """Forward `msg` from client `owner` to its task's worker; the refusal to send back, if refused."""
        record = self.core.tasks.live.get(msg.task_id)
        reason, why = self._check(owner, record, msg)
        if reason is None and not self.core.ports.to_worker(record.worker, msg):
            reason, why = "unroutable", "its worker is gone"
        if reason is not None:
            self.refused[reason] += 1
            acked = record.stdin.acked if record is not None and record.stdin is not None and reason != "not_owner" else 0
            # closed: the task or its stdin is gone, as any input racing its end finds it; the
            # other reasons are the sender's mistake, which its client raises.
            return m.InputAck(msg.task_id, acked, closed=reason in ENDED,
                              error=f"input for task {msg.task_id} refused: {why}")
        flow = record.stdin
        flow.sent += len(msg.data)
        flow.eof = msg.eof
        self.forwarded += len(msg.data)
        return None

    def _check(self, owner: bytes, record: TaskRecord | None, msg: m.Input) -> tuple[str | None, str]:
        if record is None:
            return "not_running", "no such task is running (it ended, or the id is wrong)"
        if record.owner != owner:
            # The same words as for no task at all: another client's task ids are not for probing.
            return "not_owner", "no such task of this client is running (only the client that submitted a task sends its input)"
        if not record.spec.args.get("stdin_stream"):
            return "not_streaming", "it was not submitted with stdin_stream=True"
        flow = record.stdin
        if flow is None or record.state != m.RUNNING:
            return "not_started", "its command has not started; send input after its first InputAck"
        if flow.eof or flow.closed:
            return "closed", "its stdin is closed"
        if flow.sent + len(msg.data) - flow.acked > INPUT_WINDOW:
            return "window", (f"more than {INPUT_WINDOW} bytes would be unacknowledged; "
                              f"wait for InputAck before sending more")
        return None, ""

    def on_ack(self, msg: m.InputAck, wire: bytes) -> None:
        """A worker wrote input to a command's stdin (or opened it: written 0): tell the task's owner."""
        record = self.core.tasks.live.get(msg.task_id)
        if record is None or record.owner is None or record.state != m.RUNNING:
            return   # a late ack of a task that ended: its owner has the result
        flow = record.stdin
        if flow is None:
            flow = record.stdin = InputFlow()
        flow.acked = max(flow.acked, msg.written)
        flow.closed = flow.closed or msg.closed
        self.core.ports.to_client(record.owner, wire)
