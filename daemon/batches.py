"""Batches: a set of tasks with dependencies (a DAG) and a failure policy.

A client sends every task of a batch at once, ids `BATCH:NAME`, with
`after` naming what each waits for. Before anything runs the whole batch is
checked (batch_plan.py): duplicate ids, unknown dependencies and cycles are
refused with the offending ids named. Tasks with no dependencies are queued
at once; the rest wait (state `pending`) and are queued when their last
dependency succeeds.

When a task fails: `fail_fast` skips every task that has not started;
`continue` skips only what depends on it (directly or not) and runs the rest.
A skipped task gets a result with status `skipped` and the reason.

A string argument may refer to an earlier task's output (`${NAME.stdout}`,
`${NAME.value.KEY}`, ...), resolved when the task is released (batch_plan.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from para.daemon.admission import Refusal, admit, place, pool_for, refuse_if_drained, refuse_if_full_bytes
from para.daemon.batch_plan import BatchError, check_graph, references, resolve, substitute_cwd
from para.daemon.core import Ports
from para.daemon.enqueue import enqueue, release, wake
from para.daemon.pool import Pool
from para.daemon.tasks import Ending, TaskRecord, TaskTable
from para.daemon.workspaces import WorkspacePolicy
from para.ipc import messages as m

POLICIES = ("fail_fast", "continue")


@dataclass(slots=True)
class Batch:
    id: str
    owner: bytes
    on_failure: str
    after: dict[str, list[str]]
    dependents: dict[str, list[str]]
    waiting: dict[str, int]                 # pending task id -> dependencies not yet succeeded
    records: dict[str, TaskRecord]
    started: float = field(default_factory=time.monotonic)
    accepted: float = field(default_factory=time.time)   # wall clock, for the journal
    finished: dict[str, str] = field(default_factory=dict)   # task id -> final status
    first_failure: str | None = None

    def name(self, task_id: str) -> str:
        return task_id.split(":", 1)[1]

    def status(self) -> dict[str, Any]:
        """Totals by state, throughput, error rate and an estimate of the time left."""
        totals: dict[str, int] = {}
        for record in self.records.values():
            totals[record.state] = totals.get(record.state, 0) + 1
        elapsed = time.monotonic() - self.started
        done = len(self.finished)
        failed = sum(1 for s in self.finished.values() if s not in (m.SUCCEEDED, m.SKIPPED))
        rate = done / elapsed if elapsed > 0 else 0.0
        left = len(self.records) - done
        return {
            "batch": self.id, "tasks": len(self.records), "by_state": totals, "done": done,
            "failed": failed, "skipped": sum(1 for s in self.finished.values() if s == m.SKIPPED),
            "elapsed": round(elapsed, 3), "throughput": round(rate, 3),
            "error_rate": round(failed / done, 4) if done else 0.0,
            "eta": round(left / rate, 3) if rate > 0 and left else (0.0 if not left else None),
            "complete": left == 0, "on_failure": self.on_failure, "first_failure": self.first_failure,
        }


class BatchCore(Protocol):
    tasks: TaskTable
    pools: dict[str, Pool]
    workspaces: WorkspacePolicy
    stopping: bool
    ports: Ports

    def want_dispatch(self, pool: Pool) -> None: ...

    def want_maintain(self, pool: Pool) -> None: ...


class BatchRunner:
    """The daemon's batches: accepts them, releases tasks as dependencies finish, applies failure policy.

    It never ends a task itself: `on_end` returns the endings a task's end
    brings about (skips, releases that cannot start), and lifecycle.py ends them.
    """

    def __init__(self, core: BatchCore) -> None:
        self.core = core
        self.batches: dict[str, Batch] = {}
        self.results: dict[str, m.TaskResult] = {}   # finished results of live batches, by task id
        self.done: dict[str, dict[str, Any]] = {}     # final status of the last finished batches

    def submit(self, owner: bytes, msg: m.SubmitBatch, size: int = 0) -> list[str]:
        """Check and start a batch of `size` bytes (its frame); returns its task ids. Raises BatchError or Refusal."""
        if msg.on_failure not in POLICIES:
            raise BatchError(f"on_failure must be one of {', '.join(POLICIES)}, not {msg.on_failure!r}")
        if msg.batch in self.batches:
            raise BatchError(f"batch id {msg.batch!r} is already in use")
        specs = msg.tasks if isinstance(msg.tasks, list) else []
        if not specs:
            raise BatchError(f"batch {msg.batch}: no tasks")
        ids = [getattr(s, "id", None) for s in specs]
        bad = [i for i in ids if not isinstance(i, str) or not i.startswith(f"{msg.batch}:")]
        if bad:
            raise BatchError(f"batch {msg.batch}: task ids must be '{msg.batch}:NAME' (got {bad[:3]})")
        after = {k: list(v) for k, v in (msg.after or {}).items()}
        check_graph(msg.batch, ids, after)
        if isinstance(msg.cwd, str):
            for spec in specs:
                spec.args = substitute_cwd(spec.args, msg.cwd)
        roots = sum(1 for s in specs if not after.get(s.id))
        # Every pool it uses must have room for the whole batch's bytes: simple, and a batch is one frame.
        pools = [self._admit(spec, after.get(spec.id, []), msg.batch, roots, size) for spec in specs]
        batch = Batch(msg.batch, owner, msg.on_failure, after, {}, {}, {})
        for spec, pool in zip(specs, pools):
            deps = set(after.get(spec.id, []))
            batch.waiting[spec.id] = len(deps)
            for d in deps:
                batch.dependents.setdefault(d, []).append(spec.id)
            batch.records[spec.id] = enqueue(self.core.tasks, spec, pool, owner, batch=batch.id, pending=bool(deps),
                                             size=size // len(specs))
        self.batches[batch.id] = batch
        self._journal(batch)
        wake(self.core, {pool for spec, pool in zip(specs, pools) if not after.get(spec.id)})
        return ids

    def _journal(self, batch: Batch, ended: float | None = None) -> None:
        self.core.tasks.store.batch(batch.id, batch.on_failure, batch.after, batch.first_failure, batch.accepted, ended)

    def restore(self, batch_id: str, on_failure: str, after: dict[str, list[str]], first_failure: str | None,
                accepted: float, records: dict[str, TaskRecord], results: dict[str, m.TaskResult]) -> None:
        """A batch from the journal after a restart: its tasks, live and ended, and the results of
        those that ended (what the waiting ones may refer to)."""
        batch = Batch(batch_id, b"", on_failure, after, {}, {}, records, first_failure=first_failure)
        batch.accepted = accepted
        batch.started -= max(0.0, time.time() - accepted)
        for task_id in records:
            deps = set(after.get(task_id, []))
            batch.waiting[task_id] = sum(1 for d in deps if d not in results or results[d].status != m.SUCCEEDED)
            for d in deps:
                batch.dependents.setdefault(d, []).append(task_id)
        batch.finished = {task_id: result.status for task_id, result in results.items()}
        self.batches[batch_id] = batch
        self.results.update(results)

    def resume_pending(self, record: TaskRecord) -> Ending | None:
        """A recovered task that waits for dependencies: released if they all succeeded meanwhile;
        its ending if it cannot start, or if its batch is gone from the journal."""
        batch = self.batches.get(record.batch)
        if batch is None:
            return record, m.TaskResult(record.spec.id, record.spec.tool, m.CANCELLED, error="its batch was not "
                                        "in the journal when parad restarted"), None
        if batch.waiting.get(record.spec.id):
            return None
        released = self._release(batch, record)
        if isinstance(released, Pool):
            wake(self.core, {released})
            return None
        return released   # (stopping is never true during recovery)

    def _admit(self, spec: m.TaskSpec, deps: list[str], batch_id: str, roots: int, size: int) -> Pool:
        """A batch task's pool, or BatchError or Refusal naming the task. One that refers to others'
        results is admitted in full at its release; until then only its tool and drain are checked."""
        names = {d.split(":", 1)[1] for d in deps}
        unknown = references(spec.args) - names
        if unknown:
            raise BatchError(f"task {spec.id.split(':', 1)[1]} refers to {', '.join(sorted(unknown))}, "
                             f"which it does not wait for: add them to its 'after'")
        spec.session = batch_id  # a batch takes turns with other sessions as one
        try:
            if references(spec.args):
                pool = pool_for(spec, self.core.pools)
                place(spec, pool, self.core.workspaces)
                refuse_if_drained(pool)
                refuse_if_full_bytes(pool, size)
            else:
                pool = admit(spec, self.core.pools, self.core.workspaces, adding=roots, size=size)
        except Refusal as refusal:
            raise Refusal(refusal.code, f"task {spec.id.split(':', 1)[1]}: {refusal.message}") from None
        return pool

    def _release(self, batch: Batch, record: TaskRecord) -> Pool | Ending | None:
        """All dependencies succeeded: resolve references and queue the task. Its pool, or its ending if it
        cannot start; None if parad is stopping with a journal (it stays pending for the next parad)."""
        spec = record.spec
        if self.core.stopping and self.core.tasks.store.durable:
            return None   # it waits in the journal, pending, for the next parad (recovery releases it)
        if self.core.stopping:   # nothing would start it: it ends as the queued tasks did
            return record, m.TaskResult(spec.id, spec.tool, m.CANCELLED, error="parad shut down before the task "
                                        "started; submit it again", error_code=m.E_SHUTTING_DOWN), None
        try:
            deps = {batch.name(d): self.results[d] for d in batch.after.get(spec.id, [])}
            spec.args = resolve(spec.args, deps)
            pool = admit(spec, self.core.pools, self.core.workspaces, adding=0, accepted=True)
        except (BatchError, Refusal) as exc:
            message = exc.message if isinstance(exc, Refusal) else str(exc)
            return record, m.TaskResult(spec.id, spec.tool, m.FAILED, error=f"cannot start: {message}",
                                        error_code=m.E_INVALID), None
        release(record, pool)
        self.core.tasks.store.changed(record, spec=True)   # its references resolved, its timeout set
        return pool

    def on_end(self, record: TaskRecord, result: m.TaskResult) -> list[Ending]:
        """A batch task ended (or was skipped): release what waited for it, and return what its end ends."""
        batch = self.batches.get(record.batch)
        if batch is None:
            return []
        batch.finished[record.spec.id] = result.status
        self.results[record.spec.id] = result
        endings: list[Ending] = []
        if result.status == m.SUCCEEDED:
            woken = set()
            for ready in self._unblocked(batch, record):
                released = self._release(batch, ready)
                if released is None:
                    continue
                if isinstance(released, Pool):
                    woken.add(released)
                    continue
                endings.append(released)
                if batch.on_failure == "fail_fast":
                    break   # that failure's end skips the rest: none of them starts
            wake(self.core, woken)
        elif result.status == m.CANCELLED:
            # Not a failure of the plan: only what needed this task cannot run.
            endings = self._skip(self._dependents_of(batch, record),
                                 f"skipped: it depends on {batch.name(record.spec.id)} cancelled")
        elif result.status != m.SKIPPED:
            if batch.first_failure is None:
                batch.first_failure = f"{batch.name(record.spec.id)}: {result.status}"
                self._journal(batch)
            endings = self._after_failure(batch, record)
        self.core.ports.publish(b"progress", lambda: m.TaskEvent(batch.id, "", "batch", batch.status()))
        if len(batch.finished) == len(batch.records):
            self._forget(batch)
        return endings

    @staticmethod
    def _unblocked(batch: Batch, succeeded: TaskRecord) -> Iterator[TaskRecord]:
        """Pending tasks whose last dependency was `succeeded`; lazily, as a release that fails may stop the rest."""
        for j in batch.dependents.get(succeeded.spec.id, []):
            batch.waiting[j] -= 1
            if batch.waiting[j] == 0 and batch.records[j].state == m.PENDING:
                yield batch.records[j]

    def _after_failure(self, batch: Batch, failed: TaskRecord) -> list[Ending]:
        why = f"{batch.name(failed.spec.id)} {failed.result.status if failed.result else 'failed'}"
        if batch.on_failure == "fail_fast":
            doomed = [r for r in batch.records.values() if r.state in (m.PENDING, m.QUEUED, m.RETRY_WAIT)]
            return self._skip(doomed, f"skipped: fail_fast after {why}")
        return self._skip(self._dependents_of(batch, failed), f"skipped: it depends on {why}")

    @staticmethod
    def _dependents_of(batch: Batch, record: TaskRecord) -> list[TaskRecord]:
        """Pending tasks that wait on `record`, directly or not."""
        found: list[TaskRecord] = []
        stack = list(batch.dependents.get(record.spec.id, []))
        while stack:
            dependent = batch.records[stack.pop()]
            if dependent.state == m.PENDING and dependent not in found:
                found.append(dependent)
                stack.extend(batch.dependents.get(dependent.spec.id, []))
        return found

    @staticmethod
    def _skip(records: list[TaskRecord], reason: str) -> list[Ending]:
        return [(record, m.TaskResult(record.spec.id, record.spec.tool, m.SKIPPED, error=reason,
                                      error_code=m.E_SKIPPED), None) for record in records]

    def _forget(self, batch: Batch) -> None:
        self.batches.pop(batch.id, None)
        self._journal(batch, ended=time.time())
        for task_id in batch.records:
            self.results.pop(task_id, None)
        self.done[batch.id] = batch.status()
        while len(self.done) > 1000:
            self.done.pop(next(iter(self.done)))

    def status(self, batch_id: str) -> dict[str, Any] | None:
        batch = self.batches.get(batch_id)
        return batch.status() if batch is not None else self.done.get(batch_id)
