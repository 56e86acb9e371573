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
    def parse_args(cls, args: dict[str, Any]) -> dict[str, Any] | BaseModel:
        """The arguments as they came: what EchoArgs takes (any dict with string keys) needs no model
        built, on the path whose cost echo measures. Anything else, or a subclass with a model or an
        admission of its own, gets the model (or pydantic's refusal)."""
        if cls.Args is EchoArgs and cls.admit is Tool.admit and any_args_ok(args):
            return args
        return super().parse_args(args)

    def run(self, args: dict[str, Any] | BaseModel, options: Any, ctx: TaskContext) -> Finished:
        return Finished(value=args if type(args) is dict else args.model_extra)
