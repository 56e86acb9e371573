"""Nested tasks, the supervisor's side: child tasks submitted from inside a running command.

A child's request arrives through its parent's worker (see child_relay.py)
and is served like any client's, with four rules on top:

- depth: a child of a child ... at most `nested_max_depth` (3) deep;
- session: a child takes turns in its parent's session;
- deadline: a child may not outlive its parent's timeout;
- cancellation: when a parent ends, for whatever reason, its live children
  are cancelled (and theirs, in turn).

A worker whose task waits on children does not count toward its pool's
max_workers (pool.py), so a pool whose every worker waits on children that
need the same pool grows instead of deadlocking.
"""

from __future__ import annotations

import time

from para.daemon.admission import Refusal
from para.daemon.scheduler import session_key
from para.daemon.tasks import TaskRecord
from para.ipc import messages as m
from para.ipc.channels import CHILD_PREFIX as CHILD

REQUESTS = (m.Hello, m.Ping, m.Submit, m.Cancel, m.Input)


def owner_for(worker_id: str, identity: bytes) -> bytes:
    """The owner of a child client's tasks: which worker relays for it, and its identity there."""
    return CHILD + worker_id.encode() + b"\x00" + identity


def split_owner(owner: bytes) -> tuple[str, bytes] | None:
    if not owner.startswith(CHILD):
        return None
    worker, _, identity = owner[len(CHILD):].partition(b"\x00")
    return worker.decode(), identity


def adopt(parent: TaskRecord, spec: m.TaskSpec, default_timeout: float | None, max_depth: int) -> None:
    """Check and fit a child's spec to its parent; Refusal naming the rule it breaks."""
    if parent.depth + 1 > max_depth:
        raise Refusal(m.E_INVALID, f"nested too deep: task {parent.spec.id} is a child {parent.depth} levels down "
                                   f"and children may nest {max_depth} deep (daemon.nested_max_depth)")
    if parent.spec.timeout and parent.started:
        left = parent.started + parent.spec.timeout - time.monotonic()
        if left <= 0:
            raise Refusal(m.E_INVALID, f"parent task {parent.spec.id} is past its deadline")
        spec.timeout = min(t for t in (spec.timeout or default_timeout, left) if t)


def link(parent: TaskRecord, child: TaskRecord) -> None:
    child.parent, child.depth = parent.spec.id, parent.depth + 1
    child.session = session_key(parent)
    parent.children.add(child.spec.id)
