"""From an admitted task to its record: the one path single submits and batch tasks share.

admission.py decides whether a task may run here; this module gives it what it
needs to run: its retry policy, its TaskRecord, its idempotency entry, its
place in the task table, and then its default timeout and its pool's queue.
A batch task that waits for dependencies stays `pending` until `release`;
its default timeout is filled in then, after its references are resolved and
it is admitted again, as for a task submitted at that moment.

Which pools to dispatch and grow is asked once per request (`wake`), not per task,
and done once per loop turn (core.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from para.daemon import children, retries
from para.daemon.dedup import Deduplicator
from para.daemon.pool import Pool
from para.daemon.tasks import TaskRecord, TaskTable
from para.ipc import messages as m


def enqueue(tasks: TaskTable, spec: m.TaskSpec, pool: Pool, owner: bytes, *, dedup: Deduplicator | None = None,
            parent: TaskRecord | None = None, batch: str | None = None, pending: bool = False,
            size: int = 0) -> TaskRecord:
    """The record of an admitted task, in the table: queued in `pool`, or pending (a batch task that waits).

    `dedup` remembers its idempotency key; `parent` makes it a nested task's child (children.adopt
    fitted the spec before); `batch` names the batch it belongs to; `size` is its bytes (max_queue_bytes).
    """
    attempts, retry_on = retries.policy_for(spec, pool.tool.retry_safe)
    record = TaskRecord(spec, pool.name, owner, attempts, state=m.PENDING, retry_on=retry_on, batch=batch,
                        arg_bytes=size)
    if parent is not None:
        children.link(parent, record)
    if dedup is not None:
        dedup.remember(spec, record)
    tasks.add(record)
    if pending:
        pool.queue.hold(record)
    else:
        release(record, pool)
    tasks.store.changed(record)
    return record


def release(record: TaskRecord, pool: Pool) -> None:
    """Queue a task in `pool` (a pending one: its dependencies succeeded), with the default timeout if it names none."""
    if record.spec.timeout is None:
        record.spec.timeout = pool.config.default_timeout
    record.state = m.QUEUED
    pool.queue.unhold(record)
    pool.queue.push(record)


class Waker(Protocol):
    def want_dispatch(self, pool: Pool) -> None: ...

    def want_maintain(self, pool: Pool) -> None: ...


def wake(core: Waker, pools: Iterable[Pool]) -> None:
    """New work in `pools`: each is dispatched at the end of the loop turn, and grown if it is short of workers."""
    for pool in pools:
        core.want_dispatch(pool)
        core.want_maintain(pool)
