"""A task as a journal row, and back: what of a TaskRecord survives parad.

A row holds what recovery needs to queue the task again as it was (its spec,
pool, state, attempts, retry policy, batch, parent and scheduler session) and,
once it ended, its result: the encoded Done inline, or the name of a file
beside the journal for a large one. `history` gains one line per state the
task passed through: `<unix time> <state> <attempt>[ <worker>]`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from typing import Any

from para.daemon.scheduler import session_key
from para.daemon.tasks import TaskRecord
from para.ipc import codec
from para.ipc import messages as m

# A task's first write inserts its row (replacing an ended one of the same id: a new task that
# reuses an id); later writes update it, adding to its history.
INSERT = """INSERT OR REPLACE INTO tasks (id, pool, state, attempts, max_attempts, retry_on, batch, parent, depth,
    session, spec, arg_bytes, accepted, ended, result, result_file, size, history, idem)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
# The same for a row whose batch, parent, depth, result file and key are their defaults: each column
# bound costs SQLite time, and most rows are such (a map()'s).
PLAIN_INSERT = """INSERT OR REPLACE INTO tasks (id, pool, state, attempts, max_attempts, retry_on, session, spec,
    arg_bytes, accepted, ended, result, size, history) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
UPDATE = """UPDATE tasks SET state = ?, attempts = ?, ended = ?, result = ?, result_file = ?, size = ?,
    history = history || ? WHERE id = ?"""
LIVE_COLUMNS = "id, pool, state, attempts, max_attempts, retry_on, batch, parent, depth, session, spec, arg_bytes, accepted"


# One state a task passed through, as `note` takes it: (time.time(), state, attempt, worker or None).
Entry = tuple[float, str, int, "str | None"]


def note(record: TaskRecord) -> Entry:
    """`record`'s state now, for its history; formatted only when its row is written (`history`)."""
    state = record.state
    return time.time(), state, record.attempts, record.worker if state == m.RUNNING else None


def history(entries: list[Entry]) -> str:
    """History lines: `<unix time> <state> <attempt>[ <worker>]`."""
    return "".join([f"{at:.3f} {state} {attempt} {worker}\n" if worker else f"{at:.3f} {state} {attempt}\n"
                    for at, state, attempt, worker in entries])


def spec_blob(record: TaskRecord) -> bytes:
    """The spec as the row keeps it: without the caller's environment once the task cannot run again
    (`runs_again`): then nothing reads it back, and a journal keeps no secret it does not need."""
    spec = record.spec
    if "caller_env" in spec.args and not runs_again(record):
        spec = dataclasses.replace(spec, args={k: v for k, v in spec.args.items() if k != "caller_env"})
    return codec.encode(spec)


def runs_again(record: TaskRecord) -> bool:
    """Whether a restarted parad may run `record` again, or compare its arguments (an idempotency key's
    repeat): it has not ended and has attempts left, or it has a key. A task put back in its queue
    (dispatch.py `_unstart`) has its attempt back: its spec is written again whole (`changed(spec=True)`)."""
    return record.spec.idempotency_key is not None or (
        record.state not in m.FINAL_STATES and record.attempts < record.max_attempts)


def insert(record: TaskRecord, spec: bytes, history: str, result: bytes | None, result_file: str | None,
           size: int) -> tuple[str, tuple[Any, ...]]:
    """The INSERT for `record` as it is now, and its parameters: PLAIN_INSERT for a task of no batch,
    parent or key whose result is inline (a map()'s), whose other columns keep their defaults."""
    session = session_key(record)
    session = session if isinstance(session, (bytes, str)) else None
    spec_of = record.spec
    if record.batch is None and record.parent is None and spec_of.idempotency_key is None and result_file is None:
        return PLAIN_INSERT, (spec_of.id, record.pool, record.state, record.attempts, record.max_attempts,
                              _retry_on(record.retry_on), session, spec, record.arg_bytes, record.accepted,
                              record.ended, result, size, history)
    return INSERT, (spec_of.id, record.pool, record.state, record.attempts, record.max_attempts,
                    _retry_on(record.retry_on), record.batch, record.parent, record.depth, session, spec,
                    record.arg_bytes, record.accepted, record.ended, result, result_file, size, history,
                    None if spec_of.idempotency_key is None else f"{spec_of.tool}\0{spec_of.idempotency_key}")


_RETRY_ON: dict[frozenset[str], str] = {}


def _retry_on(statuses: frozenset[str]) -> str:
    text = _RETRY_ON.get(statuses)
    if text is None:
        text = _RETRY_ON[statuses] = ",".join(sorted(statuses))
    return text


def update(record: TaskRecord, history: str, result: bytes | None, result_file: str | None,
           size: int) -> tuple[Any, ...]:
    """UPDATE's parameters for `record` as it is now."""
    return (record.state, record.attempts, record.ended, result, result_file, size, history, record.spec.id)


def result_file_name(task_id: str, accepted: float) -> str:
    """A file name for a task's result that no id can turn into a path (ids may be '..')."""
    return hashlib.blake2b(f"{task_id}@{accepted!r}".encode(), digest_size=16).hexdigest()


def record_of(values: tuple[Any, ...]) -> TaskRecord:
    """The TaskRecord of a live row (LIVE_COLUMNS); it has no owner until a client awaits it."""
    (task_id, pool, state, attempts, max_attempts, retry_on, batch, parent, depth, session,
     spec, arg_bytes, accepted) = values
    decoded = codec.decode(spec)
    if not isinstance(decoded, m.TaskSpec) or decoded.id != task_id:
        raise ValueError(f"task {task_id}: its spec in the journal does not decode to that task")
    record = TaskRecord(decoded, pool, None, max_attempts, state=state, attempts=attempts,
                        retry_on=frozenset(s for s in retry_on.split(",") if s), batch=batch, parent=parent,
                        depth=depth, arg_bytes=arg_bytes, accepted=accepted)
    record.session = session   # its turn in the scheduler, as before: its owner's, named, or its parent's
    record.submitted = time.monotonic() - max(0.0, time.time() - accepted)
    return record


def summary(values: tuple[Any, ...]) -> dict[str, Any]:
    """A finished row's summary, shaped like TaskRecord.summary()."""
    task_id, pool, state, attempts, batch, parent, spec, accepted, ended = values
    decoded = codec.decode(spec)
    return {"id": task_id, "tool": decoded.tool, "pool": pool, "state": state, "attempts": attempts,
            "worker": None, "session": decoded.session, "priority": decoded.priority, "batch": batch,
            "parent": parent, "age": round(time.time() - accepted, 3), "running_for": None,
            "ended": ended}
