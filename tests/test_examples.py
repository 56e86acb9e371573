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


def paractl_batch(d, example: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "para.client.paractl", "--runtime-dir", str(d.runtime_dir), "--no-autostart",
         *extra, "batch", str(ROOT / "configs" / "examples" / example)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_explore_batch_example(start_daemon) -> None:
    import json

    d = start_daemon(pools=ALL_POOLS)
    proc = paractl_batch(d, "explore.yaml", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    *tasks, last = [json.loads(line) for line in proc.stdout.splitlines()]   # a line per task, then the batch
    assert last["batch"]["done"] == 6 and last["batch"]["failed"] == 0
    results = {line["task"]: line["result"] for line in tasks}
    summary = results["summary"]["stdout"]
    python_files = results["python"]["value"]["count"]
    assert f"({python_files} Python)" in summary and python_files > 20


def test_build_and_test_batch_example(start_daemon) -> None:
    d = start_daemon(pools=ALL_POOLS)
    proc = paractl_batch(d, "build-and-test.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:4]] and all(
        any(line.startswith("ok") and line.split()[1] == name for line in lines)
        for name in ("compile", "config", "unit", "report"))
    assert "4 tasks, 0 failed, 0 skipped" in proc.stdout
