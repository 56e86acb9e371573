"""The README's examples, run as a user would run them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALL_POOLS = {name: {"min_workers": 1, "max_workers": 2} for name in ("echo", "bash", "read", "glob", "grep")}


def test_explore_example_fans_out_over_this_repo(start_daemon) -> None:
    d = start_daemon(pools=ALL_POOLS)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "configs" / "examples" / "explore.py"), str(ROOT), "--runtime-dir", str(d.runtime_dir)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "files under" in out and ".py" in out
    functions = next(line for line in out.splitlines() if line.strip().startswith("functions"))
    assert int(functions.split()[1]) > 50  # this repo has well over 50 functions
    assert "tool calls in" in out
    with d.client() as c:
        assert c.status()["tasks"]["succeeded"] >= 10
