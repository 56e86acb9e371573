"""The README's Python examples marked `<!-- test: python -->`, run as written against a real daemon.

Each runs in its own interpreter with XDG_RUNTIME_DIR pointing at the test
daemon, so `Client(autostart=True)` finds it as it would a user's.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MARKED = re.compile(r"<!-- test: python -->\s*```python\n(.*?)```", re.S)
EXAMPLES = MARKED.findall((ROOT / "README.md").read_text())


def test_the_readme_has_tested_examples() -> None:
    assert len(EXAMPLES) >= 2


@pytest.fixture
def xdg_runtime():
    """A directory to be XDG_RUNTIME_DIR; requested before start_daemon, so removed after the daemon stopped."""
    base = Path(tempfile.mkdtemp(prefix="pr", dir="/tmp"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("code", EXAMPLES, ids=[f"example{i}" for i in range(len(EXAMPLES))])
def test_readme_example_runs(xdg_runtime: Path, start_daemon, code: str) -> None:
    d = start_daemon(pools={name: {"min_workers": 1, "max_workers": 2} for name in ("bash", "echo")},
                     runtime_dir=xdg_runtime / "para")
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, XDG_RUNTIME_DIR=str(xdg_runtime)),
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    with d.client() as c:
        assert c.status()["tasks"]["live"] == 0
