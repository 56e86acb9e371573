"""Built-in tools, one module each; `TOOLS` maps a tool name to its class."""

from __future__ import annotations

from para.daemon.tools.base import Tool
from para.daemon.tools.bash import Bash
from para.daemon.tools.echo import Echo
from para.daemon.tools.glob import Glob
from para.daemon.tools.grep import Grep
from para.daemon.tools.read import Read

TOOLS: dict[str, type[Tool]] = {cls.name: cls for cls in (Echo, Bash, Read, Glob, Grep)}
