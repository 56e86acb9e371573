"""admission's quick checks (daemon/envelope_check.py) never accept what pydantic refuses.

They decide alone only when they accept; everything else goes to pydantic, whose
message the client gets. So the one property that matters: whatever they accept,
TaskEnvelope (or the tool's Args model) accepts too, and the common task is
accepted by them (else they would save nothing).
"""

from __future__ import annotations

import itertools
import math

import pytest
from pydantic import ValidationError

from para.daemon.admission import TaskEnvelope, _any_args
from para.daemon.config import Config
from para.daemon.envelope_check import any_args_ok, envelope_ok
from para.daemon.pool import Pool
from para.ipc import messages as m


class Str(str):
    pass


# Per field: values a client might send, good and bad, at and past each bound.
EDGES = {
    "id": ["t1", "a" * 128, "a" * 129, "", "t1\n", "bad id!", "é", b"t1", 1, None, Str("t1")],
    "tool": ["echo", "x" * 64, "x" * 65, "", 3, None],
    "args": [{}, {"x": 1}, [], None, "x"],
    "timeout": [None, 1, 0.5, 0, -1, math.nan, math.inf, True, "1"],
    "priority": [2, 0, 4, -1, 5, True, 2.0, None],
    "session": [None, "s", "s" * 256, "s" * 257, 1],
    "retries": [None, 0, 100, 101, -1, True, 1.0],
    "stream": [False, True, 0, None],
    "retry_on": [None, [], ["lost", "failed", "timed_out"], ["gone"], "lost", [1], (Str("lost"),), [Str("lost")]],
    "retry_backoff": [None, 0, 3600, 3600.5, -0.1, math.nan, False],
    "idempotency_key": [None, "k", "", "k" * 256, "k" * 257, 5],
    "workspace": [None, "/w", "", "w" * 4096, "w" * 4097, 7],
}


def _pydantic_accepts(spec: m.TaskSpec) -> bool:
    try:
        TaskEnvelope.model_validate(spec, from_attributes=True)
        return True
    except ValidationError:
        return False


def _specs():
    base = {name: values[0] for name, values in EDGES.items()}
    for name, values in EDGES.items():   # each edge alone
        for value in values:
            yield m.TaskSpec(**{**base, name: value})
    names = list(EDGES)
    for a, b in itertools.combinations(names, 2):   # and in pairs, first two of each
        for va, vb in itertools.product(EDGES[a][:3], EDGES[b][:3]):
            yield m.TaskSpec(**{**base, a: va, b: vb})


def test_the_quick_envelope_check_accepts_only_what_pydantic_accepts() -> None:
    checked = accepted = 0
    for spec in _specs():
        checked += 1
        if envelope_ok(spec):
            accepted += 1
            assert _pydantic_accepts(spec), f"accepted quickly, refused by pydantic: {spec!r}"
    assert accepted > checked // 4   # and it does take the common tasks


@pytest.mark.parametrize("spec", [
    m.TaskSpec("abcd1234-17", "echo", {"i": 17}),
    m.TaskSpec("t", "bash", {"command": "true"}, timeout=30, priority=0, session="s", retries=3,
               stream=True, retry_on=["failed"], retry_backoff=0.5, idempotency_key="k", workspace="/src"),
])
def test_the_quick_envelope_check_takes_well_formed_tasks(spec) -> None:
    assert envelope_ok(spec) and _pydantic_accepts(spec)


def _pool(name: str) -> Pool:
    config = Config()
    return Pool(name, config.tool_class(name), config.pools[name], config.pool_options(name), None)


def test_only_echo_of_the_builtin_tools_takes_any_arguments() -> None:
    assert _any_args(_pool("echo"))
    assert not any(_any_args(_pool(name)) for name in ("bash", "read", "glob", "grep"))


@pytest.mark.parametrize("args", [{}, {"x": 1}, {"x": {"y": [1]}}, {1: 2}, {b"x": 1}, {None: 1}])
def test_any_args_ok_accepts_only_what_the_echo_model_accepts(args) -> None:
    model = _pool("echo").tool.Args
    try:
        model.model_validate(args)
        valid = True
    except ValidationError:
        valid = False
    assert not any_args_ok(args) or valid
    assert any_args_ok(args) == valid or not valid


@pytest.mark.parametrize("args", [{}, {"x": 1}, {"x": {"y": [1]}, "z": None}, {1: 2}, {b"x": 1}, {None: 1}])
def test_the_echo_worker_reads_arguments_as_its_model_does(args) -> None:
    # The worker's parse_args skips the model for what the model takes: the same answer, or its refusal.
    tool = _pool("echo").tool
    try:
        expected = tool.Args.model_validate(args).model_extra
    except ValidationError:
        with pytest.raises(ValidationError):
            tool.parse_args(args)
        return
    assert tool.parse_args(args) == expected
