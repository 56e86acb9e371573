"""The SDK wiring: tools/list and tools/call on the MCP SDK's low-level Server, over parad's AsyncClient.

A call of a pool's tool is a para task, followed for at most its wait (a
command's `wait` argument; WAIT_DEFAULT for other tools), with a progress
notification on output and every second when the request carries a
progressToken; a task still running then is answered with its id and output so
far. A call the client cancels (notifications/cancelled) cancels its task, or
its batch; a task_output call cancelled only stops waiting. Any para error is a
tool error (isError) with para's message; a bug in this server is logged to
stderr and told as one line, never as a traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from importlib.metadata import version
from typing import Any

import anyio
import mcp.types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server

from para.client import AsyncClient, ParaError, TaskError
from para.mcp_server import results
from para.mcp_server.arguments import ArgumentError, batch_spec, check, pool_call
from para.mcp_server.catalog import Catalog, Entry
from para.mcp_server.tasks import Handle, TaskBook

log = logging.getLogger("para.mcp_server")

PROGRESS_EVERY = 1.0    # seconds between progress notifications while nothing happens
PROGRESS_MIN = 0.25     # and at least this long between two, however fast output comes
CANCEL_SETTLE = 5.0     # seconds task_cancel waits to report the task's end
INSTRUCTIONS = (
    "para runs these tools in parallel in warm sandboxed workers: call grep, glob and read (read-only) many at "
    "once. bash runs in this project, confined (writable: the project; network: as configured); a command still "
    "running after `wait` seconds returns a task_id: follow it with task_output, stop it with task_cancel. batch "
    "runs many calls in one request, in parallel, with dependencies between them.")

Context = ServerRequestContext[Any, Any]


class ParaServer:
    """What para-mcp answers, over one AsyncClient and the TaskBook of the tasks it started.
    `cwd` is the directory it was started in: every task's default working directory."""

    def __init__(self, client: AsyncClient, book: TaskBook, cwd: str) -> None:
        self.client, self.book, self.cwd = client, book, cwd
        self.catalog = Catalog([])
        self._warned: set[str] = set()
        self._own: dict[str, Callable[[Context, dict[str, Any], float], Awaitable[types.CallToolResult]]] = {
            "task_output": self._task_output, "task_cancel": self._task_cancel, "task_list": self._task_list,
            "batch": self._batch}

    def lowlevel(self) -> Server:
        """The SDK's Server with this server's handlers."""
        return Server("para", version=version("para"), instructions=INSTRUCTIONS,
                      on_list_tools=self.list_tools, on_call_tool=self.call_tool)

    async def refresh(self) -> Catalog:
        """Ask parad which pools it runs now (a restart may have changed them)."""
        self.catalog = Catalog(await self.client.tools())
        for why in set(self.catalog.skipped) - self._warned:
            log.warning("not offered: %s", why)
            self._warned.add(why)
        return self.catalog

    async def list_tools(self, ctx: Context, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=(await self.refresh()).tools())

    async def call_tool(self, ctx: Context, params: types.CallToolRequestParams) -> types.CallToolResult:
        started = time.time()
        try:
            return await self._call(ctx, params.name, params.arguments or {}, started)
        except ArgumentError as exc:
            return results.failure(str(exc), started, "invalid_arguments")
        except ParaError as exc:
            return results.failure(str(exc), started, getattr(exc, "code", None) or type(exc).__name__)
        except Exception as exc:   # a bug here: the agent gets one line, the log the traceback
            log.exception("call of %s failed", params.name)
            return results.failure(f"para-mcp failed on this call ({type(exc).__name__}: {exc}); "
                                   f"its stderr has the details", started, "internal")

    async def _call(self, ctx: Context, name: str, arguments: dict[str, Any], started: float) -> types.CallToolResult:
        schema = self.catalog.schema(name)
        if schema is None:   # not listed yet, or a pool added since
            schema = (await self.refresh()).schema(name)
        if schema is None:
            raise ArgumentError(f"unknown tool {name!r}; the tools are {', '.join(t.name for t in self.catalog.tools())}")
        check(name, schema, arguments)
        if name in self._own:
            return await self._own[name](ctx, arguments, started)
        return await self._pool(ctx, self.catalog.pools[name], arguments, started)

    # ---- the tools ------------------------------------------------------------------

    async def _pool(self, ctx: Context, entry: Entry, arguments: dict[str, Any], started: float) -> types.CallToolResult:
        call = pool_call(entry, arguments, self.cwd)
        with anyio.CancelScope(shield=True):   # a task parad accepted always gets a handle, so a cancel can reach it
            handle = await self.book.start(entry.name, call.args, call.options, stream=entry.runs_commands, view=call.view)
        await follow(ctx, [handle], call.wait, lambda: handle.done, lambda: self.book.cancel(handle.id))
        return results.finished(handle, started) if handle.done else results.running(handle, call.wait, started)

    async def _task_output(self, ctx: Context, arguments: dict[str, Any], started: float) -> types.CallToolResult:
        task_id, offset, wait = arguments["task_id"], arguments.get("offset", 0), float(arguments.get("wait", 0))
        handle = self.book.get(task_id)
        if handle is None:
            return await self._output_from_parad(task_id, offset, wait, started)
        await follow(ctx, [handle], wait, lambda: handle.done or (handle.log is not None and handle.log.end > offset))
        return results.task_output(handle, offset, started)

    async def _output_from_parad(self, task_id: str, offset: int, wait: float, started: float) -> types.CallToolResult:
        """A task this server does not hold (dropped, or another client's): what parad knows of it."""
        if wait > 0:
            with suppress(TaskError):   # it ended badly, or not within `wait`: the state says which
                await self.client.result(task_id, timeout=wait)
        return results.from_parad(task_id, await self.client.task(task_id), offset, started)

    async def _task_cancel(self, ctx: Context, arguments: dict[str, Any], started: float) -> types.CallToolResult:
        task_id = arguments["task_id"]
        cancelled = task_id in (await self.book.cancel(task_id)).get("cancelled", [])
        handle = self.book.get(task_id)
        if handle is not None:
            if cancelled:
                await follow(ctx, [handle], CANCEL_SETTLE, lambda: handle.done)
            state = handle.state
        else:
            state = (await self.client.task(task_id))["task"].get("state", "unknown")   # NotFound: a tool error
        text = f"cancelled task {task_id} ({state})" if cancelled else f"task {task_id} was not running ({state})"
        return results.reply({"task_id": task_id, "cancelled": cancelled, "state": state}, text, started)

    async def _task_list(self, ctx: Context, arguments: dict[str, Any], started: float) -> types.CallToolResult:
        rows = [{"task_id": h.id, "tool": h.tool, "state": h.state, "command": h.summary, "started": h.started,
                 "finished": h.finished, "output_bytes": h.log.end if h.log is not None else None}
                for h in self.book.handles()]
        text = "\n".join(f"{r['task_id']}  {r['tool']}  {r['state']}  {r['command']}" for r in rows) or "no tasks"
        return results.reply({"tasks": rows}, text, started)

    async def _batch(self, ctx: Context, arguments: dict[str, Any], started: float) -> types.CallToolResult:
        spec, wait = batch_spec(self.catalog, arguments, self.cwd)
        with anyio.CancelScope(shield=True):
            batch_id, handles = await self.book.start_batch(spec)
        every = list(handles.values())
        await follow(ctx, every, wait, lambda: all(h.done for h in every),
                     lambda: self.client.cancel(session=batch_id))
        return results.batch(batch_id, handles, wait, started)


async def follow(ctx: Context, handles: list[Handle], wait: float, until: Callable[[], bool],
                 on_cancel: Callable[[], Awaitable[Any]] | None = None) -> None:
    """Wait up to `wait` seconds for `until()`, telling the client's progressToken (if any) how the tasks
    go. If the client cancels the call meanwhile, `on_cancel` runs (shielded, bounded) before the cancel goes on."""
    try:
        await _wait(ctx, handles, wait, until)
    except anyio.get_cancelled_exc_class():
        if on_cancel is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(CANCEL_SETTLE), suppress(ParaError):
                await on_cancel()
        raise


async def _wait(ctx: Context, handles: list[Handle], wait: float, until: Callable[[], bool]) -> None:
    t0 = last = time.monotonic()
    deadline = t0 + wait
    while not until():
        now = time.monotonic()
        if now >= deadline:
            return
        pending = next((h for h in handles if not h.done), handles[0])
        with anyio.move_on_after(min(deadline - now, PROGRESS_EVERY)):
            await pending.changed.wait()
        now = time.monotonic()
        if now - last >= PROGRESS_MIN and not until():
            last = now
            await _progress(ctx, handles, now - t0)


async def _progress(ctx: Context, handles: list[Handle], elapsed: float) -> None:
    """A progress notification (a no-op unless the request asked for them). Its value is the seconds
    waited, which grows with each notification as MCP requires; the message says how the tasks go."""
    if len(handles) == 1:
        h = handles[0]
        out = f", {h.log.end} bytes of output" if h.log is not None else ""
        message = f"task {h.id}: {h.state} for {elapsed:.0f}s{out}"
    else:
        message = f"{sum(h.done for h in handles)}/{len(handles)} tasks done after {elapsed:.0f}s"
    try:
        await ctx.session.report_progress(round(elapsed, 3), None, message)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):   # the client left; its cancel or EOF follows
        log.debug("progress for %s not sent: the client is gone", handles[0].id)
