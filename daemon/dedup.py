"""Idempotency keys: an identical request within a window gets the first task's result.

A task may carry an `idempotency_key`. Within `idempotency_window` seconds
of the first task with that key (per tool), another one with the same key
and the same arguments does not run: it gets the first one's result, at once
if that has finished, else when it does. The same key with other arguments
is refused: it is a caller's bug, not a repeat.
"""

from __future__ import annotations

import collections
import hashlib
import json
import time
from dataclasses import dataclass

from para.daemon.admission import Refusal
from para.daemon.tasks import TaskRecord
from para.ipc import messages as m


@dataclass(slots=True)
class _Entry:
    record: TaskRecord
    digest: bytes
    expires: float


def _digest(spec: m.TaskSpec) -> bytes:
    # Canonical JSON: the same arguments in any key order give the same digest.
    return hashlib.sha256(json.dumps(spec.args, sort_keys=True, default=repr).encode()).digest()


class Deduplicator:
    def __init__(self, window: float) -> None:
        self.window = window
        self._entries: collections.OrderedDict[tuple[str, str], _Entry] = collections.OrderedDict()

    def original(self, spec: m.TaskSpec) -> TaskRecord | None:
        """The first task of `spec`'s key, if one is within the window; Refusal if its arguments differ."""
        if spec.idempotency_key is None:
            return None
        self._prune(time.monotonic())
        entry = self._entries.get((spec.tool, spec.idempotency_key))
        if entry is None:
            return None
        if entry.digest != _digest(spec):
            raise Refusal(m.E_INVALID, f"idempotency_key {spec.idempotency_key!r} was used within the last "
                                       f"{self.window:g}s with other arguments; use a new key for a new request")
        return entry.record

    def remember(self, spec: m.TaskSpec, record: TaskRecord) -> None:
        if spec.idempotency_key is not None:
            key = (spec.tool, spec.idempotency_key)
            self._entries[key] = _Entry(record, _digest(spec), time.monotonic() + self.window)
            self._entries.move_to_end(key)

    def restore(self, record: TaskRecord) -> None:
        """Remember a task a restarted parad read back from its journal, for what is left of its window."""
        spec = record.spec
        if spec.idempotency_key is not None:
            left = self.window - max(0.0, time.time() - record.accepted)
            if left > 0:
                self._entries[(spec.tool, spec.idempotency_key)] = _Entry(record, _digest(spec), time.monotonic() + left)

    def _prune(self, now: float) -> None:
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.expires > now:
                return
            del self._entries[key]


def copy_for(result: m.TaskResult, task_id: str) -> m.TaskResult:
    """The first task's result, under the id of the request that repeated it."""
    values = {f: getattr(result, f) for f in m.TaskResult.__dataclass_fields__}
    return m.TaskResult(**{**values, "id": task_id})
