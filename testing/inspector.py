"""The MCP Inspector's command-line mode, an MCP client written apart from para and its Python SDK.

`.ci/run` installs it with a Node 22 into a cache folder (npm ships both); tests
call `inspector()` and skip with its reason when it is not there.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

MIN_NODE = (22, 19)


@dataclass(frozen=True)
class Inspector:
    argv: list[str]            # the command line up to its own arguments: node, the inspector's launcher, --cli
    env: dict[str, str]        # the environment it needs (its Node first on PATH: it starts children with `node`)


def node_dir() -> Path:
    """Where `.ci/run` installs Node and the inspector."""
    explicit = os.environ.get("PARA_TEST_NODE_DIR")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "para-tests" / "node"


def inspector() -> Inspector | str:
    """The inspector's CLI, or why it cannot be used here (for pytest.skip)."""
    bin_dir = node_dir() / "node_modules" / ".bin"
    node, launcher = bin_dir / "node", bin_dir / "mcp-inspector"
    if not launcher.exists() or not node.exists():
        return f"no MCP Inspector in {bin_dir} (bash .ci/run installs it with npm)"
    try:
        version = subprocess.run([str(node), "--version"], capture_output=True, text=True, timeout=30).stdout
        major, minor = (int(x) for x in version.strip().lstrip("v").split(".")[:2])
    except (OSError, ValueError, subprocess.TimeoutExpired) as e:
        return f"{node} does not run: {e}"
    if (major, minor) < MIN_NODE:
        return f"{node} is Node {version.strip()}; the MCP Inspector needs {'.'.join(map(str, MIN_NODE))} or later"
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return Inspector([str(node), str(launcher), "--cli"], env)
