"""echo: returns its arguments. For health checks and measuring dispatch overhead."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from para.daemon.envelope_check import any_args_ok
from para.daemon.tools.base import Finished, TaskContext, Tool


class EchoArgs(BaseModel):
    # Anything goes: echo's whole point is to return what it was given.
    model_config = ConfigDict(extra="allow")


class Echo(Tool):
    name = "echo"
    description = "Returns its arguments as they were sent: a health check, and a measure of para's own overhead."
    Args = EchoArgs
    retry_safe = True
    read_only = True
    default_credit = 32

    @classmethod
    def parse_args(cls, args: dict[str, Any]) -> dict[str, Any]:
        """The arguments as they came: what EchoArgs takes (any dict with string keys) needs no model
        built, on the path whose cost echo measures; anything else gets pydantic's refusal."""
        return args if any_args_ok(args) else EchoArgs.model_validate(args).model_extra

    def run(self, args: dict[str, Any], options: Any, ctx: TaskContext) -> Finished:
        return Finished(value=args)
