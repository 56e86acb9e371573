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
    unavailable: str | None   # why its (plugin) tool cannot be loaded: it is not listed


# pydantic leaves a bound it cannot place on a union (ByteSize | int > 0) as its own keyword,
# which JSON Schema does not have: it goes to the union's numeric branches as the keyword that is.
_BOUNDS = {"gt": "exclusiveMinimum", "ge": "minimum", "lt": "exclusiveMaximum", "le": "maximum"}


@cache
def arguments_schema(tool: type[Tool]) -> dict[str, Any]:
    """The JSON Schema of `tool`'s arguments (pydantic's validation schema: what a task may send)."""
    return _standard(tool.Args.model_json_schema())


def _standard(node: Any, names: bool = False) -> Any:
    """`node` with pydantic's bounds as JSON Schema keywords; `names`: node maps field names to schemas."""
    if isinstance(node, list):
        return [_standard(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _standard(v, k in ("properties", "$defs")) for k, v in node.items() if names or k not in _BOUNDS}
    if names:
        return out
    for key, bound in ((k, node[k]) for k in _BOUNDS if k in node and isinstance(node[k], (int, float))):
        for branch in [out, *out.get("anyOf", [])]:
            if branch.get("type") in ("integer", "number"):
                branch.setdefault(_BOUNDS[key], bound)
    return out


def describe(pools: dict[str, DescribedPool]) -> list[dict[str, Any]]:
    """The tools parad runs, one entry per pool, in name order; not a pool whose tool cannot be loaded."""
    return [describe_pool(pools[name]) for name in sorted(pools) if not pools[name].unavailable]


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
