"""Built-in tools, one module each; `TOOLS` maps a built-in tool's name to its class.

Pools find their tool through `registry.resolve`, which also loads plugin tools.
"""

from __future__ import annotations

from para.daemon.tools.base import Tool
from para.daemon.tools.registry import BUILTIN

TOOLS: dict[str, type[Tool]] = BUILTIN
