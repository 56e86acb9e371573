"""Every message that crosses a para socket, as plain slotted dataclasses.

Hot paths (thousands of tasks a second) build and read these directly, so they
carry no validation; requests from clients are validated by the daemon at its
trust boundary. Field order is the wire order: append new fields at the end
with a default, and bump PROTOCOL_VERSION when an existing field changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Task states (docs/ARCHITECTURE.md, "A task's life").
QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
TIMED_OUT = "timed_out"
CANCELLED = "cancelled"
LOST = "lost"
RETRY_WAIT = "retry_wait"        # a live state: waiting out a retry's backoff
PENDING = "pending"              # a live state: a batch task waiting for its dependencies
SKIPPED = "skipped"              # final: a batch task whose dependency failed, or cancelled by fail_fast
FINAL_STATES = frozenset({SUCCEEDED, FAILED, TIMED_OUT, CANCELLED, LOST, SKIPPED})

# Error codes carried by ErrorReply and by TaskResult.error_code.
E_PROTOCOL = "protocol"          # malformed frame, wrong version
E_TOO_LARGE = "too_large"        # message over max_message_size
E_INVALID = "invalid_request"    # wrong argument names or types
E_UNKNOWN_TOOL = "unknown_tool"
E_QUEUE_FULL = "queue_full"
E_POOL_FAILED = "pool_failed"    # circuit open: the pool's workers keep crashing
E_POOL_DRAINED = "pool_drained"  # pinned to 0 workers (paractl drain): nothing would run the task
E_SHUTTING_DOWN = "shutting_down"
E_NOT_FOUND = "not_found"
E_TOOL = "tool_error"            # the tool raised or reported an error
E_LOST = "lost"                  # the worker died holding the task
E_POISON = "poison"              # the task killed worker after worker: not retried
E_INTERNAL = "internal"          # a bug in parad; the request failed, the daemon goes on
E_SKIPPED = "skipped"            # a batch task that did not run because of another's failure
E_JOURNAL = "journal_unavailable"  # parad cannot write its journal (disk full): new tasks are refused until it can


# ---- client <-> daemon (command socket, DEALER -> ROUTER) ----------------

@dataclass(slots=True)
class TaskSpec:
    """One task as a client submits it; `id` is chosen by the client."""
    id: str
    tool: str
    args: dict[str, Any]
    timeout: float | None = None
    priority: int = 2
    session: str | None = None
    retries: int | None = None
    stream: bool = False
    retry_on: list[str] | None = None       # statuses that earn a retry: lost (default), failed, timed_out
    retry_backoff: float | None = None      # seconds before the first retry (default: the pool's)
    idempotency_key: str | None = None      # a repeat within the window gets the first task's result
    workspace: str | None = None            # the project it works in (writable root, default cwd); None: the pool's


@dataclass(slots=True)
class Hello:
    client: str
    pid: int
    token: str | None = None        # a nested client's proof that a worker gave it the endpoint


@dataclass(slots=True)
class Welcome:
    daemon_version: str
    protocol: int
    pid: int
    tools: list[str]
    max_message_size: int
    workspace_tools: list[str] = field(default_factory=list)   # pools whose tasks run in a workspace
    owner_tools: list[str] = field(default_factory=list)       # pools whose tasks read as their workspace's owner
    boot: str = ""      # this parad's run: another value after a restart (clients then resume their tasks)
    durable: bool = False   # it journals tasks: after a restart, a task it does not know never ran (resubmit it)


@dataclass(slots=True)
class Submit:
    req: int
    tasks: list[TaskSpec]
    ack: bool = True    # answer with Accepted; refusals come back as ErrorReply either way


@dataclass(slots=True)
class Accepted:
    req: int
    ids: list[str]


@dataclass(slots=True)
class Cancel:
    req: int
    task_ids: list[str]
    session: str | None = None      # also every live task of this session
    everything: bool = False        # also every live task this client submitted


@dataclass(slots=True)
class SubmitBatch:
    """A DAG of tasks. Task ids are `BATCH:NAME`; `after` maps an id to the ids it waits for."""
    req: int
    batch: str
    tasks: list[TaskSpec]
    after: dict[str, list[str]]
    on_failure: str = "fail_fast"   # or "continue"
    cwd: str | None = None          # what ${cwd} in arguments stands for: where the batch was sent from


@dataclass(slots=True)
class Scale:
    """An operator's pool size: `workers` pins it (0 drains the pool), None hands it back to automatic scaling."""
    req: int
    pool: str
    workers: int | None


@dataclass(slots=True)
class Relay:
    """supervisor -> worker: a frame for a client inside the worker's command (nested tasks)."""
    identity: bytes
    frame: bytes


@dataclass(slots=True)
class Relayed:
    """worker -> supervisor: a request from a client inside the command running `task_id`."""
    worker: str
    task_id: str
    identity: bytes
    frame: bytes


@dataclass(slots=True)
class Query:
    """A read-only question: what is 'status', 'workers', 'ps', 'metrics', 'tools', 'task' or 'batch' (arg: its id)."""
    req: int
    what: str
    arg: str | None = None


@dataclass(slots=True)
class Reply:
    req: int
    body: Any


@dataclass(slots=True)
class Shutdown:
    req: int


@dataclass(slots=True)
class Ping:
    req: int


@dataclass(slots=True)
class Pong:
    req: int
    boot: str = ""      # as in Welcome: a client that sees another value knows parad restarted


@dataclass(slots=True)
class Await:
    """Results by id, whoever submitted them: each finished one comes back at once as a Done, each
    live one as a Done when it ends. The Reply names which ids are `finished`, `waiting` and `unknown`."""
    req: int
    task_ids: list[str]


@dataclass(slots=True)
class Prune:
    """Drop finished tasks from the journal now (retention runs by itself too): those older than
    `older_than` seconds if given, and the oldest past the retention limits. Reply: what was removed."""
    req: int
    older_than: float | None = None


@dataclass(slots=True)
class ErrorReply:
    """A request (or one task of it) was refused; `message` says what to do."""
    req: int
    code: str
    message: str
    task_id: str | None = None


@dataclass(slots=True)
class Input:
    """Bytes for the standard input of a running task of the sender's that was
    submitted with `stdin_stream` (client -> parad -> that task's worker).

    At most channels.INPUT_WINDOW bytes may be sent that its InputAcks have not
    acknowledged; `eof` closes the command's stdin after `data`."""
    req: int
    task_id: str
    data: bytes
    eof: bool = False


# ---- task output, shared by worker -> daemon and daemon -> client ------

@dataclass(slots=True)
class Chunk:
    task_id: str
    stream: str          # "stdout" | "stderr"
    data: bytes
    seq: int


@dataclass(slots=True)
class InputAck:
    """worker -> parad -> client (data channel): `written` bytes of the task's input are in
    its command's stdin, in all; the first (0) says the command started and input may come.

    `closed`: no more is taken (EOF written, or the command closed its stdin);
    `error`: parad refused an Input for this task, and why."""
    task_id: str
    written: int
    closed: bool = False
    error: str | None = None


@dataclass(slots=True)
class TaskResult:
    id: str
    tool: str
    status: str
    exit_code: int | None = None
    signal: int | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    truncated: bool = False
    value: Any = None
    duration: float = 0.0
    attempts: int = 1
    worker: str | None = None
    error: str | None = None
    error_code: str | None = None
    limit: str | None = None
    rusage: dict[str, float] = field(default_factory=dict)
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    network_refused: list[dict[str, Any]] | None = None   # requests the egress proxy refused: host, port, rule


@dataclass(slots=True)
class Done:
    result: TaskResult


# ---- daemon <-> worker (five channels) ---------------------------------

@dataclass(slots=True)
class Assign:
    """command channel, daemon -> worker."""
    task: TaskSpec
    attempt: int
    events: bool = False     # send lifecycle events (someone watches the progress topic)


@dataclass(slots=True)
class CancelTask:
    task_id: str


@dataclass(slots=True)
class Stop:
    grace: float


@dataclass(slots=True)
class PauseOutput:
    """command channel, daemon -> worker: stop reading task `task_id`'s output (its owner is over budget)."""
    task_id: str


@dataclass(slots=True)
class ResumeOutput:
    """command channel, daemon -> worker: read task `task_id`'s output again."""
    task_id: str


@dataclass(slots=True)
class Ready:
    """command channel, worker -> daemon: alive, and able to take `credit` tasks."""
    worker: str
    pid: int
    credit: int


@dataclass(slots=True)
class TaskEvent:
    """event channel: lifecycle and progress."""
    task_id: str
    worker: str
    kind: str
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ErrorReport:
    """error channel: tool exceptions, limit violations, crash reports."""
    worker: str
    task_id: str | None
    kind: str
    message: str
    detail: str = ""


@dataclass(slots=True)
class Heartbeat:
    """metrics channel: sent from the worker's main loop, so silence means hung."""
    worker: str
    pid: int
    seq: int
    rss: int
    cpu_seconds: float
    task_id: str | None = None


# ---- supervisor <-> fork server (socketpair) ---------------------------

@dataclass(slots=True)
class WorkerSettings:
    """How one worker starts: built by daemon/isolation.py, read by the fork server and the worker.

    Inside a sandbox the worker gets them from a memfd, with `launch` cleared
    and `runtime_fd` set: `runtime_dir` is hidden there.
    """
    runtime_dir: str                    # parad's runtime directory (the worker sockets), as parad sees it
    heartbeat_interval: float
    credit: int
    options: dict[str, Any]             # the pool's tool options, as JSON
    launch: list[str] | None = None     # bubblewrap's argv, ending in "--": exec the worker through it; None: fork only
    env: dict[str, str] | None = None   # a sandboxed worker's whole environment
    lend_ids: bool = False              # the worker may lend run_as its real ids (see sandbox/spawn.py)
    cgroup_worker: str | None = None    # the worker's cgroup leaf, when parad owns a cgroup subtree
    cgroup_command: str | None = None   # its commands' leaf
    runtime_fd: int | None = None       # inside a sandbox: an O_PATH descriptor of runtime_dir (/proc/self/fd/N)
    max_message_size: int = 8 << 20     # parad's: the largest frame the worker relays from a client in its command
    workspace: str | None = None        # the workspace it serves: its working directory, '.' of its writable roots
    uid: int | None = None              # the ids its commands run as (parad is root); None: its own
    gid: int | None = None
    identity_error: str | None = None   # why no task of its workspace may run (a root-owned one, by policy)
    confined: bool = False              # it lives in namespaces (a read-only tool decides root reads per task)


@dataclass(slots=True)
class Spawn:
    worker: str
    pool: str
    tool: str
    settings: WorkerSettings


@dataclass(slots=True)
class Spawned:
    worker: str
    pid: int


@dataclass(slots=True)
class Exited:
    worker: str
    pid: int
    exit_code: int | None
    signal: int | None


# The wire tag of each type. Never reuse or renumber a tag.
WIRE_TAGS: dict[type, int] = {
    TaskSpec: 1, Hello: 2, Welcome: 3, Submit: 4, Accepted: 5, Cancel: 6,
    Query: 7, Reply: 8, Shutdown: 9, Ping: 10, Pong: 11, ErrorReply: 12,
    Chunk: 13, TaskResult: 14, Done: 15, Assign: 16, CancelTask: 17,
    Stop: 18, Ready: 19, TaskEvent: 20, ErrorReport: 21, Heartbeat: 22,
    Spawn: 23, Spawned: 24, Exited: 25, SubmitBatch: 26, Scale: 27, Relay: 28, Relayed: 29,
    PauseOutput: 30, ResumeOutput: 31, WorkerSettings: 32, Input: 33, InputAck: 34, Await: 35,
    Prune: 36,
}
# Not a message: the extension type of a task's `args.caller_env` on the wire (ipc/codec.py),
# a map that repeats from task to task. Never a message's tag.
ENV_TAG = 127
