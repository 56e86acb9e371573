"""After a crash or a restart: the journal's unfinished tasks and batches, back in the daemon.

Tasks come back in the order they were accepted, with their priority and
scheduler session:

- queued, waiting to retry: queued again;
- pending (a batch task waiting for its dependencies): waiting again, in its
  batch, which resumes with its dependencies and the results they refer to;
- running: its command died with its worker when parad did, so it runs again
  if the tool is retry-safe or the task has retries left, else it ends
  `lost`, "parad restarted while it ran";
- its idempotency key, if it has one and it is within the window (also of
  an ended task): a repeat gets its result instead of running again;
- a nested task (its parent's command is gone), a task whose stdin was
  streamed (its input is gone) or one whose pool is no longer configured ends,
  saying why.

Nobody owns a recovered task until a client awaits it (clients.py, Await).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Protocol

from para.daemon import retries
from para.daemon.batches import BatchRunner
from para.daemon.dedup import Deduplicator
from para.daemon.journal.store import Journal
from para.daemon.pool import Pool
from para.daemon.tasks import TaskRecord, TaskTable
from para.ipc import messages as m

log = logging.getLogger("parad")


class RecoveryCore(Protocol):
    tasks: TaskTable
    pools: dict[str, Pool]
    dedup: Deduplicator


class Ender(Protocol):
    def complete(self, record: TaskRecord, result: m.TaskResult, wire: bytes | None = None) -> None: ...


def recover(journal: Journal, core: RecoveryCore, batches: BatchRunner, ender: Ender) -> Counter[str]:
    """Put the journal's unfinished work back; how many tasks went which way."""
    started = time.monotonic()
    for record in journal.keyed_since(time.time() - core.dedup.window):   # in acceptance order, as the live ones
        core.dedup.restore(record)
    records = journal.live_records()
    for record in records:
        core.tasks.add(record)
        core.dedup.restore(record)
    _restore_batches(journal, records, batches)
    outcome: Counter[str] = Counter()
    for record in records:
        if record.state not in m.FINAL_STATES:   # else ended meanwhile, with its batch or parent
            outcome[_settle(record, core, batches, ender)] += 1
    if records:
        log.info("recovered %d unfinished tasks from the journal in %.3fs: %s", len(records),
                 time.monotonic() - started, ", ".join(f"{n} {how}" for how, n in sorted(outcome.items())))
    return outcome


def _restore_batches(journal: Journal, records: list[TaskRecord], batches: BatchRunner) -> None:
    by_batch: dict[str, dict[str, TaskRecord]] = {}
    for record in records:
        if record.batch is not None:
            by_batch.setdefault(record.batch, {})[record.spec.id] = record
    for batch_id, on_failure, after, first_failure, accepted in journal.live_batches():
        ended = journal.finished_in_batch(batch_id)
        members = {**{r.spec.id: r for r, _ in ended}, **by_batch.get(batch_id, {})}
        results = {r.spec.id: result for r, result in ended if result is not None}
        batches.restore(batch_id, on_failure, after, first_failure, accepted, members, results)


def _settle(record: TaskRecord, core: RecoveryCore, batches: BatchRunner, ender: Ender) -> str:
    pool = core.pools.get(record.pool)
    why = _cannot_resume(record, pool)
    if why is not None:
        status = m.LOST if record.state == m.RUNNING else m.CANCELLED
        ender.complete(record, m.TaskResult(record.spec.id, record.spec.tool, status, attempts=record.attempts,
                                            error=why, error_code=m.E_LOST if status == m.LOST else None))
        return status
    if record.state == m.PENDING:
        pool.queue.hold(record)
        ending = batches.resume_pending(record)
        if ending is not None:
            ender.complete(*ending)
            return ending[1].status
        return "pending" if record.state == m.PENDING else "queued"
    if record.state == m.RUNNING:
        if not retries.should_retry(record, m.LOST):
            hint = "" if pool.tool.retry_safe else f"; {pool.tool.name} is not retry-safe, submit with retries=N to retry"
            ender.complete(record, m.TaskResult(record.spec.id, record.spec.tool, m.LOST, attempts=record.attempts,
                                                error=f"parad restarted while it ran{hint}", error_code=m.E_LOST))
            return "lost"
        outcome = "retried"
    else:
        outcome = "queued"
    record.state, record.worker = m.QUEUED, None
    pool.queue.push(record)
    if outcome == "retried":   # (a queued one is queued in the journal already)
        core.tasks.store.changed(record)
    return outcome


def _cannot_resume(record: TaskRecord, pool: Pool | None) -> str | None:
    if pool is None:
        return f"parad restarted without pool {record.pool!r} in its config"
    if record.parent is not None:
        return "its parent task's command ended when parad restarted"
    if record.spec.args.get("stdin_stream") is True:
        return "its streamed stdin was cut when parad restarted; submit it again"
    return None
