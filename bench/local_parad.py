"""A parad of a bench's own, with a given config, in a temporary directory."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from para.client import Client


def start(tmp: Path, config: dict[str, Any], deadline: float = 60.0) -> tuple[subprocess.Popen, dict[str, Any]]:
    """Start parad on `config` and wait until every pool has min_workers ready; (process, status)."""
    (tmp / "parad.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.Popen([sys.executable, "-P", "-m", "para.daemon", "--config", str(tmp / "parad.yaml"),
                             "--runtime-dir", str(tmp / "r"), "--state-dir", str(tmp / "s")],
                            stdout=subprocess.DEVNULL, stderr=open(tmp / "parad.log", "wb"))
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"parad exited with {proc.returncode}:\n{(tmp / 'parad.log').read_text()}")
        if (tmp / "r" / "control.sock").exists():
            with Client(tmp / "r", timeout=5) as c:
                status = c.status()
            if all(p["ready"] >= p["min_workers"] for p in status["pools"]):
                return proc, status
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"parad did not get ready in {deadline:g} s")
