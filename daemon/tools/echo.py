"""echo: returns its arguments. For health checks and measuring dispatch overhead."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

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

    def run(self, args: EchoArgs, options: Any, ctx: TaskContext) -> Finished:
        return Finished(value=args.model_extra)
