"""How tasks end: a result, a retry, a loss with their worker, a cancel.

The supervisor decides when (a worker's Done, a worker's death, a client's
cancel); this module decides what follows for the task, its owner, its
followers, its parent and children, and its batch.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from para.daemon import dedup, retries
from para.daemon.pool import FAILED, Pool
from para.daemon.tasks import TaskRecord
from para.ipc import codec
from para.ipc import messages as m

if TYPE_CHECKING:
    from para.daemon.supervisor import Supervisor

log = logging.getLogger("parad")


class TaskLifecycle:
    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor

    def settle(self, pool: Pool, record: TaskRecord, result: m.TaskResult, wire: bytes) -> None:
        """A worker's answer: a retry if the task earns one, else the task's end."""
        record.worker_deaths = 0
        if result.status in (m.FAILED, m.TIMED_OUT) and retries.should_retry(record, result.status) and not self.sup.stopping:
            self.retry_later(pool, record, result.error or result.status)
        else:
            self.complete(record, result, wire)

    def complete(self, record: TaskRecord, result: m.TaskResult, wire: bytes | None = None) -> None:
        """Finish a task and tell its owner; `wire` is the worker's encoded Done, forwarded as is."""
        sup = self.sup
        if wire is None or result.attempts != record.attempts:
            result.attempts = max(result.attempts, record.attempts)
            wire = codec.encode(m.Done(result))
        if record.batch is not None:  # a pending batch task's bytes stop counting in its queue
            sup.pools[record.pool].queue.unhold(record)
        sup.tasks.finish(record, result, len(wire))
        if record.owner is not None:
            sup.clients.outbox.result(record.owner, record.spec.id, wire)
        for child_id in list(record.children):  # a parent's end ends its children
            child = sup.tasks.live.get(child_id)
            if child is not None:
                self.cancel(child)
        parent = sup.tasks.live.get(record.parent) if record.parent else None
        if parent is not None:
            parent.children.discard(record.spec.id)
        for owner, task_id in record.followers:
            sup.clients.send(owner, codec.encode(m.Done(dedup.copy_for(result, task_id))))
        if record.batch is not None:
            sup.batches.on_complete(record, result)
        sup.events.publish(b"results", lambda: m.TaskEvent(
            result.id, result.worker or "", "result",
            {"status": result.status, "exit_code": result.exit_code, "duration": result.duration}))

    def cancel(self, record: TaskRecord) -> None:
        record.cancel_requested = True
        if record.state == m.QUEUED:
            self.sup.pools[record.pool].queue.discard(record)
            self.complete(record, m.TaskResult(record.spec.id, record.spec.tool, m.CANCELLED,
                                               attempts=record.attempts, error="cancelled before it started"))
        elif record.state == m.RUNNING and record.worker:
            self.sup.dispatcher.send(record.worker, m.CancelTask(record.spec.id))
        elif record.state in (m.RETRY_WAIT, m.PENDING):
            self.complete(record, m.TaskResult(record.spec.id, record.spec.tool, m.CANCELLED, attempts=record.attempts,
                                               error=f"cancelled while {record.state.replace('_', ' ')}"))

    def fail_queued(self, pool: Pool) -> None:
        """The pool's circuit opened: its queued tasks end now, naming why, instead of waiting in silence.

        None of them had started, so nothing is lost; the client may submit
        them again once the pool recovers.
        """
        reason = pool.failure_message()
        for record in pool.queue.drain():
            self._fail_unstarted(record, reason)

    def _fail_unstarted(self, record: TaskRecord, reason: str, what: str = "not started") -> None:
        self.complete(record, m.TaskResult(record.spec.id, record.spec.tool, m.FAILED, attempts=record.attempts,
                                           error=f"{what}: {reason}", error_code=m.E_POOL_FAILED))

    def lost(self, pool: Pool, record: TaskRecord, reason: str) -> None:
        """Its worker died holding it: cancelled, poison, retried or lost, by the task's and the tool's rules."""
        record.worker_deaths += 1
        if record.cancel_requested:
            self.complete(record, m.TaskResult(record.spec.id, record.spec.tool, m.CANCELLED,
                                               attempts=record.attempts, error=f"cancelled; {reason}"))
        elif retries.poisoned(record, pool.config.poison_after):
            self.complete(record, m.TaskResult(
                record.spec.id, record.spec.tool, m.FAILED, attempts=record.attempts, worker=record.worker,
                error=f"poison task: {record.worker_deaths} workers in a row died running it (last: {reason}); "
                      f"not retried", error_code=m.E_POISON))
        elif retries.should_retry(record, m.LOST) and not self.sup.stopping:
            self.retry_later(pool, record, reason)
        else:
            hint = "" if pool.tool.retry_safe else f"; {pool.tool.name} is not retry-safe, submit with retries=N to retry"
            self.complete(record, m.TaskResult(
                record.spec.id, record.spec.tool, m.LOST, attempts=record.attempts, worker=record.worker,
                error=f"{reason} while running the task{hint}", error_code=m.E_LOST))

    def retry_later(self, pool: Pool, record: TaskRecord, reason: str) -> None:
        base = record.spec.retry_backoff if record.spec.retry_backoff is not None else pool.config.retry_backoff
        delay = retries.backoff(record.attempts, base, pool.config.retry_backoff_max)
        log.info("task %s: attempt %d of %d ended (%s); retrying in %.2fs",
                 record.spec.id, record.attempts, record.max_attempts, reason, delay)
        record.state, record.worker = m.RETRY_WAIT, None
        self.sup.timers.call_later(delay, lambda: self._requeue(pool, record))

    def _requeue(self, pool: Pool, record: TaskRecord) -> None:
        if record.state != m.RETRY_WAIT:
            return  # cancelled, or settled by a shutdown, while it waited
        if pool.state == FAILED:   # its circuit opened meanwhile: queued, it would wait in silence
            self._fail_unstarted(record, pool.failure_message(), "not retried")
            return
        record.state = m.QUEUED
        pool.queue.push_front(record)
        self.sup.dispatcher.dispatch(pool)
