"""The daemon's state and its ports: what the supervisor's helpers share, with no loop and no sockets.

State: the config, the task table, the pools (their workers and queues), the
timers, the idempotency window and whether parad is stopping. Ports: what a
helper may ask of the world outside (`Ports`: send to a client or a worker,
publish an event), and two wishes the supervisor grants once per loop turn,
after every message of the turn is handled: `want_maintain` (reconcile the
pool's workers with what it wants) and `want_dispatch` (hand its queued tasks
to workers with credit). A handler never spawns a worker or assigns tasks in
the middle of another handler; it asks, and the end of the turn does it once.

Helpers (admission, dispatch, task endings, batches, client requests, the
workforce, metrics) take this core, each typed by a small Protocol of what it
uses; none of them knows the supervisor.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator
from importlib.metadata import version
from typing import Any, Protocol

from para.daemon.config import Config
from para.daemon.dedup import Deduplicator
from para.daemon.pool import Pool, WorkerHandle
from para.daemon.tasks import MemoryResults, TaskStore, TaskTable
from para.daemon.timers import Timers
from para.daemon.workspaces import WorkspacePolicy


class Ports(Protocol):
    """What the core may send; the supervisor implements it on its sockets."""

    def to_client(self, identity: bytes, frame: bytes) -> None:
        """Queue an encoded frame for a client (bounded by bytes, see outbox.py)."""

    def result_to_client(self, identity: bytes, task_id: str, frame: bytes, fenced: bool) -> None:
        """Queue a task's encoded Done for its owner; if `fenced`, it leaves after the commit that records it."""

    def durable_to_client(self, identity: bytes, frame: bytes) -> None:
        """Queue a frame that reports what the task store keeps (an Accepted, another client's Done):
        it leaves after the commit that records it."""

    def to_worker(self, worker_id: str, *messages: Any) -> bool:
        """Send messages to a worker on its command channel; False if it cannot be routed."""

    def watched(self, topic: bytes) -> bool:
        """Whether a watcher listens to `topic` (events cost nothing when nobody does)."""

    def publish(self, topic: bytes, make: Callable[[], Any]) -> None:
        """Publish the event `make` builds, if anybody watches `topic`."""


def workspace_policy(config: Config, system: bool) -> WorkspacePolicy:
    """Which folders may be workspaces: config's daemon.workspaces; `owned` unset means yes but for the system service."""
    section = config.daemon.workspaces
    owned = section.owned if section.owned is not None else not system
    return WorkspacePolicy(owned, tuple(os.path.realpath(os.path.expanduser(r)) for r in section.roots))


def memory_store(config: Config) -> MemoryResults:
    """The task store with durability off: finished results in memory, up to the retention limits."""
    return MemoryResults(config.daemon.finished_task_retention, config.daemon.finished_task_bytes)


class Core:
    """State and ports; see the module docstring."""

    def __init__(self, config: Config, ports: Ports, workspaces: WorkspacePolicy | None = None,
                 store: TaskStore | None = None) -> None:
        self.config = config
        self.ports = ports
        self.workspaces = workspaces or workspace_policy(config, system=False)
        self.version = version("para")
        self.boot = secrets.token_hex(8)   # this run of parad: clients that see it change resume their tasks
        self.started = time.monotonic()
        self.timers = Timers()
        self.tasks = TaskTable(store or memory_store(config))
        self.pools = {
            name: Pool(name, config.tool_class(name), section, config.pool_options(name), config.unavailable(name))
            for name, section in config.pools.items()
        }
        self.dedup = Deduplicator(config.daemon.idempotency_window)
        self.stopping = False
        # Ordered sets: granted in the order asked, each pool once per turn.
        self._maintain: dict[Pool, None] = {}
        self._dispatch: dict[Pool, None] = {}
        self._later: list[Callable[[], None]] = []

    def want_maintain(self, pool: Pool) -> None:
        """Reconcile `pool`'s workers with what it wants, at the end of this loop turn."""
        self._maintain[pool] = None

    def want_dispatch(self, pool: Pool) -> None:
        """Hand `pool`'s queued tasks to its workers with credit, at the end of this loop turn."""
        self._dispatch[pool] = None

    def later(self, callback: Callable[[], None]) -> None:
        """Call `callback` at the end of this loop turn, after the pools are maintained (a reply that shows them)."""
        self._later.append(callback)

    def take_later(self) -> list[Callable[[], None]]:
        callbacks, self._later = self._later, []
        return callbacks

    def take_maintain(self) -> list[Pool]:
        pools = list(self._maintain)
        self._maintain.clear()
        return pools

    @property
    def dispatch_wanted(self) -> bool:
        return bool(self._dispatch)

    def take_dispatch(self) -> list[Pool]:
        pools = list(self._dispatch)
        self._dispatch.clear()
        return pools

    def workers(self) -> Iterator[WorkerHandle]:
        """Every worker of every pool."""
        for pool in self.pools.values():
            yield from pool.workers.values()

    def find_worker(self, worker_id: str) -> WorkerHandle | None:
        pool = self.pools.get(worker_id.rsplit("-", 1)[0])
        return pool.workers.get(worker_id) if pool else None
