"""A task's options have one definition (TaskSpec's fields after `args`); whatever names them agrees with it."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import BaseModel

from para.client import batch, client, paractl
from para.daemon.admission import TaskEnvelope
from para.ipc import messages as m
from para.ipc.options import DEFAULTS, TASK_FIELDS, TASK_OPTIONS, options_except

# A non-default value of each option, as a caller would pass it.
SAMPLES = {"timeout": 7.5, "priority": 4, "session": "s1", "retries": 3, "stream": True,
           "retry_on": ["failed"], "retry_backoff": 0.5, "idempotency_key": "k1", "workspace": "/srv/app"}


def disagreements(spec: type, envelope: type[BaseModel]) -> list[str]:
    """How the daemon's check of a task (`envelope`) differs from the wire's task (`spec`): names, order, defaults."""
    wire = {f.name: f.default for f in dataclasses.fields(spec)}
    checked = {name: info.default for name, info in envelope.model_fields.items()}
    found = [f"{name}: in {spec.__name__} only" for name in wire if name not in checked]
    found += [f"{name}: in {envelope.__name__} only" for name in checked if name not in wire]
    if not found and list(wire) != list(checked):
        found.append(f"order differs: {list(wire)} vs {list(checked)}")
    found += [f"{name}: default {wire[name]!r} vs {checked[name]!r}" for name in wire
              if name in checked and wire[name] is not dataclasses.MISSING and wire[name] != checked[name]]
    return found


def test_the_options_are_taskspecs_fields_after_args() -> None:
    names = [f.name for f in dataclasses.fields(m.TaskSpec)]
    assert tuple(names) == TASK_FIELDS + TASK_OPTIONS
    assert set(SAMPLES) == set(TASK_OPTIONS), "a new option needs a sample value here"
    assert DEFAULTS == {f.name: f.default for f in dataclasses.fields(m.TaskSpec) if f.name in TASK_OPTIONS}


def test_the_daemons_envelope_checks_exactly_the_wire_task() -> None:
    assert disagreements(m.TaskSpec, TaskEnvelope) == []


def test_an_option_in_one_place_only_is_a_disagreement() -> None:
    @dataclasses.dataclass
    class Grown(m.TaskSpec):
        deadline: float | None = None

    class Shifted(TaskEnvelope):
        priority: int = 3

    assert disagreements(Grown, TaskEnvelope) == ["deadline: in Grown only"]
    assert disagreements(m.TaskSpec, Shifted) == ["priority: default 2 vs 3"]


def test_the_clients_split_options_from_tool_arguments_by_the_one_list() -> None:
    assert client.TASK_OPTIONS == TASK_OPTIONS


def test_a_batch_task_takes_every_option_but_stream_session_and_idempotency_key() -> None:
    assert batch.BATCH_TASK_OPTIONS == options_except("stream", "session", "idempotency_key")
    assert batch.TASK_KEYS == {"id", "tool", "args", "after", *batch.BATCH_TASK_OPTIONS}
    options = {k: SAMPLES[k] for k in batch.BATCH_TASK_OPTIONS}
    msg = batch.batch_message(1, "b", {"tasks": [{"id": "t", "tool": "echo", "args": {}, **options}]})
    assert {k: getattr(msg.tasks[0], k) for k in options} == options


def test_paractl_run_takes_the_options_that_fit_one_line() -> None:
    assert paractl.RUN_OPTIONS == options_except("stream", "retry_on", "retry_backoff", "idempotency_key")
    words = [f"{k}={SAMPLES[k]}" for k in paractl.RUN_OPTIONS] + ["command=ls"]
    args, options = paractl.parse_assignments(words)
    assert (args, options) == ({"command": "ls"}, {k: SAMPLES[k] for k in paractl.RUN_OPTIONS})


def test_excluding_a_name_that_is_no_option_fails_loudly() -> None:
    with pytest.raises(ValueError, match="not task options: streams"):
        options_except("streams")
