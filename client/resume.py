"""Getting a client's tasks back after parad restarts or goes silent, with no sockets.

A client learns that parad restarted from a Pong (or Welcome) that carries
another `boot`, and that it went away from a ping nobody answers. Either way
it opens a fresh socket, greets whichever parad answers there (autostart may
start one), and sends `Await` with the id of every task it still waits for.
The daemon sends each finished one's Done at once, makes the client the owner
(or a follower) of each live one, and names the ids it does not know:

- a journaling parad (Welcome.durable) records a task before acknowledging it,
  and before it reaches a worker unless it may run twice (retry-safe, or
  retries left), so an id the parad after it does not know was never started
  or may run again: its spec is submitted again (same id), which is safe;
- without a journal the task's fate is unknown (it may have run): it ends
  with a DaemonUnavailable that says so, and is not run a second time;
- a handle made by `result(id)` has no spec to submit: NotFound;
- a batch task is not submitted alone (its dependencies would be lost).

`Resume` holds one such reconnection; Client and AsyncClient do its I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from para.client.errors import DaemonUnavailable, NotFound, ParaError, refusal
from para.ipc import messages as m

AWAIT_CHUNK = 1024   # task ids per Await (parad takes at most 4096)
RETENTION = ("finished results are kept for the journal's retention; with durability off, in memory "
             "and not across a restart")


def restarted(known: m.Welcome | None, boot: str) -> bool:
    """Whether `boot` (from a Pong or Welcome) names another run of parad than the one greeted."""
    return bool(known is not None and known.boot and boot and boot != known.boot)


def unknown_task(task_id: str) -> NotFound:
    """The error for a task id parad does not know."""
    return NotFound(f"parad knows no task {task_id!r}: it was never submitted, or it finished and was pruned "
                    f"({RETENTION})", m.E_NOT_FOUND)


def awaited(handle: Any, body: dict[str, Any]) -> None:
    """After the Await for `handle` (a task by id, `result(id)`): NotFound if parad does not know it."""
    if handle.id in body.get("unknown", ()) and not handle.done():
        handle._settle(None, unknown_task(handle.id))


class AwaitSlot:
    """Where the answer to `result(id)`'s Await goes: to the handle itself, which the caller waits on
    as on any task. Not a request of its own to wait for: if parad dies before it answers, the wait
    resumes like any other and the resume awaits the handle again."""
    __slots__ = ("handle", "answered")

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.answered = False

    def done(self) -> bool:
        return self.answered

    def set_result(self, reply: Any) -> None:
        self.answered = True
        if isinstance(reply, m.ErrorReply):
            if not self.handle.done():
                self.handle._settle(None, refusal(reply.code, reply.message))
        else:
            awaited(self.handle, reply.body)


class Resume:
    """One reconnection: what the client lost (`old`), the tasks it asks for, what it does with the answers."""

    def __init__(self, old: m.Welcome | None, path: str, handles: Iterable[Any], why: str, start: bool) -> None:
        self.old, self.path, self.why, self.start = old, path, why, start
        self.handles = {h.id: h for h in handles if not h.done()}
        self.new: m.Welcome | None = None

    def awaits(self, reqs: Iterator[int]) -> list[m.Await]:
        """The Await requests for every task still waited for, AWAIT_CHUNK ids each."""
        ids = list(self.handles)
        return [m.Await(next(reqs), ids[i:i + AWAIT_CHUNK]) for i in range(0, len(ids), AWAIT_CHUNK)]

    def gone(self, waited: float) -> DaemonUnavailable:
        """The error when no daemon answered the greeting within `waited` seconds."""
        return DaemonUnavailable(
            f"{self.why}, and none answered there within {waited:g}s after: start parad "
            f"(or use autostart), then wait for the tasks by id (Client.result, `paractl result ID`)", self.path)

    def answered(self, body: dict[str, Any]) -> list[m.TaskSpec]:
        """Settle the tasks an Await's reply names `unknown`; the specs to submit again."""
        again = []
        for task_id in body.get("unknown", []):
            handle = self.handles.get(task_id)
            if handle is None or handle.done():
                continue
            error = self._unknown(handle)
            if error is None:
                again.append(handle.spec)
            else:
                handle._settle(None, error)
        return again

    def _unknown(self, handle: Any) -> ParaError | None:
        """Why `handle`'s task, unknown to the parad now, ends here; None when it is submitted again."""
        if handle.spec is None:
            return unknown_task(handle.id)
        durable = self.old is not None and self.old.durable
        if durable and handle.batch is None:
            return None
        if durable:
            return DaemonUnavailable(f"task {handle.id} of batch {handle.batch} is unknown to parad at {self.path} "
                                     f"after it {self._what()}; run the batch again", self.path)
        if self._what() == "restarted":
            return DaemonUnavailable(f"parad at {self.path} restarted without a journal (durability: off): task "
                                     f"{handle.id}'s fate is unknown, it may have run; submit it again if that is safe",
                                     self.path)
        return DaemonUnavailable(f"parad at {self.path} no longer knows task {handle.id} after it went silent "
                                 f"({RETENTION}): its fate is unknown; submit it again if that is safe", self.path)

    def _what(self) -> str:
        return "restarted" if self.new is None or restarted(self.old, self.new.boot) else "went silent"
