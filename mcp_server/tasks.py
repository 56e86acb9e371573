"""The tasks para-mcp started: their output so far, their results, and how long they are kept.

Memory is bounded by bytes. A command's output is kept as it streamed (stdout
and stderr interleaved as they came) up to `output_bytes`, its last bytes when
it wrote more, addressed by offsets from its first byte. A finished task is kept
while at most `keep_finished` tasks and `keep_bytes` of output and results are,
the oldest dropped first; a dropped one is still answered by id from parad's
own record of it (`AsyncClient.task`). Tasks still running when the server
stops are cancelled (`TaskBook.close`): nothing it started outlives it.
"""

from __future__ import annotations

import collections
import json
import time
from contextlib import suppress
from typing import Any

import anyio
import anyio.abc

from para.client import AsyncClient, AsyncTask, ParaError, Result

OUTPUT_BYTES = 1 << 20     # a command's output kept, per task
KEEP_FINISHED = 100        # finished tasks kept in memory ...
KEEP_BYTES = 32 << 20      # ... and the bytes of their output and results
SUMMARY_CHARS = 200


class OutputLog:
    """The last `cap` bytes of a task's output, addressed by absolute offsets from its first byte."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.start = 0   # the offset of data[0]: what came before it was dropped

    @property
    def end(self) -> int:
        """Every byte the task has written so far."""
        return self.start + len(self.data)

    def append(self, chunk: bytes) -> None:
        self.data += chunk
        excess = len(self.data) - self.cap
        if excess > 0:
            del self.data[:excess]
            self.start += excess

    def read(self, offset: int, limit: int, final: bool) -> tuple[bytes, int, int]:
        """(at most `limit` bytes from `offset`, the offset they start at, bytes before them no longer
        kept). Unless the output is `final` and read to its end, a UTF-8 character cut at the end waits
        for the next read."""
        begin = min(max(offset, self.start), self.end)
        data = bytes(self.data[begin - self.start:begin - self.start + limit])
        if not (final and begin + len(data) == self.end):
            data = whole_characters(data)
        return data, begin, max(0, self.start - offset)


def whole_characters(data: bytes) -> bytes:
    """`data` less an incomplete UTF-8 sequence at its end."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:   # a continuation byte: look further back for its lead
            continue
        needs = 1 if byte < 0x80 else 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
        return data[:-back] if back < needs else data
    return data


class Handle:
    """A task this server started: what it is, its output so far (a command's), and its result once ended."""

    def __init__(self, task_id: str, tool: str, summary: str, log: OutputLog | None,
                 view: dict[str, Any] | None = None) -> None:
        self.id, self.tool, self.summary, self.log = task_id, tool, summary, log
        self.view = view or {}   # how its answer is shown (results.py)
        self.held = 0      # bytes it holds once finished (size())
        self.started = time.time()
        self.finished: float | None = None
        self.result: Result | None = None
        self._changed = anyio.Event()

    @property
    def done(self) -> bool:
        return self.result is not None

    @property
    def state(self) -> str:
        """running until it ends (queued, or waiting on a batch dependency, count as running), then its status."""
        return self.result.status if self.result is not None else "running"

    @property
    def changed(self) -> anyio.Event:
        """Set at the task's next output, or at its end."""
        return self._changed

    def size(self) -> int:
        """Bytes this handle holds: its output and its result's."""
        held = len(self.log.data) if self.log is not None else 0
        if self.result is not None:
            held += len(self.result.stdout) + len(self.result.stderr) + len(json.dumps(self.result.value, default=str))
        return held

    def _output(self, data: bytes) -> None:
        if self.log is not None:
            self.log.append(data)
        self._poke()

    def _finish(self, result: Result) -> None:
        self.result, self.finished = result, time.time()
        self._poke()

    def _poke(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()


def summarize(tool: str, args: dict[str, Any]) -> str:
    """One line saying what a task does: a command as typed, else its arguments."""
    if isinstance(args.get("command"), str):
        text = args["command"]
    elif isinstance(args.get("argv"), list):
        text = " ".join(map(str, args["argv"]))
    else:
        text = json.dumps({k: v for k, v in args.items() if k != "caller_env"}, default=str)
    return text if len(text) <= SUMMARY_CHARS else text[:SUMMARY_CHARS - 3] + "..."


class TaskBook:
    """The tasks one para-mcp started, each followed to its end. Use as `async with TaskBook(client) as book:`."""

    def __init__(self, client: AsyncClient, output_bytes: int = OUTPUT_BYTES, keep_finished: int = KEEP_FINISHED,
                 keep_bytes: int = KEEP_BYTES) -> None:
        self.client = client
        self.output_bytes, self.keep_finished, self.keep_bytes = output_bytes, keep_finished, keep_bytes
        self._live: dict[str, Handle] = {}
        self._finished: collections.OrderedDict[str, Handle] = collections.OrderedDict()
        self._finished_bytes = 0
        self._tg: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> TaskBook:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        await self.close()
        self._tg.cancel_scope.cancel()
        return await self._tg.__aexit__(*exc)

    async def start(self, tool: str, args: dict[str, Any], options: dict[str, Any], *, stream: bool,
                    view: dict[str, Any] | None = None) -> Handle:
        """Submit a task (ParaError if parad refuses it) and follow it; its handle."""
        task = await self.client.submit(tool, **args, **options, stream=stream)
        handle = Handle(task.id, tool, summarize(tool, args), OutputLog(self.output_bytes) if stream else None, view)
        self._follow(handle, task)
        return handle

    async def start_batch(self, spec: dict[str, Any]) -> tuple[str, dict[str, Handle]]:
        """Start a batch (client/batch.py; ParaError if parad refuses it); its id and a handle per task by name."""
        batch = await self.client.batch(spec)
        handles = {}
        for name, task in batch.tasks.items():
            handles[name] = Handle(task.id, task.tool, summarize(task.tool, task.spec.args), None)
            self._follow(handles[name], task)
        return batch.id, handles

    def get(self, task_id: str) -> Handle | None:
        """The handle of a task this server started and still holds."""
        return self._live.get(task_id) or self._finished.get(task_id)

    def handles(self) -> list[Handle]:
        """Every handle held, oldest first."""
        return sorted([*self._live.values(), *self._finished.values()], key=lambda h: h.started)

    async def cancel(self, *task_ids: str) -> dict[str, list[str]]:
        """Cancel tasks by id; parad's answer (cancelled, not_running)."""
        return await self.client.cancel(*task_ids)

    async def close(self) -> None:
        """Cancel every task still running: also when the server is being cancelled itself (shielded),
        and bounded, so a silent parad does not hold the exit up."""
        live = list(self._live)
        if live:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5), suppress(ParaError):
                await self.client.cancel(*live)

    def _follow(self, handle: Handle, task: AsyncTask) -> None:
        self._live[handle.id] = handle
        self._tg.start_soon(self._follower, handle, task)

    async def _follower(self, handle: Handle, task: AsyncTask) -> None:
        try:
            if task.streaming:
                async for chunk in self.client.stream(task):
                    handle._output(chunk.data)
            with suppress(ParaError):   # a failure is in the outcome
                await task.result()
            handle._finish(task.outcome())
        finally:
            task.close()
            self._retire(handle)

    def _retire(self, handle: Handle) -> None:
        self._live.pop(handle.id, None)
        if not handle.done:
            return
        self._finished[handle.id] = handle
        handle.held = handle.size()
        self._finished_bytes += handle.held
        while self._finished and (len(self._finished) > self.keep_finished or self._finished_bytes > self.keep_bytes):
            _, old = self._finished.popitem(last=False)
            self._finished_bytes -= old.held
