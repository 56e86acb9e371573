"""How paractl shows things: aligned tables, durations, JSON, grep-style lines.

Pure functions from the daemon's answers (plain dicts and lists) to text, so
they are easy to read and to test without a daemon.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from para.client.result import Result

MIB = 1 << 20


# ---- primitives ---------------------------------------------------------------

def table(headers: list[str], rows: list[list[Any]]) -> str:
    """Columns padded to their widest cell; the last column is not padded."""
    cells = [headers] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def size(n: int) -> str:
    """Bytes for people: 512 B, 3.2 MiB."""
    if n < 1024:
        return f"{n} B"
    return f"{n / 1024:.1f} KiB" if n < MIB else f"{n / MIB:.1f} MiB"


def duration(seconds: float | None) -> str:
    """1.5s, 3m12s, 2h05m, 3d4h: short and still exact enough to compare."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{round(seconds, 1):g}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).decode("utf-8", "replace")
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, Result):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj):  # an event: TaskEvent, ErrorReport, Heartbeat
        return {"type": type(obj).__name__, **dataclasses.asdict(obj)}
    raise TypeError(f"cannot show a {type(obj).__name__} as JSON")


def to_json(obj: Any) -> str:
    """Pretty JSON; bytes become text (invalid UTF-8 replaced), Results become dicts."""
    return json.dumps(obj, indent=2, default=_jsonable, ensure_ascii=False)


def to_json_line(obj: Any) -> str:
    """As to_json, on one line: a line of JSON Lines."""
    return json.dumps(obj, default=_jsonable, ensure_ascii=False)


# ---- daemon queries -------------------------------------------------------------

def status(body: dict[str, Any]) -> str:
    d = body.get("daemon", {})
    head = f"parad {d.get('version', '?')}  pid {d.get('pid', '?')}  up {duration(d.get('uptime'))}"
    if d.get("stopping"):
        head += "  (stopping)"
    lines = [head]
    for key, label in (("runtime_dir", "runtime dir"), ("state_dir", "state dir"),
                       ("config", "config"), ("isolation", "isolation")):
        if d.get(key) is not None:
            lines.append(f"  {label:<12} {d[key]}")
    if "sandbox" in body:
        lines.append(f"  {'bubblewrap':<12} {bubblewrap(body['sandbox'].get('host', {}))}")
    pools = body.get("pools", [])
    lines += ["", table(
        ["POOL", "TOOL", "STATE", "READY/WORKERS", "MIN..MAX", "QUEUED", "RUNNING", "CRASHES"],
        [[p["name"], p.get("tool"), p.get("state"), f"{p.get('ready', 0)}/{p.get('workers', 0)}",
          f"{p.get('min_workers')}..{p.get('max_workers')}", p.get("queued"), p.get("running"),
          p.get("crashes")] for p in pools])]
    lines += [f"  {p['name']}: last crash: {p['last_crash']}" for p in pools if p.get("last_crash")]
    lines += [f"  {p['name']}: {p['error']}" for p in pools if p.get("error")]
    lines += sandbox(body.get("sandbox", {}))
    lines += workspaces(body.get("workspaces", []))
    lines += ["", "tasks: " + task_counts(body.get("tasks", {}))]
    lines += journal(body.get("journal"))
    lines += memory(body)
    return "\n".join(lines)


def journal(j: dict[str, Any] | None) -> list[str]:
    """Where tasks are kept across restarts, and whether it can write now."""
    if not j:
        return []
    if j.get("durability") == "off":
        return ["journal: off (nothing kept across a restart of parad)"]
    line = f"journal: {j.get('durability')}, {j.get('path')}, {j.get('commits', 0)} commits"
    if j.get("trouble"):
        line += f"\n  CANNOT WRITE: {j['trouble']}"
    return [line]


def workspaces(entries: list[dict[str, Any]]) -> list[str]:
    """The workspaces tasks run in now, their workers and queued tasks, and what commands may write there."""
    if not entries:
        return []
    lines = ["", "workspaces:"]
    for w in entries:
        counts = ", ".join(f"{pool} {p['workers']} workers, {p['queued']} queued" for pool, p in w["pools"].items())
        lines.append(f"  {w['workspace']}  ({counts})")
        lines.append(f"    writable: {', '.join(w['writable']) or 'nothing'}")
        if "runs_as" in w:
            lines.append(f"    runs as: {w['runs_as']}")
    return lines


def memory(body: dict[str, Any]) -> list[str]:
    """What parad holds: finished results kept for queries, output not yet read by its clients."""
    lines = []
    if "retained" in body:
        kept = body["retained"]
        lines.append(f"kept: {kept['results']} finished results, {size(kept['bytes'])}")
    if "output" in body:
        out = body["output"]
        lines.append(f"held for clients: {size(out['backlog_bytes'])}, {out['clients_over_budget']} over budget, "
                     f"{out['paused_tasks']} commands paused")
    return lines


def bubblewrap(host: dict[str, Any]) -> str:
    """Which bwrap sandboxes this daemon's workers: path, version and where it was found."""
    if not host.get("bubblewrap"):
        return "none found"
    return f"{host['bubblewrap']} {host.get('bubblewrap_version') or '(version unknown)'} " \
           f"(from {host.get('bubblewrap_source') or '?'})"


def sandbox(body: dict[str, Any]) -> list[str]:
    """One line per sandboxed pool: what it asked for, what it got, and what is missing."""
    lines = []
    for name, p in body.get("pools", {}).items():
        if p.get("requested") == "none" and not p.get("degraded"):
            continue
        line = f"  {name}: isolation {p.get('effective')} (asked {p.get('requested')}); limits by {p.get('limits')}"
        lines.append(line + "".join(f"\n    DEGRADED: {d}" for d in p.get("degraded") or []))
    return ["", "sandbox:", *lines] if lines else []


def task_counts(tasks: dict[str, int]) -> str:
    live = tasks.get("live", 0)
    rest = [f"{n} {state}" for state, n in sorted(tasks.items()) if state != "live"]
    return ", ".join([f"{live} live"] + rest)


def workers(body: list[dict[str, Any]]) -> str:
    if not body:
        return "no workers"
    return table(
        ["ID", "POOL", "PID", "STATE", "TASKS", "COMPLETED", "RSS MiB", "CPU s", "HEARTBEAT"],
        [[w["id"], w.get("pool"), w.get("pid"), w.get("state"), len(w.get("tasks") or []),
          w.get("completed"), f"{(w.get('rss') or 0) / MIB:.1f}", f"{w.get('cpu_seconds') or 0:.2f}",
          f"{duration(w.get('last_heartbeat_age'))} ago"] for w in body])


def ps(body: list[dict[str, Any]]) -> str:
    if not body:
        return "no live tasks"
    return table(
        ["ID", "TOOL", "POOL", "STATE", "PRIO", "SESSION", "WORKER", "AGE", "RUNNING"],
        [[t["id"], t.get("tool"), t.get("pool"), t.get("state"), t.get("priority"), t.get("session"),
          t.get("worker"), duration(t.get("age")),
          duration(t["running_for"]) if t.get("running_for") is not None else None] for t in body])


TASK_FIELDS = ("state", "tool", "pool", "attempts", "worker", "session", "priority", "batch", "parent")
RESULT_FIELDS = ("status", "exit_code", "signal", "limit", "error", "attempts", "worker")


def task(body: dict[str, Any]) -> str:
    """`paractl task ID`: the task's state now and, once finished, what its result says (not its output)."""
    summary, result = body.get("task") or {}, body.get("result")
    lines = [f"task {summary.get('id', '?')}"]
    lines += [f"  {key:<10} {summary[key]}" for key in TASK_FIELDS if summary.get(key) is not None]
    if summary.get("running_for") is not None:
        lines.append(f"  {'running':<10} {duration(summary['running_for'])}")
    if isinstance(result, Result):
        lines.append("result")
        lines += [f"  {key:<10} {getattr(result, key)}" for key in RESULT_FIELDS if getattr(result, key) is not None]
        lines.append(f"  {'duration':<10} {duration(result.duration)}")
        lines.append(f"  {'output':<10} stdout {size(result.stdout_bytes)}, stderr {size(result.stderr_bytes)}"
                     + (" (truncated)" if result.truncated else "") + f": paractl result {result.id}")
    return "\n".join(lines)


# ---- tool answers ---------------------------------------------------------------

def grep_lines(matches: list[dict[str, Any]], show_path, context: int) -> list[str]:
    """`path:line:text` for matches, `path-line-text` for context, `--` between groups (grep -n)."""
    lines: list[str] = []
    last: tuple[str, int] | None = None
    for path, number, sep, text in _grep_entries(matches, context):
        if last is not None and last[0] == path and number <= last[1]:
            continue  # already shown as another match's context
        if context and last is not None and (last[0] != path or number > last[1] + 1):
            lines.append("--")
        lines.append(f"{show_path(path)}{sep}{number}{sep}{text}")
        last = (path, number)
    return lines


def _grep_entries(matches: list[dict[str, Any]], context: int):
    """Each match's lines with their numbers. Context lines come without numbers, and the
    daemon may file the next match's leading context under this match's `after`: the first
    `context` of them follow this match, the rest end just before the next match."""
    for i, match in enumerate(matches):
        path, number = match["path"], match["line_number"]
        before, after = match.get("before") or [], match.get("after") or []
        yield from ((path, number - len(before) + j, "-", t) for j, t in enumerate(before))
        yield path, number, ":", match["text"]
        yield from ((path, number + 1 + j, "-", t) for j, t in enumerate(after[:context]))
        extra = after[context:]
        following = matches[i + 1] if i + 1 < len(matches) else None
        if extra and following is not None and following["path"] == path:
            end = following["line_number"] - len(following.get("before") or [])
            yield from ((path, end - len(extra) + j, "-", t) for j, t in enumerate(extra))


def numbered(lines: list[str], first: int) -> list[str]:
    """cat -n style: the 1-based line number, a tab, the line."""
    return [f"{first + i:6d}\t{line}" for i, line in enumerate(lines)]


def event(topic: str, msg: Any) -> str:
    """One line for one event of `paractl watch`."""
    if topic == "metrics":
        return (f"metrics   {msg.worker:<12} rss {msg.rss / MIB:.1f} MiB  cpu {msg.cpu_seconds:.2f}s"
                + (f"  task {msg.task_id}" if msg.task_id else ""))
    if topic == "errors":
        return f"errors    {msg.worker:<12} {msg.task_id or '-'} {msg.kind}: {msg.message}"
    data = msg.info or {}
    if topic == "results":
        code = f" exit {data['exit_code']}" if data.get("exit_code") is not None else ""
        return f"results   {msg.task_id} {data.get('status')}{code} {duration(data.get('duration'))}"
    if msg.kind == "batch":
        return f"progress  batch {msg.task_id}: {data.get('done')}/{data.get('tasks')} done, {data.get('failed')} failed"
    return f"progress  {msg.task_id} {msg.kind} on {msg.worker}"
