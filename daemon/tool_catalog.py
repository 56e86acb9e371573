"""What parad runs, described for whoever picks tools: `paractl tools`, an agent through MCP.

One entry per pool (a task names a pool; several pools may run one tool with
other options), with the tool's description, whether its calls only read, and
its arguments as a JSON Schema generated from the tool's own pydantic model,
so the schema cannot drift from what admission checks.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Protocol

from para.daemon.tools.base import Tool


class DescribedPool(Protocol):
    name: str
    tool: type[Tool]
    uses_workspace: bool


@cache
def arguments_schema(tool: type[Tool]) -> dict[str, Any]:
    """The JSON Schema of `tool`'s arguments (pydantic's validation schema: what a task may send)."""
    return tool.Args.model_json_schema()


def describe(pools: dict[str, DescribedPool]) -> list[dict[str, Any]]:
    """The tools parad runs, one entry per pool, in name order."""
    return [describe_pool(pools[name]) for name in sorted(pools)]


def describe_pool(pool: DescribedPool) -> dict[str, Any]:
    tool = pool.tool
    return {
        "name": pool.name,
        "tool": tool.name,
        "description": tool.description,
        "read_only": tool.read_only,
        "retry_safe": tool.retry_safe,
        "workspace": pool.uses_workspace,
        "input_schema": arguments_schema(tool),
    }
