"""A bash task's arguments as the worker reads them: the same answer with or without pydantic."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import Field, ValidationError

from para.daemon.tools.bash import Bash, BashArgs

PLAIN = [
    {"command": "true"},
    {"command": "echo $X", "cwd": "/tmp", "caller_env": {"X": "1", "PATH": "/bin"}},
    {"command": "x", "cwd": None, "caller_env": None},
]
OTHERS = [
    {"command": ""}, {"command": 1}, {"command": "x", "cwd": 3}, {"command": "x", "caller_env": {"A": 1}},
    {"command": "x", "caller_env": []}, {"command": "x", "surprise": 1}, {"argv": ["ls", "-l"]},
    {"command": "x", "stdin": "y"}, {"command": "x", "env": {"A": "b"}}, {},
]


@pytest.mark.parametrize("args", PLAIN)
def test_plain_arguments_read_without_pydantic_are_what_pydantic_reads(args: dict[str, Any]) -> None:
    got, want = Bash.parse_args(args), BashArgs.model_validate(args)
    assert not isinstance(got, BashArgs)   # the cheap way was taken
    assert {f: getattr(got, f) for f in BashArgs.model_fields} == {f: getattr(want, f) for f in BashArgs.model_fields}


@pytest.mark.parametrize("args", OTHERS)
def test_every_other_shape_and_every_error_is_pydantic_s(args: dict[str, Any]) -> None:
    try:
        want: Any = BashArgs.model_validate(args)
    except ValidationError as exc:
        with pytest.raises(ValidationError) as got:
            Bash.parse_args(args)
        assert got.value.errors() == exc.errors()
    else:
        assert Bash.parse_args(args) == want


def test_a_subclass_with_a_stricter_model_has_its_model_applied() -> None:
    # A plugin that extends bash with its own Args: the plain shape is bash's shortcut, not its.
    class ShortArgs(BashArgs):
        command: str | None = Field(None, min_length=1, max_length=3)

    class Short(Bash):
        Args = ShortArgs

    with pytest.raises(ValidationError):
        Short.parse_args({"command": "echo too long"})
    assert isinstance(Short.parse_args({"command": "ls"}), ShortArgs)
