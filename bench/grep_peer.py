"""The grep row: 8 searches of a large tree through para's grep pool, against the same
8 `rg --json` run directly, all at once.

para: `Client.map("grep", [{"pattern": P, "path": ROOT}, ...])`, one task per
pattern, results consumed in order (each a structured answer: its first 500
matches, the default max_results, and the count of all of them).

peer: the same 8 rg command lines para's grep tool runs (same rg binary, same
flags, same working directory), started together; every stdout read to EOF and
parsed as JSON lines, as the para answer is structured too.

Both count matching lines; a round whose counts differ is the bench comparing
different work, and says so.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sysconfig
import time
from pathlib import Path
from typing import Any

from para.daemon.tools.base import ToolFailure
from para.daemon.tools.ripgrep import rg_path

# Common in Python code, none of them on a minified line of megabytes (a `TODO` in
# site-packages also matches a 6 MB source map, which would measure that one line).
PATTERNS = ["yield from", "async def", "NotImplementedError", "def __init__", "raise ValueError",
            "@staticmethod", "__all__", "threading"]


def default_root() -> Path:
    """The running Python's site-packages: a large tree every machine with the bench has."""
    return Path(sysconfig.get_paths()["purelib"])


def tree_size(root: Path) -> tuple[int, int]:
    """(files, bytes) under `root`, symlinks not followed."""
    files = size = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            try:
                size += os.lstat(os.path.join(dirpath, name)).st_size
                files += 1
            except OSError:
                pass
    return files, size


def missing_rg() -> str:
    """Why rg cannot run here, or "" when it can."""
    try:
        rg_path()
    except ToolFailure as exc:
        return str(exc)
    return ""


def rg_argv(pattern: str) -> list[str]:
    """What para's grep tool runs for {"pattern": pattern} in a directory (daemon/tools/grep.py)."""
    return [rg_path(), "--json", "--no-require-git", "--smart-case", "--regexp", pattern, "--"]


def rg_round(root: Path, patterns: list[str]) -> tuple[float, int]:
    """(seconds, matching lines) of the rg searches run at once, outputs read and parsed."""
    t = time.perf_counter()
    procs = [subprocess.Popen(rg_argv(p), cwd=root, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL) for p in patterns]
    outputs = _read_all(procs)
    matches = 0
    for proc, out in zip(procs, outputs):
        if proc.wait() > 1:   # 1: nothing matched
            raise RuntimeError(f"rg exited {proc.returncode}: {' '.join(proc.args)}")
        for line in out.splitlines():
            if json.loads(line).get("type") == "match":
                matches += 1
    return time.perf_counter() - t, matches


def _read_all(procs: list[subprocess.Popen]) -> list[bytes]:
    """Every stdout to EOF, read as it comes (a full pipe would stall its rg)."""
    chunks: dict[int, list[bytes]] = {i: [] for i in range(len(procs))}
    with selectors.DefaultSelector() as sel:
        for i, proc in enumerate(procs):
            sel.register(proc.stdout, selectors.EVENT_READ, i)
        while sel.get_map():
            for key, _ in sel.select():
                data = os.read(key.fileobj.fileno(), 1 << 20)
                if data:
                    chunks[key.data].append(data)
                else:
                    sel.unregister(key.fileobj)
                    key.fileobj.close()
    return [b"".join(chunks[i]) for i in range(len(procs))]


def para_round(client: Any, root: Path, patterns: list[str]) -> tuple[float, int]:
    """(seconds, matching lines) of the searches as one Client.map on the grep pool."""
    t = time.perf_counter()
    results = list(client.map("grep", ({"pattern": p, "path": str(root)} for p in patterns), return_exceptions=True))
    dt = time.perf_counter() - t
    bad = [r for r in results if not getattr(r, "ok", False)]
    if bad:
        raise RuntimeError(f"grep: {len(bad)} of {len(patterns)} searches failed: {bad[0]}")
    return dt, sum(r.value["count"] for r in results)
