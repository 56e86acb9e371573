"""How tasks end: a result, a retry, a loss with their worker, a cancel.

The supervisor decides when (a worker's Done, a worker's death, a client's
cancel); this module decides what follows for the task, its owner, its
followers, its parent and children, and its batch.

A task's end is handled once. What that end ends in turn (its queued
children, the tasks of its batch that can no longer run) comes back as more
endings, handled one after another in `complete`'s own loop: nothing here
calls back into an end already under way.
"""

from __future__ import annotations

import collections
import logging
from typing import Protocol

from para.daemon import dedup, retries
from para.daemon.core import Ports
from para.daemon.pool import FAILED, Pool
from para.daemon.tasks import Ending, TaskRecord, TaskTable
from para.daemon.timers import Timers
from para.ipc import codec
from para.ipc import messages as m

log = logging.getLogger("parad")

class LifecycleCore(Protocol):
    tasks: TaskTable
    pools: dict[str, Pool]
    timers: Timers
    ports: Ports
    stopping: bool

    def want_dispatch(self, pool: Pool) -> None: ...

    def want_maintain(self, pool: Pool) -> None: ...


class BatchReactions(Protocol):
    def on_end(self, record: TaskRecord, result: m.TaskResult) -> list[Ending]:
        """A batch task ended: what its batch releases, and the endings that follow (skips)."""


class TaskLifecycle:
    def __init__(self, core: LifecycleCore, batches: BatchReactions) -> None:
        self.core = core
        self.batches = batches

    def settle(self, pool: Pool, record: TaskRecord, result: m.TaskResult, wire: bytes) -> None:
        """A worker's answer: a retry if the task earns one, else the task's end."""
        record.worker_deaths = 0
        if result.status in (m.FAILED, m.TIMED_OUT) and retries.should_retry(record, result.status) \
                and not self.core.stopping:
            self.retry_later(pool, record, result.error or result.status)
        else:
            self.complete(record, result, wire)

    def complete(self, record: TaskRecord, result: m.TaskResult, wire: bytes | None = None) -> None:
        """End a task and tell its owner; then every task its end ends, each once, in turn.

        `wire` is the worker's encoded Done, forwarded as is when it still says what happened.
        """
        follow = self._end(record, result, wire)
        if not follow:
            return   # the common case: an end that ends nothing else
        endings: collections.deque[Ending] = collections.deque(follow)
        while endings:
            record, result, wire = endings.popleft()
            if record.state not in m.FINAL_STATES:   # else ended meanwhile, by an earlier ending
                endings.extend(self._end(record, result, wire))

    def _end(self, record: TaskRecord, result: m.TaskResult, wire: bytes | None) -> list[Ending]:
        core = self.core
        if wire is None or result.attempts != record.attempts:
            result.attempts = max(result.attempts, record.attempts)
            wire = codec.encode(m.Done(result))
        queue = core.pools[record.pool].queue
        if record.state == m.QUEUED:
            queue.discard(record)
        if record.batch is not None:  # a pending batch task's bytes stop counting in its queue
            queue.unhold(record)
        fenced = core.tasks.finish(record, result, wire)
        if record.owner is not None:
            core.ports.result_to_client(record.owner, record.spec.id, wire, fenced)
        for owner, task_id in record.followers:
            core.ports.durable_to_client(owner, codec.encode(m.Done(dedup.copy_for(result, task_id))))
        parent = core.tasks.live.get(record.parent) if record.parent else None
        if parent is not None:
            parent.children.discard(record.spec.id)
        core.ports.publish(b"results", lambda: m.TaskEvent(
            result.id, result.worker or "", "result",
            {"status": result.status, "exit_code": result.exit_code, "duration": result.duration}))
        follow: list[Ending] = []
        if record.children:   # a parent's end ends its children
            children = (core.tasks.live.get(child_id) for child_id in record.children)
            follow = [ending for child in children if child is not None and (ending := self._cancel(child))]
        if record.batch is not None:
            follow += self.batches.on_end(record, result)
        return follow

    def cancel(self, record: TaskRecord) -> None:
        """A client's cancel: a task that has not started ends now; a running one is told to stop."""
        ending = self._cancel(record)
        if ending is not None:
            self.complete(*ending)

    def _cancel(self, record: TaskRecord) -> Ending | None:
        record.cancel_requested = True
        if record.state == m.RUNNING and record.worker:
            self.core.ports.to_worker(record.worker, m.CancelTask(record.spec.id))
            return None   # its result comes from the worker
        if record.state == m.QUEUED:
            error = "cancelled before it started"
        elif record.state in (m.RETRY_WAIT, m.PENDING):
            error = f"cancelled while {record.state.replace('_', ' ')}"
        else:
            return None
        return record, m.TaskResult(record.spec.id, record.spec.tool, m.CANCELLED, attempts=record.attempts,
                                    error=error), None

    def cancel_unstarted(self, error: str) -> None:
        """Every task that has not started (queued, pending, waiting to retry) ends cancelled, saying why.

        None of them had started, so nothing is lost; the client may submit them again.
        """
        for record in [r for r in self.core.tasks.live.values() if r.state in (m.QUEUED, m.PENDING, m.RETRY_WAIT)]:
            self.complete(record, m.TaskResult(record.spec.id, record.spec.tool, m.CANCELLED, attempts=record.attempts,
                                               error=error, error_code=m.E_SHUTTING_DOWN))

    def fail_queued(self, pool: Pool) -> None:
        """The pool's circuit opened: its queued tasks end now, naming why, instead of waiting in silence."""
        reason = pool.failure_message()
        for record in list(pool.queue.queued()):
            self._fail_unstarted(record, reason)

    def fail_workspace(self, pool: Pool, workspace: str | None, reason: str) -> None:
        """No worker can be made for `workspace`: its queued tasks in `pool` end now, saying why."""
        for record in [r for r in pool.queue.queued() if r.spec.workspace == workspace]:
            self.complete(record, m.TaskResult(record.spec.id, record.spec.tool, m.FAILED, attempts=record.attempts,
                                               error=f"not started: {reason}", error_code=m.E_INVALID))

    def _fail_unstarted(self, record: TaskRecord, reason: str, what: str = "not started") -> None:
        self.complete(record, m.TaskResult(record.spec.id, record.spec.tool, m.FAILED, attempts=record.attempts,
                                           error=f"{what}: {reason}", error_code=m.E_POOL_FAILED))

    def lost(self, pool: Pool, record: TaskRecord, reason: str) -> None:
        """Its worker died holding it: cancelled, poison, retried or lost, by the task's and the tool's rules.
        While parad stops with a journal, it stays `running` there: the next parad retries it or reports it."""
        if self.core.stopping and self.core.tasks.store.durable:
            return
        record.worker_deaths += 1
        if record.cancel_requested:
            self.complete(record, m.TaskResult(record.spec.id, record.spec.tool, m.CANCELLED,
                                               attempts=record.attempts, error=f"cancelled; {reason}"))
        elif retries.poisoned(record, pool.config.poison_after):
            self.complete(record, m.TaskResult(
                record.spec.id, record.spec.tool, m.FAILED, attempts=record.attempts, worker=record.worker,
                error=f"poison task: {record.worker_deaths} workers in a row died running it (last: {reason}); "
                      f"not retried", error_code=m.E_POISON))
        elif retries.should_retry(record, m.LOST) and not self.core.stopping:
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
        self.core.tasks.store.changed(record)
        self.core.timers.call_later(delay, lambda: self._requeue(pool, record))

    def _requeue(self, pool: Pool, record: TaskRecord) -> None:
        if record.state != m.RETRY_WAIT:
            return  # cancelled, or settled by a shutdown, while it waited
        if pool.state == FAILED:   # its circuit opened meanwhile: queued, it would wait in silence
            self._fail_unstarted(record, pool.failure_message(), "not retried")
            return
        record.state = m.QUEUED
        pool.queue.push_front(record)
        self.core.tasks.store.changed(record)
        self.core.want_dispatch(pool)
        if pool.uses_workspace:
            self.core.want_maintain(pool)   # its workspace may have no worker left
