"""`paractl tools [NAME...]`: the tools parad runs, their descriptions and arguments.

Readable by default; `--json` prints `Client.tools()` as it is (JSON Schemas
included), `--format openai|anthropic` the tool definitions those APIs take
(client/tool_defs.py). `add_parsers` adds the command line; COMMANDS in
paractl.py maps it here.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from typing import Any

from para.client import paractl_format as fmt
from para.client.client import Client
from para.client.errors import InvalidRequest
from para.client.paractl_output import Globals, UsageError, emit
from para.client.tool_defs import FORMATS
from para.ipc import messages as m

WIDTH = 100  # where descriptions wrap


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The command line of `tools`."""
    tools = sub.add_parser("tools", help="the tools parad runs: descriptions and arguments (--json: JSON Schemas)")
    tools.add_argument("names", nargs="*", metavar="NAME", help="only these tools (pools)")
    tools.add_argument("--format", choices=sorted(FORMATS), help="the tool definitions an LLM API takes, as JSON")


def cmd_tools(client: Client, g: Globals, args: argparse.Namespace) -> int:
    tools = chosen(client.tools(), args.names)
    if args.format:
        try:
            emit(fmt.to_json(FORMATS[args.format](tools)))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    elif g.json:
        emit(fmt.to_json(tools))
    else:
        emit("\n\n".join(listing(tool) for tool in tools))
    return 0


def chosen(tools: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """The entries named (in the order named), or all of them; InvalidRequest for a name parad does not run."""
    if not names:
        return tools
    by_name = {t["name"]: t for t in tools}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise InvalidRequest(f"no tool named {', '.join(unknown)}; parad runs: {', '.join(by_name)}", m.E_UNKNOWN_TOOL)
    return [by_name[n] for n in dict.fromkeys(names)]


# ---- the readable listing ------------------------------------------------------------

def listing(tool: dict[str, Any]) -> str:
    """A tool for people: its name and what marks it, its description, a table of its arguments."""
    marks = [f"tool {tool['tool']}"] if tool["tool"] != tool["name"] else []
    marks += ["read-only"] if tool.get("read_only") else []
    head = tool["name"] + (f"  ({', '.join(marks)})" if marks else "")
    text = textwrap.fill(tool["description"], WIDTH, initial_indent="  ", subsequent_indent="  ")
    schema = tool["input_schema"]
    rows = list(arguments(schema, schema.get("$defs", {})))
    if not rows:
        extra = "any arguments, returned as sent" if schema.get("additionalProperties") else "no arguments"
        return f"{head}\n{text}\n  {extra}"
    table = fmt.table(["ARGUMENT", "TYPE", "DEFAULT", "DESCRIPTION"], rows)
    return f"{head}\n{text}\n\n" + textwrap.indent(table, "  ")


def arguments(schema: dict[str, Any], defs: dict[str, Any], prefix: str = "",
              seen: frozenset[str] = frozenset()):
    """[name, type, default, description] per field; a nested model's fields follow it as `field.sub`."""
    required = set(schema.get("required", []))
    for name, field in schema.get("properties", {}).items():
        default = "required" if name in required else json.dumps(field["default"]) if "default" in field else "-"
        yield [prefix + name, type_name(field), default, field.get("description", "")]
        model = nested_model(field)
        if model and model not in seen:
            yield from arguments(defs.get(model, {}), defs, f"{prefix}{name}.", seen | {model})


def nested_model(field: dict[str, Any]) -> str | None:
    """The name of the model (a `$defs` entry) a field holds, possibly or-null."""
    for branch in [field, *field.get("anyOf", [])]:
        ref = branch.get("$ref", "")
        if ref.startswith("#/$defs/"):
            return ref.removeprefix("#/$defs/")
    return None


def type_name(field: dict[str, Any]) -> str:
    """A field's type, short: string, integer[], {string: string}, TaskPolicy, "a"|"b"; null left out
    (a field that may be null says so by its default)."""
    if "$ref" in field:
        return field["$ref"].rsplit("/", 1)[-1]
    if "enum" in field:
        return "|".join(json.dumps(v) for v in field["enum"])
    if "const" in field:
        return json.dumps(field["const"])
    branches = field.get("anyOf") or field.get("oneOf")
    if branches:
        names = [type_name(b) for b in branches if b.get("type") != "null"]
        return " | ".join(dict.fromkeys(names)) or "null"
    kind = field.get("type")
    if isinstance(kind, list):
        return " | ".join(k for k in kind if k != "null")
    if kind == "array" and isinstance(field.get("items"), dict):
        return type_name(field["items"]) + "[]"
    if kind == "object" and isinstance(field.get("additionalProperties"), dict):
        return f"{{string: {type_name(field['additionalProperties'])}}}"
    return kind or "any"


COMMANDS = {"tools": cmd_tools}
