"""`paractl batch FILE`: run a batch of tasks with dependencies, with live progress.

On a terminal, one progress line is redrawn (done / running / failed /
pending, throughput, ETA); otherwise one plain line per finished task; with
--json, one JSON line per finished task and one for the batch (json_lines).
The exit code is 0 when every task succeeded, else 1.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from para.client import paractl_format as fmt
from para.client.batch import BatchHandle
from para.client.client import Client
from para.client.errors import InvalidRequest
from para.client.paractl_output import emit_line
from para.client.result import Result

REDRAW = 0.2  # seconds between progress queries on a terminal


def load_spec(path: str) -> dict[str, Any]:
    """A batch spec from a YAML or JSON file, or stdin for '-'."""
    import yaml  # paractl only: para.client itself does not import yaml

    try:
        text = sys.stdin.read() if path == "-" else open(path).read()
    except OSError as exc:
        raise InvalidRequest(f"cannot read {path}: {exc.strerror}") from None
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidRequest(f"{path}: neither YAML nor JSON: {exc}") from None
    return spec


def progress_line(p: dict[str, Any]) -> str:
    states = p.get("by_state", {})
    running = states.get("running", 0)
    pending = states.get("pending", 0) + states.get("queued", 0) + states.get("retry_wait", 0)
    eta = "-" if p.get("eta") is None else fmt.duration(p["eta"])
    return (f"done {p['done']}/{p['tasks']}  running {running}  failed {p['failed']}  skipped {p['skipped']}  "
            f"pending {pending}  {p['throughput']:.1f}/s  ETA {eta}")


def task_line(name: str, r: Result) -> str:
    if r.ok:
        return f"ok       {name}  ({fmt.duration(r.duration)})"
    detail = r.error or (f"exit {r.exit_code}" if r.exit_code is not None else r.status)
    if r.exit_code and r.error is None:
        detail = f"exit {r.exit_code}"
    return f"{r.status:<8} {name}: {detail}"


def cmd_batch(client: Client, g: Any, args: Any) -> int:
    handle = client.batch(load_spec(args.file))
    if g.json:
        return json_lines(handle)
    live = sys.stderr.isatty()
    results: dict[str, Result] = {}
    last_draw = 0.0
    for name, result in handle.as_completed():
        results[name] = result
        if live:
            if time.monotonic() - last_draw >= REDRAW or len(results) == len(handle.futures):
                sys.stderr.write("\r\033[K" + progress_line(handle.progress()))
                sys.stderr.flush()
                last_draw = time.monotonic()
            if not result.ok:
                sys.stderr.write("\r\033[K" + task_line(name, result) + "\n")
        else:
            print(task_line(name, result), flush=True)
    if live:
        sys.stderr.write("\n")
    summary = handle.progress()
    print(f"batch {handle.id}: {summary['done']} tasks, {summary['failed']} failed, {summary['skipped']} skipped "
          f"in {fmt.duration(summary['elapsed'])}", file=sys.stderr if live else sys.stdout)
    return 0 if all(r.ok for r in results.values()) else 1


def json_lines(handle: BatchHandle) -> int:
    """--json: one line per task as it finishes, {"task": NAME, "done": N, "tasks": TOTAL, "result": {...}},
    then {"batch": PROGRESS} (the totals `Client.batch(...).progress()` gives)."""
    ok = True
    for done, (name, result) in enumerate(handle.as_completed(), 1):
        ok = ok and result.ok
        emit_line({"task": name, "done": done, "tasks": len(handle.futures), "result": result})
    emit_line({"batch": handle.progress()})
    return 0 if ok else 1
