"""What the supervisor does for client requests arriving on the control socket.

Every request gets an answer: a reply, or an ErrorReply naming what was wrong.
A bad frame from one client never stops the daemon serving the others.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zmq

from para.daemon import children
from para.daemon.admission import Refusal, admit
from para.daemon.batches import BatchError
from para.daemon.dedup import copy_for
from para.daemon.enqueue import enqueue, wake
from para.daemon.metrics import exposition
from para.daemon.outbox import BATCH_FRAMES, Outbox
from para.daemon.pool import Pool
from para.daemon.tasks import TaskRecord
from para.ipc import PROTOCOL_VERSION, codec
from para.ipc import messages as m

if TYPE_CHECKING:
    from para.daemon.supervisor import Supervisor

log = logging.getLogger("parad")

MAX_FOLLOWERS = 64   # repeats of one running task's idempotency key that may wait for its result



class ClientRequests:
    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor
        self.sock: zmq.Socket = supervisor.control
        self.max_size = supervisor.config.daemon.max_message_size
        d = supervisor.config.daemon
        self.outbox = Outbox(self.sock, d.client_output_budget, supervisor.dispatcher.send,
                             self._relay, self._drained, d.output_budget_total)
        self._parent: TaskRecord | None = None   # set while serving a child client (nested tasks)
        self._frame_size = 0                     # bytes of the request being served: what its tasks hold queued
        self.handlers = self._handlers()

    def _handlers(self) -> dict[type, Callable[[bytes, Any], None]]:
        """Which method serves each request (ipc.channels.CLIENT_REQUESTS)."""
        return {
            m.Hello: self._on_hello, m.Ping: self._on_ping, m.Submit: self._on_submit,
            m.SubmitBatch: self._on_submitbatch, m.Scale: self._on_scale, m.Cancel: self._on_cancel,
            m.Query: self._on_query, m.Shutdown: self._on_shutdown,
        }

    def send(self, identity: bytes, frame: bytes) -> None:
        """Queue a frame for a client; flush() sends it (see outbox.py)."""
        self.outbox.send(identity, frame)

    def flush(self) -> None:
        self.outbox.flush()

    def _relay(self, worker_id: str, identity: bytes, frames: list[bytes]) -> None:
        # A client inside a worker's command: its frames go through that worker.
        for start in range(0, len(frames), BATCH_FRAMES):
            batch = frames[start:start + BATCH_FRAMES]
            self.sup.dispatcher.send(worker_id, m.Relay(identity, codec.encode_batch(batch)))

    def _drained(self) -> None:
        # A client is back under its output budget: its queued tasks may start.
        for pool in self.sup.pools.values():
            self.sup.dispatcher.dispatch(pool)

    def _reply(self, identity: bytes, msg: Any) -> None:
        self.send(identity, codec.encode(msg))

    def _error(self, identity: bytes, req: int, code: str, message: str, task_id: str | None = None) -> None:
        self._reply(identity, m.ErrorReply(req, code, message, task_id))

    def _refuse(self, identity: bytes, req: int, code: str, message: str) -> None:
        """A frame that is no request: answered, and counted as a bad frame of its socket."""
        self.sup.intake.drop("relay" if self._parent is not None else "control", message)
        self._error(identity, req, code, message)

    def on_frames(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            if frames:
                self._refuse(frames[0], 0, m.E_PROTOCOL, f"expected one frame per request, got {len(frames) - 1}")
            return
        identity, frame = frames
        if self.outbox.refusing(identity):
            return  # it reads nothing: another answer would only grow what parad holds for it (outbox.py)
        if len(frame) > self.max_size:
            self._refuse(identity, 0, m.E_TOO_LARGE,
                         f"request of {len(frame)} bytes exceeds max_message_size ({self.max_size} bytes); "
                         f"put large inputs in a file and pass its path")
            return
        try:
            msg = codec.decode(frame)
        except codec.ProtocolError as exc:
            self._refuse(identity, 0, m.E_PROTOCOL, str(exc))
            return
        handler = self.handlers.get(type(msg))
        if self._parent is not None and not isinstance(msg, children.REQUESTS):
            self._error(identity, getattr(msg, "req", 0), m.E_INVALID,
                        f"{type(msg).__name__} is not available inside a task: a nested client may submit, cancel and ping")
            return
        if handler is None:
            self._refuse(identity, getattr(msg, "req", 0), m.E_PROTOCOL, f"{type(msg).__name__} is not a client request")
            return
        self._frame_size = len(frame)
        try:
            handler(identity, msg)
        except Exception as exc:  # a bug must cost one request, not the daemon
            log.exception("failed on a %s request", type(msg).__name__)
            self._error(identity, getattr(msg, "req", 0), m.E_INTERNAL,
                        f"parad failed on this request ({type(exc).__name__}: {exc}); see its log")

    # ---- requests ---------------------------------------------------------

    def _on_hello(self, identity: bytes, msg: m.Hello) -> None:
        self._reply(identity, m.Welcome(self.sup.version, PROTOCOL_VERSION, os.getpid(),
                                        sorted(self.sup.pools), self.max_size))

    def _on_ping(self, identity: bytes, msg: m.Ping) -> None:
        self._reply(identity, m.Pong(msg.req))

    def _on_submit(self, identity: bytes, msg: m.Submit) -> None:
        if not isinstance(msg.tasks, list):
            self._error(identity, msg.req, m.E_INVALID, "Submit.tasks must be a list of tasks")
            return
        accepted, woken = [], set()
        size = self._frame_size // max(1, len(msg.tasks))   # each task's share of the frame: no second encoding
        for spec in msg.tasks:
            task_id = getattr(spec, "id", None)
            try:
                pool, original = self._admit(spec, size)
            except Refusal as refusal:
                self._error(identity, msg.req, refusal.code, refusal.message, task_id if isinstance(task_id, str) else None)
                continue
            if original is not None:
                self._repeat(identity, spec.id, original)
            else:
                enqueue(self.sup.tasks, spec, pool, identity, dedup=self.sup.dedup, parent=self._parent, size=size)
                woken.add(pool)
            accepted.append(spec.id)
        if msg.ack:
            self._reply(identity, m.Accepted(msg.req, accepted))
        wake(woken, self.sup.dispatcher.dispatch, self.sup.maintain)

    def _admit(self, spec: m.TaskSpec, size: int) -> tuple[Pool, TaskRecord | None]:
        """A single task's pool, and the task it repeats (same idempotency key) if any; Refusal if it may not run."""
        if self.sup.stopping:
            raise Refusal(m.E_SHUTTING_DOWN, "parad is shutting down; start it again and resubmit")
        pool = admit(spec, self.sup.pools, size=size)
        if spec.id in self.sup.tasks.live:
            raise Refusal(m.E_INVALID, f"task id {spec.id!r} is already in use; ids must be unique")
        original = self.sup.dedup.original(spec)
        if original is not None and original.result is None and len(original.followers) >= MAX_FOLLOWERS:
            # Each repeat gets its own copy of the result when it comes: unbounded, they would
            # put that many copies in one outbox at once.
            raise Refusal(m.E_QUEUE_FULL, f"{MAX_FOLLOWERS} repeats of idempotency key {spec.idempotency_key!r} already "
                                          f"wait for task {original.spec.id}'s result; wait for it, then repeat")
        if self._parent is not None:
            children.adopt(self._parent, spec, pool.config.default_timeout, self.sup.config.daemon.nested_max_depth)
        return pool, original

    def on_relayed(self, worker_id: str, msg: m.Relayed) -> None:
        """A request from a client inside the command of task `msg.task_id` (nested tasks)."""
        owner = children.owner_for(worker_id, msg.identity)
        parent = self.sup.tasks.live.get(msg.task_id)
        if parent is None or parent.worker != worker_id:
            self._error(owner, 0, m.E_INVALID, f"task {msg.task_id} is no longer running; its children cannot start")
            return
        self._parent = parent
        try:
            self.on_frames([owner, msg.frame])
        finally:
            self._parent = None

    def _repeat(self, identity: bytes, task_id: str, original: TaskRecord) -> None:
        """A repeat of `original` (same idempotency key): its result, now or when it comes."""
        if original.result is not None:
            self.send(identity, codec.encode(m.Done(copy_for(original.result, task_id))))
        else:
            original.followers.append((identity, task_id))

    def _on_submitbatch(self, identity: bytes, msg: m.SubmitBatch) -> None:
        if self.sup.stopping:
            self._error(identity, msg.req, m.E_SHUTTING_DOWN, "parad is shutting down; start it again and resubmit")
            return
        try:
            ids = self.sup.batches.submit(identity, msg, self._frame_size)
        except BatchError as exc:
            self._error(identity, msg.req, m.E_INVALID, str(exc))
            return
        except Refusal as refusal:
            self._error(identity, msg.req, refusal.code, refusal.message)
            return
        self._reply(identity, m.Accepted(msg.req, ids))

    def _on_scale(self, identity: bytes, msg: m.Scale) -> None:
        pool = self.sup.pools.get(msg.pool) if isinstance(msg.pool, str) else None
        if pool is None:
            self._error(identity, msg.req, m.E_NOT_FOUND, f"no pool {msg.pool!r}; pools: {', '.join(sorted(self.sup.pools))}")
            return
        n = msg.workers
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= pool.config.max_workers):
            self._error(identity, msg.req, m.E_INVALID,
                        f"workers must be 0..{pool.config.max_workers} (pool {pool.name!r}'s max_workers), not {n!r}")
            return
        log.info("pool %s: %s by a client", pool.name, "automatic size" if n is None else f"pinned to {n} workers")
        pool.pinned = n
        self.sup.maintain(pool)
        self.sup.dispatcher.dispatch(pool)
        self._reply(identity, m.Reply(msg.req, pool.summary()))

    def _on_cancel(self, identity: bytes, msg: m.Cancel) -> None:
        ids = msg.task_ids if isinstance(msg.task_ids, list) else []
        records = [self.sup.tasks.live.get(t) if isinstance(t, str) else None for t in ids]
        missing = [t for t, r in zip(ids, records) if r is None]
        chosen = {r.spec.id: r for r in records if r is not None}
        if msg.session is not None or msg.everything:
            for record in self.sup.tasks.live.values():
                if (msg.session is not None and record.spec.session == msg.session) or (
                        msg.everything and record.owner == identity):
                    chosen.setdefault(record.spec.id, record)
        if self._parent is not None:  # a child client may cancel only its own tasks
            missing += [i for i, r in chosen.items() if r.owner != identity]
            chosen = {i: r for i, r in chosen.items() if r.owner == identity}
        for record in list(chosen.values()):
            self.sup.lifecycle.cancel(record)
        self._reply(identity, m.Reply(msg.req, {"cancelled": list(chosen), "not_running": missing}))

    def _on_query(self, identity: bytes, msg: m.Query) -> None:
        sup = self.sup
        if msg.what == "status":
            body: Any = sup.status()
        elif msg.what == "workers":
            body = sup.worker_list()
        elif msg.what == "ps":
            body = [r.summary() for r in sup.tasks.live.values()]
        elif msg.what == "metrics":
            body = exposition(sup.metrics)
        elif msg.what == "batch":
            body = sup.batches.status(msg.arg) if isinstance(msg.arg, str) else None
            if body is None:
                self._error(identity, msg.req, m.E_NOT_FOUND, f"no batch {msg.arg!r}")
                return
        elif msg.what == "task":
            record = sup.tasks.get(msg.arg) if isinstance(msg.arg, str) else None
            if record is None:
                self._error(identity, msg.req, m.E_NOT_FOUND, f"no task {msg.arg!r}: finished results are kept up to "
                            f"daemon.finished_task_retention results and daemon.finished_task_bytes bytes, "
                            f"oldest dropped first")
                return
            body = {"task": record.summary(), "result": record.result}
        else:
            self._error(identity, msg.req, m.E_INVALID, f"unknown query {msg.what!r}; ask for status, workers, ps, metrics, task or batch")
            return
        self._reply(identity, m.Reply(msg.req, body))

    def _on_shutdown(self, identity: bytes, msg: m.Shutdown) -> None:
        log.info("shutdown requested by a client")
        self._reply(identity, m.Reply(msg.req, {"stopping": True, "pid": os.getpid()}))
        self.sup.shutdown()
