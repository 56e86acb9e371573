"""What the supervisor does for client requests arriving on the control socket.

Every request gets an answer: a reply, or an ErrorReply naming what was wrong.
A bad frame from one client never stops the daemon serving the others.
A request from a client inside a running task's command (a nested client,
relayed by that task's worker) is served the same way, with its parent task
named in the `Request`: it may submit, cancel and ping.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from para.daemon import children, retries, tool_catalog
from para.daemon.admission import Refusal, admit
from para.daemon.batch_plan import BatchError
from para.daemon.batches import BatchRunner
from para.daemon.config import Config
from para.daemon.core import Ports
from para.daemon.dedup import Deduplicator, copy_for
from para.daemon.enqueue import enqueue
from para.daemon.intake import Intake
from para.daemon.lifecycle import TaskLifecycle
from para.daemon.outbox import Outbox
from para.daemon.pool import OK, READY, Pool
from para.daemon.task_input import InputRouter
from para.daemon.tasks import TaskRecord, TaskTable
from para.daemon.workspaces import WorkspacePolicy
from para.ipc import PROTOCOL_VERSION, codec, shapes
from para.ipc import messages as m
from para.ipc.channels import INPUT_WINDOW

log = logging.getLogger("parad")

MAX_FOLLOWERS = 64   # repeats of one running task's idempotency key that may wait for its result
MAX_AWAIT = 4096     # task ids in one Await


class ClientsCore(Protocol):
    config: Config
    version: str
    boot: str
    tasks: TaskTable
    pools: dict[str, Pool]
    workspaces: WorkspacePolicy
    dedup: Deduplicator
    ports: Ports
    stopping: bool

    def want_dispatch(self, pool: Pool) -> None: ...

    def want_maintain(self, pool: Pool) -> None: ...

    def later(self, callback: Callable[[], None]) -> None: ...


class Daemon(Protocol):
    """What a client may ask of the daemon as a whole."""

    def status(self) -> dict[str, Any]: ...

    def workers(self) -> list[dict[str, Any]]: ...

    def metrics_text(self) -> str: ...

    def shutdown(self) -> None: ...


@dataclass(slots=True)
class Request:
    identity: bytes                    # the client's, as parad routes to it
    size: int                          # bytes of its frame: what its tasks hold queued
    parent: TaskRecord | None = None   # the running task whose command sent it (nested tasks)

    @property
    def socket(self) -> str:
        return "control" if self.parent is None else "relay"


class ClientRequests:
    def __init__(self, core: ClientsCore, lifecycle: TaskLifecycle, batches: BatchRunner, outbox: Outbox,
                 intake: Intake, daemon: Daemon) -> None:
        self.core = core
        self.lifecycle = lifecycle
        self.batches = batches
        self.outbox = outbox
        self.intake = intake
        self.daemon = daemon
        self.inputs = InputRouter(core)   # streamed stdin; the worker reports' side takes its acks
        self.max_size = core.config.daemon.max_message_size
        self.handlers = self._handlers()

    def _handlers(self) -> dict[type, Callable[[Request, Any], None]]:
        """Which method serves each request (ipc.channels.CLIENT_REQUESTS)."""
        return {
            m.Hello: self._on_hello, m.Ping: self._on_ping, m.Submit: self._on_submit,
            m.SubmitBatch: self._on_submitbatch, m.Scale: self._on_scale, m.Cancel: self._on_cancel,
            m.Query: self._on_query, m.Shutdown: self._on_shutdown, m.Input: self._on_input,
            m.Await: self._on_await, m.Prune: self._on_prune,
        }

    def _reply(self, req: Request, msg: Any) -> None:
        self.core.ports.to_client(req.identity, codec.encode(msg))

    def _durable_reply(self, req: Request, msg: Any) -> None:
        """A reply that says the task store keeps something: it leaves after the commit that records it."""
        self.core.ports.durable_to_client(req.identity, codec.encode(msg))

    def _error(self, req: Request, number: int, code: str, message: str, task_id: str | None = None) -> None:
        self._reply(req, m.ErrorReply(number, code, message, task_id))

    def _refuse(self, req: Request, number: int, code: str, message: str) -> None:
        """A frame that is no request: answered, and counted as a bad frame of its socket."""
        self.intake.drop(req.socket, message)
        self._error(req, number, code, message)

    def on_frames(self, frames: list[bytes]) -> None:
        """A message on the control socket: [client identity, request frame]."""
        if len(frames) != 2:
            if frames:
                self._refuse(Request(frames[0], 0), 0, m.E_PROTOCOL,
                             f"expected one frame per request, got {len(frames) - 1}")
            return
        identity, frame = frames
        self._serve(Request(identity, len(frame)), frame)

    def on_relayed(self, worker_id: str, msg: m.Relayed) -> None:
        """A request from a client inside the command of task `msg.task_id` (nested tasks)."""
        req = Request(children.owner_for(worker_id, msg.identity), len(msg.frame))
        parent = self.core.tasks.live.get(msg.task_id)
        if parent is None or parent.worker != worker_id:
            self._error(req, 0, m.E_INVALID, f"task {msg.task_id} is no longer running; its children cannot start")
            return
        req.parent = parent
        self._serve(req, msg.frame)

    def _serve(self, req: Request, frame: bytes) -> None:
        if self.outbox.refusing(req.identity):
            # It reads nothing: another answer would only grow what parad holds for it (outbox.py).
            self._input_unanswered(req, frame)
            return
        if req.size > self.max_size:
            self._refuse(req, codec.request_number(frame), m.E_TOO_LARGE,
                         f"request of {req.size} bytes exceeds max_message_size ({self.max_size} bytes); "
                         f"put large inputs in a file and pass its path")
            return
        try:
            msg = codec.decode(frame)
        except codec.ProtocolError as exc:
            self._refuse(req, codec.request_number(frame), m.E_PROTOCOL, str(exc))
            return
        number = getattr(msg, "req", 0)
        handler = self.handlers.get(type(msg))
        if req.parent is not None and not isinstance(msg, children.REQUESTS):
            self._error(req, number, m.E_INVALID, f"{type(msg).__name__} is not available inside a task: "
                                                  f"a nested client may submit, cancel and ping")
            return
        if handler is None:
            self._refuse(req, number, m.E_PROTOCOL, f"{type(msg).__name__} is not a client request")
            return
        try:
            handler(req, msg)
        except Exception as exc:  # a bug must cost one request, not the daemon
            log.exception("failed on a %s request", type(msg).__name__)
            self._error(req, number, m.E_INTERNAL,
                        f"parad failed on this request ({type(exc).__name__}: {exc}); see its log")

    # ---- requests ---------------------------------------------------------

    def _on_hello(self, req: Request, msg: m.Hello) -> None:
        pools = self.core.pools
        self._reply(req, m.Welcome(self.core.version, PROTOCOL_VERSION, os.getpid(), sorted(pools), self.max_size,
                                   sorted(n for n, p in pools.items() if p.uses_workspace),
                                   sorted(n for n, p in pools.items() if p.reads_as_owner), self.core.boot,
                                   self.core.tasks.store.durable))

    def _on_ping(self, req: Request, msg: m.Ping) -> None:
        self._reply(req, m.Pong(msg.req, self.core.boot))

    def _on_await(self, req: Request, msg: m.Await) -> None:
        """Results by id: a finished task's now, a live one's when it ends (as a follower of it)."""
        ids = msg.task_ids if isinstance(msg.task_ids, list) else None
        if ids is None or len(ids) > MAX_AWAIT or not all(isinstance(i, str) for i in ids):
            self._error(req, msg.req, m.E_INVALID, f"Await.task_ids must be a list of at most {MAX_AWAIT} task ids")
            return
        answer: dict[str, list[str]] = {"finished": [], "waiting": [], "unknown": []}
        for task_id in ids:
            live = self.core.tasks.live.get(task_id)
            if live is not None:
                # As a follower, not its owner: the owner's count in its queue stays right (scheduler.py),
                # and its streamed output, if any, is not sent again.
                if live.owner != req.identity and (req.identity, task_id) not in live.followers:
                    live.followers.append((req.identity, task_id))
                answer["waiting"].append(task_id)
                continue
            done = self.core.tasks.done_frame(task_id)
            if done is None:
                answer["unknown"].append(task_id)
            else:
                self.core.ports.durable_to_client(req.identity, done)
                answer["finished"].append(task_id)
        self._reply(req, m.Reply(msg.req, answer))

    def _on_prune(self, req: Request, msg: m.Prune) -> None:
        older = msg.older_than
        if older is not None and (isinstance(older, bool) or not isinstance(older, (int, float)) or older < 0):
            self._error(req, msg.req, m.E_INVALID, f"older_than must be a number of seconds >= 0, not {older!r}")
            return
        self._reply(req, m.Reply(msg.req, self.core.tasks.prune(older)))

    def _on_submit(self, req: Request, msg: m.Submit) -> None:
        if not isinstance(msg.tasks, list):
            self._error(req, msg.req, m.E_INVALID, "Submit.tasks must be a list of tasks")
            return
        accepted, woken = [], set()
        size = req.size // max(1, len(msg.tasks))   # each task's share of the frame: no second encoding
        for spec in msg.tasks:
            task_id = getattr(spec, "id", None)
            try:
                pool, original = self._admit(req, spec, size)
            except Refusal as refusal:
                self._error(req, msg.req, refusal.code, refusal.message, task_id if isinstance(task_id, str) else None)
                continue
            if original is not None:
                self._repeat(req, spec.id, original)
            else:
                record = enqueue(self.core.tasks, spec, pool, req.identity, dedup=self.core.dedup, parent=req.parent,
                                 size=size)
                # run(), map(): told of nothing before its end, its first write may wait, for its end
                # if it may run again whatever its attempts, else for its start (retries.py)
                if not msg.ack and (pool.tool.retry_safe or retries.first_start_kept(record)):
                    self.core.tasks.store.untold(record)
                woken.add(pool)
            accepted.append(spec.id)
        if msg.ack:
            # Nothing accepted, nothing to journal: held, it would wait for a commit a full disk never lets through.
            (self._durable_reply if accepted else self._reply)(req, m.Accepted(msg.req, accepted))
        for pool in woken:
            self.core.want_dispatch(pool)
            if not _served(pool):   # growing is maintain's, a step every run() would pay for nothing
                self.core.want_maintain(pool)

    def _admit(self, req: Request, spec: m.TaskSpec, size: int) -> tuple[Pool, TaskRecord | None]:
        """A single task's pool, and the task it repeats (same idempotency key) if any; Refusal if it may not run."""
        core = self.core
        if core.stopping:
            raise Refusal(m.E_SHUTTING_DOWN, "parad is shutting down; start it again and resubmit")
        if core.tasks.store.trouble is not None:
            raise Refusal(m.E_JOURNAL, core.tasks.store.trouble)
        inherited = req.parent.spec.workspace if req.parent is not None else None
        pool = admit(spec, core.pools, core.workspaces, size=size, inherited=inherited)
        if spec.id in core.tasks.live:
            raise Refusal(m.E_INVALID, f"task id {spec.id!r} is already in use; ids must be unique")
        original = core.dedup.original(spec)
        if original is not None and original.result is None and len(original.followers) >= MAX_FOLLOWERS:
            # Each repeat gets its own copy of the result when it comes: unbounded, they would
            # put that many copies in one outbox at once.
            raise Refusal(m.E_QUEUE_FULL, f"{MAX_FOLLOWERS} repeats of idempotency key {spec.idempotency_key!r} already "
                                          f"wait for task {original.spec.id}'s result; wait for it, then repeat")
        if req.parent is not None:
            children.adopt(req.parent, spec, pool.config.default_timeout, core.config.daemon.nested_max_depth)
        return pool, original

    def _repeat(self, req: Request, task_id: str, original: TaskRecord) -> None:
        """A repeat of `original` (same idempotency key): its result, now or when it comes."""
        if original.result is not None:   # after the commit that records it, as any Done
            self._durable_reply(req, m.Done(copy_for(original.result, task_id)))
        else:
            original.followers.append((req.identity, task_id))

    def _on_submitbatch(self, req: Request, msg: m.SubmitBatch) -> None:
        if self.core.stopping:
            self._error(req, msg.req, m.E_SHUTTING_DOWN, "parad is shutting down; start it again and resubmit")
            return
        if self.core.tasks.store.trouble is not None:
            self._error(req, msg.req, m.E_JOURNAL, self.core.tasks.store.trouble)
            return
        try:
            ids = self.batches.submit(req.identity, msg, req.size)
        except BatchError as exc:
            self._error(req, msg.req, m.E_INVALID, str(exc))
            return
        except Refusal as refusal:
            self._error(req, msg.req, refusal.code, refusal.message)
            return
        self._durable_reply(req, m.Accepted(msg.req, ids))

    def _on_scale(self, req: Request, msg: m.Scale) -> None:
        pool = self.core.pools.get(msg.pool) if isinstance(msg.pool, str) else None
        if pool is None:
            self._error(req, msg.req, m.E_NOT_FOUND, f"no pool {msg.pool!r}; pools: {', '.join(sorted(self.core.pools))}")
            return
        n = msg.workers
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= pool.config.max_workers):
            self._error(req, msg.req, m.E_INVALID,
                        f"workers must be 0..{pool.config.max_workers} (pool {pool.name!r}'s max_workers), not {n!r}")
            return
        log.info("pool %s: %s by a client", pool.name, "automatic size" if n is None else f"pinned to {n} workers")
        pool.pinned = n
        self.core.want_maintain(pool)
        self.core.want_dispatch(pool)
        self.core.later(lambda: self._reply(req, m.Reply(msg.req, pool.summary())))   # as maintain left it

    def _on_cancel(self, req: Request, msg: m.Cancel) -> None:
        live = self.core.tasks.live
        ids = msg.task_ids if isinstance(msg.task_ids, list) else []
        records = [live.get(t) if isinstance(t, str) else None for t in ids]
        missing = [t for t, r in zip(ids, records) if r is None]
        chosen = {r.spec.id: r for r in records if r is not None}
        if msg.session is not None or msg.everything:
            for record in live.values():
                if (msg.session is not None and record.spec.session == msg.session) or (
                        msg.everything and record.owner == req.identity):
                    chosen.setdefault(record.spec.id, record)
        if req.parent is not None:  # a child client may cancel only its own tasks
            missing += [i for i, r in chosen.items() if r.owner != req.identity]
            chosen = {i: r for i, r in chosen.items() if r.owner == req.identity}
        for record in list(chosen.values()):
            self.lifecycle.cancel(record)
        self._reply(req, m.Reply(msg.req, {"cancelled": list(chosen), "not_running": missing}))

    def _on_query(self, req: Request, msg: m.Query) -> None:
        if msg.what == "status":
            body: Any = self.daemon.status()
        elif msg.what == "workers":
            body = self.daemon.workers()
        elif msg.what == "ps":
            body = [r.summary() for r in self.core.tasks.live.values()]
        elif msg.what == "metrics":
            body = self.daemon.metrics_text()
        elif msg.what == "tools":
            body = tool_catalog.describe(self.core.pools)
        elif msg.what == "batch":
            body = self.batches.status(msg.arg) if isinstance(msg.arg, str) else None
            if body is None:
                self._error(req, msg.req, m.E_NOT_FOUND, f"no batch {msg.arg!r}")
                return
        elif msg.what == "task":
            body = self.core.tasks.lookup(msg.arg) if isinstance(msg.arg, str) else None
            if body is None:
                self._error(req, msg.req, m.E_NOT_FOUND, f"no task {msg.arg!r}: {self.core.tasks.retention_hint()}")
                return
            if body["result"] is not None:   # a result, as a Done: told only once committed (commits.py)
                self._durable_reply(req, m.Reply(msg.req, body))
                return
        else:
            self._error(req, msg.req, m.E_INVALID, f"unknown query {msg.what!r}; ask for status, workers, ps, metrics, tools, task or batch")
            return
        self._reply(req, m.Reply(msg.req, body))

    def _input_unanswered(self, req: Request, frame: bytes) -> None:
        """Streamed stdin from a client that is not answered still flows (an Input dropped would
        cut its command's input short); only a refusal goes unsent. Input frames are small: no
        other frame is decoded."""
        if len(frame) > INPUT_WINDOW + 1024:
            return
        try:
            msg = codec.decode(frame)
            shapes.check(msg, (m.Input,))
        except codec.ProtocolError:
            return
        self.inputs.on_input(req.identity, msg)

    def _on_input(self, req: Request, msg: m.Input) -> None:
        """Streamed stdin for a running task of this client's (task_input.py); answered only when refused."""
        try:
            shapes.check(msg, (m.Input,))
        except codec.ProtocolError as exc:
            self._refuse(req, 0, m.E_PROTOCOL, str(exc))
            return
        refusal = self.inputs.on_input(req.identity, msg)
        if refusal is not None:
            self._reply(req, refusal)

    def _on_shutdown(self, req: Request, msg: m.Shutdown) -> None:
        log.info("shutdown requested by a client")
        self._reply(req, m.Reply(msg.req, {"stopping": True, "pid": os.getpid()}))
        self.daemon.shutdown()


def _served(pool: Pool) -> bool:
    """Whether `pool`'s workers, all ready, have credit for all its queued work: then it cannot want
    more workers now (pool.wanted), and the turn need not reconcile it (the tick still does)."""
    if pool.pinned is not None or pool.uses_workspace or pool.state != OK or len(pool.workers) < pool.config.min_workers:
        return False
    free = 0
    for worker in pool.workers.values():
        if worker.state != READY:
            return False
        free += worker.credit
    return free >= pool.queue.runnable
