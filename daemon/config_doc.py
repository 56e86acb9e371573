"""Render the commented default parad.yaml from the config models.

The models are the source of truth; `configs/parad.yaml` is this output, and a
test fails when the two drift apart.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from para.daemon.config import Config, PoolSection
from para.daemon.tools import TOOLS

HEADER = """\
# parad.yaml: configuration of the para daemon (parad).
#
# Generated from the config models by `parad --print-default-config`; every
# value below is the built-in default. Copy this file to
# $XDG_CONFIG_HOME/para/parad.yaml (or /etc/para/parad.yaml with --system),
# change what you need, and check it with `parad --check-config FILE`.
# Unknown keys and wrong types are refused at start, naming the key.
"""


def _scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("\n...").strip()


def _fields(model: BaseModel, indent: int, skip: tuple[str, ...] = ()) -> list[str]:
    lines = []
    pad = " " * indent
    for name, info in type(model).model_fields.items():
        if name in skip:
            continue
        value = getattr(model, name)
        if info.description:
            lines.append(f"{pad}# {info.description}")
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:")
            lines.extend(_fields(value, indent + 2))
        else:
            lines.append(f"{pad}{name}: {_scalar(value)}")
    return lines


def render_default_config() -> str:
    config = Config()
    lines = [HEADER, "daemon:"]
    lines += _fields(config.daemon, 2)
    lines += ["", "# One pool of warm workers per tool. A task names its pool in `tool`.", "pools:"]
    for name, pool in config.pools.items():
        lines.append(f"  {name}:")
        lines += _fields(pool, 4, skip=("options",))
        options = TOOLS[pool.tool].Options()
        option_lines = _fields(options, 6)
        lines.append(f"    # {PoolSection.model_fields['options'].description}")
        lines.append("    options:" if option_lines else "    options: {}")
        lines += option_lines
    return "\n".join(lines) + "\n"

