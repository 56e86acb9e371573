"""The tools query against a real parad: every pool is listed with a description, whether it only
reads, and a JSON Schema of its arguments in which every field says what it is."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Iterator

import pytest

from para.client import AsyncClient
from para.daemon.tools import TOOLS
from para.testing import Daemon


@pytest.fixture(scope="module")
def parad(shared_daemon: Daemon) -> Daemon:
    return shared_daemon


def _properties(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every (path, field schema) of `schema`'s objects, its $defs' included."""
    for name, definition in [("", schema), *schema.get("$defs", {}).items()]:
        for field, sub in definition.get("properties", {}).items():
            yield f"{name or schema.get('title')}.{field}", sub


def test_every_pool_is_listed_with_its_schema(parad: Daemon) -> None:
    with parad.client() as client:
        tools = client.tools()
        pools = [p["name"] for p in client.status()["pools"]]
    assert [t["name"] for t in tools] == sorted(pools)
    by_name = {t["name"]: t for t in tools}
    bash = by_name["bash"]
    assert bash["tool"] == "bash" and bash["read_only"] is False and bash["workspace"] is True
    assert {"command", "argv", "cwd", "env", "policy"} <= set(bash["input_schema"]["properties"])
    assert by_name["read"]["read_only"] and by_name["grep"]["read_only"] and by_name["glob"]["read_only"]
    assert by_name["grep"]["input_schema"]["required"] == ["pattern"]


def test_every_tool_and_every_field_is_described(parad: Daemon) -> None:
    with parad.client() as client:
        tools = client.tools()
    undescribed = [t["name"] for t in tools if len(t["description"]) < 20]
    fields = [path for t in tools for path, sub in _properties(t["input_schema"]) if not sub.get("description")]
    assert not undescribed and not fields, f"no description: tools {undescribed}, fields {fields}"


def test_the_schema_is_the_one_admission_checks(parad: Daemon) -> None:
    with parad.client() as client:
        schema = {t["name"]: t["input_schema"] for t in client.tools()}
    assert schema["read"] == TOOLS["read"].Args.model_json_schema()   # no union bounds to move: as pydantic gives it


def test_the_schemas_use_only_json_schema_keywords(parad: Daemon) -> None:
    """pydantic's own bound keywords (gt, ge, lt, le) are not JSON Schema: strict validators refuse them."""
    def keywords(node: Any, names: bool = False) -> Iterator[str]:
        if isinstance(node, list):
            for item in node:
                yield from keywords(item)
        elif isinstance(node, dict):
            for key, value in node.items():
                if not names:
                    yield key
                yield from keywords(value, not names and key in ("properties", "$defs"))
    with parad.client() as client:
        tools = client.tools()
    found = {k for t in tools for k in keywords(t["input_schema"])} & {"gt", "ge", "lt", "le"}
    assert not found
    bash = tools[[t["name"] for t in tools].index("bash")]["input_schema"]
    timeout = json.dumps(bash["properties"]["no_output_timeout"])   # the bound moved, not dropped
    assert '"type": "number", "exclusiveMinimum": 0' in timeout, timeout


def test_the_async_client_lists_them_too(parad: Daemon) -> None:
    async def main() -> list[str]:
        async with AsyncClient(parad.runtime_dir) as client:
            return [t["name"] for t in await client.tools()]
    assert "bash" in asyncio.run(main())
