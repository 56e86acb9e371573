"""parad's tools (`Client.tools()`) as the tool definitions of LLM APIs, to feed an agent framework.

    openai_tools(client.tools())      # [{"type": "function", "function": {name, description, parameters}}]
    anthropic_tools(client.tools())   # [{"name", "description", "input_schema"}]

The argument schemas come from pydantic, which puts nested models in `$defs`
and points at them with `$ref`. Both APIs document local `$defs`/`$ref`, but
many frameworks and OpenAI-compatible servers that forward these definitions
do not resolve references; so the schemas given here are self-contained:
every `$ref` is replaced by the definition it names (a recursive model, which
cannot be inlined, keeps its `$defs`).
"""

from __future__ import annotations

import copy
import re
from typing import Any

# What both APIs take as a tool's name.
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Keywords whose values are data, not schemas: a "$ref" key inside them is not a reference.
DATA_KEYWORDS = frozenset({"default", "enum", "const", "examples"})


class Recursive(Exception):
    """A definition refers to itself, so it cannot be inlined."""


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with every local `#/$defs/NAME` reference replaced by that definition and `$defs` dropped;
    keys beside a `$ref` (a field's description) win over the definition's. A recursive schema is returned as is."""
    defs = schema.get("$defs", {})
    body = {k: v for k, v in schema.items() if k != "$defs"}
    try:
        return _inline(body, defs, ())
    except Recursive:
        return copy.deepcopy(schema)


def _inline(node: Any, defs: dict[str, Any], seen: tuple[str, ...]) -> Any:
    if isinstance(node, list):
        return [_inline(item, defs, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        name = ref.removeprefix("#/$defs/")
        if name in seen:
            raise Recursive(name)
        target = _inline(defs[name], defs, seen + (name,))
        siblings = {k: _inline(v, defs, seen) for k, v in node.items() if k != "$ref"}
        return {**target, **siblings}
    return {k: v if k in DATA_KEYWORDS else _inline(v, defs, seen) for k, v in node.items()}


def _checked_name(name: str) -> str:
    if not NAME.match(name):
        raise ValueError(f"pool {name!r} cannot be a tool name for OpenAI or Anthropic (letters, digits, _ and -, "
                         f"at most 64): rename the pool, or list only the others")
    return name


def openai_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI's tool definitions (Chat Completions `tools`) for entries of `Client.tools()`; ValueError for
    a pool name those APIs refuse."""
    return [{"type": "function", "function": {"name": _checked_name(t["name"]), "description": t["description"],
                                              "parameters": inline_refs(t["input_schema"])}} for t in tools]


def anthropic_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Anthropic's tool definitions (Messages API `tools`) for entries of `Client.tools()`; ValueError for
    a pool name those APIs refuse."""
    return [{"name": _checked_name(t["name"]), "description": t["description"],
             "input_schema": inline_refs(t["input_schema"])} for t in tools]


FORMATS = {"openai": openai_tools, "anthropic": anthropic_tools}
