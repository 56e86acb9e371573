"""A task's outcome as an MCP tool result: readable text for the model, structured content for programs.

Every reply says when its call started and finished (unix time, as the server
saw it). A command that exits non-zero is a result, not a tool error: the
error flag is for what para reports as an error (a refusal, a tool's failure,
a lost worker, a limit or a cancel that ended the task).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import mcp.types as types

from para.client import Result
from para.client.paractl_format import grep_lines
from para.ipc import messages as m
from para.mcp_server.tasks import Handle

ERROR_STATES = (m.TIMED_OUT, m.CANCELLED, m.LOST, m.SKIPPED)
REPLY_BYTES = 100_000   # output returned by one task_output call at most; the offset says where to go on
BATCH_REPLY_BYTES = 1 << 20   # output in one batch answer, shared by its tasks; task_output has the rest
BATCH_SHARE_MIN = 1000        # ... yet at least this much per task, however many


def reply(structured: dict[str, Any], text: str, started: float, error: bool = False) -> types.CallToolResult:
    """The tool result: `text`, and `structured` with the call's start and finish times."""
    structured = {**structured, "started": started, "finished": time.time()}
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)],
                                structured_content=structured, is_error=error)


def failure(message: str, started: float, code: str | None = None) -> types.CallToolResult:
    """A tool error: para's message as it is (it says what was wrong and what to do)."""
    return reply({"error": message, "error_code": code}, message, started, error=True)


def is_error(result: Result) -> bool:
    return result.error is not None or result.status in ERROR_STATES


def outcome(result: Result) -> dict[str, Any]:
    """What every finished task reports; a command's exit, output and limit too."""
    out: dict[str, Any] = {"task_id": result.id, "tool": result.tool, "status": result.status,
                           "duration": result.duration}
    if result.error is not None:
        out.update(error=result.error, error_code=result.error_code)
    if result.value is not None:
        out["value"] = result.value
    if result.exit_code is not None or result.signal is not None or result.stdout or result.stderr:
        out.update(exit_code=result.exit_code, signal=result.signal, limit=result.limit, stdout=result.stdout,
                   stderr=result.stderr, truncated=result.truncated, stdout_bytes=result.stdout_bytes,
                   stderr_bytes=result.stderr_bytes)
    return out


def text_of(result: Result, view: dict[str, Any] | None = None) -> str:
    """The readable part: body_of, then how it ended if there is more to say than 'succeeded' (para's
    error message alone when there is nothing else)."""
    body, end = body_of(result, view), ending(result)
    if not body and result.error is not None:
        return end
    return _then(body, f"[{end}]") if end else body


def body_of(result: Result, view: dict[str, Any] | None = None) -> str:
    """A command's output (stderr after stdout); a tool's answer as its CLI would print it. `view`: the
    pool's `tool`, and grep's `root` (its file names are relative to the directory searched) and `context`."""
    view = view or {}
    body = _value_text(view.get("tool", result.tool), result.value, view) if result.value is not None else result.stdout
    return _then(body, f"[stderr]\n{result.stderr}") if result.stderr else body


def _then(text: str, line: str) -> str:
    """`line` on a line of its own after `text`."""
    return f"{text}{'' if not text or text.endswith(chr(10)) else chr(10)}{line}"


def ending(result: Result) -> str:
    """How a task ended, in words, when there is more to say than 'succeeded'."""
    parts = []
    if result.exit_code is not None and result.value is None:   # a tool's own program's exit says nothing
        parts.append(f"exit {result.exit_code}")
    if result.signal is not None:
        parts.append(f"killed by signal {result.signal}")
    if result.limit is not None:
        parts.append(f"ended by its {result.limit} limit")
    if result.error is not None:
        parts.append(result.error)
    elif result.status not in (m.SUCCEEDED, m.FAILED):
        parts.append(result.status)
    if result.truncated:
        parts.append(f"output truncated: {result.stdout_bytes} bytes of stdout, {result.stderr_bytes} of stderr")
    return "; ".join(parts)


def _value_text(tool: str, value: Any, view: dict[str, Any]) -> str:
    if tool == "grep" and isinstance(value, dict):
        root = view.get("root")
        lines = grep_lines(value.get("matches", []), lambda path: os.path.join(root, path) if root else path,
                           view.get("context", 0))
        more = f"\n[{value.get('count')} matches; {len(value.get('matches', []))} shown]" if value.get("truncated") else ""
        return "\n".join(lines) + more if lines else "[no match]"
    if tool == "glob" and isinstance(value, dict):
        return "\n".join(value.get("files", [])) or "[no file matched]"
    if tool == "read" and isinstance(value, dict):
        if value.get("binary"):
            return f"[{value.get('path')} is a binary file of {value.get('size')} bytes]"
        return "\n".join(value.get("lines", []))
    return json.dumps(value, indent=1, default=str)


def finished(handle: Handle, started: float) -> types.CallToolResult:
    """A call whose task ended within its wait."""
    result = handle.result
    return reply(outcome(result), text_of(result, handle.view), started, error=is_error(result))


def running(handle: Handle, waited: float, started: float) -> types.CallToolResult:
    """A call whose task still runs after its wait: its id and its output so far."""
    chunk = output_after(handle, 0)
    text = (f"task {handle.id} is still running after {waited:g}s; follow it with "
            f"task_output(task_id={handle.id!r}, offset={chunk['offset']}), stop it with task_cancel")
    if chunk["output"]:
        text += f"\noutput so far:\n{chunk['output']}"
    return reply({"task_id": handle.id, "tool": handle.tool, "state": handle.state, **chunk}, text, started)


def output_after(handle: Handle, offset: int, limit: int = REPLY_BYTES) -> dict[str, Any]:
    """A handle's output from `offset` (at most REPLY_BYTES): output, the next offset, whether more is
    held, and how many bytes before `offset` were dropped (skipped). A task that streamed nothing
    (not a command) gives its answer's text once it ended, addressed the same way."""
    if handle.log is not None:
        data, begin, skipped = handle.log.read(offset, limit, handle.done)
        end = handle.log.end
    else:
        whole = body_of(handle.result, handle.view).encode() if handle.result is not None else b""
        data, begin, skipped = whole[offset:offset + limit], min(offset, len(whole)), 0
        end = len(whole)
    nxt = begin + len(data)
    return {"output": data.decode("utf-8", "replace"), "offset": nxt, "more": nxt < end, "skipped": skipped}


def task_output(handle: Handle, offset: int, started: float) -> types.CallToolResult:
    """task_output's reply for a task this server holds."""
    chunk = output_after(handle, offset)
    structured: dict[str, Any] = {"task_id": handle.id, "tool": handle.tool, "state": handle.state, **chunk}
    text = chunk["output"]
    if chunk["skipped"]:
        text = f"[{chunk['skipped']} bytes before this were not kept]\n" + text
    if handle.result is not None:
        structured.update({k: v for k, v in outcome(handle.result).items() if k not in ("stdout", "stderr")})
        structured["state"] = handle.result.status
        if not chunk["more"]:
            text = _then(text, f"[{ending(handle.result) or handle.result.status}]")
    if chunk["more"] or handle.result is None:
        text = _then(text, f"[{handle.state}; next offset {chunk['offset']}]")
    return reply(structured, text, started)


def from_parad(task_id: str, body: dict[str, Any], offset: int, started: float) -> types.CallToolResult:
    """task_output's reply for a task this server no longer holds (or never did), from parad's
    record of it (`AsyncClient.task`): its state, and once finished its output from `offset`."""
    result: Result | None = body.get("result")
    state = result.status if result is not None else body.get("task", {}).get("state", "unknown")
    structured: dict[str, Any] = {"task_id": task_id, "state": state, "offset": offset, "more": False, "skipped": 0}
    if result is None:
        return reply({**structured, "output": ""}, f"[task {task_id} is {state}; its output is not kept here]", started)
    whole = body_of(result).encode()
    data = whole[offset:offset + REPLY_BYTES]
    nxt = min(offset, len(whole)) + len(data)
    structured.update(output=data.decode("utf-8", "replace"), offset=nxt, more=nxt < len(whole))
    structured.update({k: v for k, v in outcome(result).items() if k not in ("stdout", "stderr")})
    text = structured["output"]
    return reply(structured, _then(text, f"[{ending(result) or state}]") if nxt >= len(whole) else text, started)


def batch(batch_id: str, handles: dict[str, Handle], waited: float, started: float) -> types.CallToolResult:
    """Every task's result by its name in the batch; a task still running after the wait, by its id.
    The answer holds at most about BATCH_REPLY_BYTES of output: a task with more than its share gives
    its first bytes and the offset task_output goes on from (in words, and as output/offset/more)."""
    share = min(REPLY_BYTES, max(BATCH_SHARE_MIN, BATCH_REPLY_BYTES // max(1, len(handles))))
    out: dict[str, Any] = {}
    lines = []
    for name, handle in handles.items():
        if handle.result is None:
            out[name] = {"task_id": handle.id, "tool": handle.tool, "state": handle.state}
            lines.append(f"## {name}: still running after {waited:g}s: follow it with task_output(task_id={handle.id!r})")
            continue
        out[name], text = _batch_result(handle, share)
        lines.append(f"## {name}: {handle.result.status}\n{text}")
    done = all(h.result is not None for h in handles.values())
    ok = done and all(h.result.ok for h in handles.values())
    structured = {"batch_id": batch_id, "state": "done" if done else "running", "ok": ok, "results": out}
    return reply(structured, "\n".join(lines), started)


def _batch_result(handle: Handle, share: int) -> tuple[dict[str, Any], str]:
    """A finished batch task's structured result and text, its output cut to `share` bytes."""
    result = handle.result
    whole = len(body_of(result, handle.view).encode())
    if whole <= share:
        return outcome(result), text_of(result, handle.view)
    chunk = output_after(handle, 0, share)
    cut = {k: v for k, v in outcome(result).items() if k not in ("stdout", "stderr", "value")}
    note = (f"[{chunk['offset']} of {whole} bytes shown; the rest: "
            f"task_output(task_id={handle.id!r}, offset={chunk['offset']})]")
    end = ending(result)
    return {**cut, **chunk}, _then(_then(chunk["output"], note), f"[{end}]") if end else _then(chunk["output"], note)
