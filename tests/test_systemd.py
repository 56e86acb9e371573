"""sd_notify over a real datagram socket, the way systemd would listen."""

from __future__ import annotations

import configparser
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from para.testing import FAST, only_pools

ROOT = Path(__file__).resolve().parent.parent


def _receive_until(sock: socket.socket, wanted: str, timeout: float = 30) -> list[str]:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            seen.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if any(wanted in s for s in seen):
            return seen
    raise AssertionError(f"never received {wanted!r}; got {seen}")


def test_ready_watchdog_and_stopping_are_notified(tmp_path: Path) -> None:
    short = Path(tempfile.mkdtemp(prefix="pn", dir="/tmp"))
    notify_path = short / "notify"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    config = tmp_path / "parad.yaml"
    config.write_text(yaml.safe_dump({"daemon": FAST, "pools": only_pools({"echo": {"min_workers": 1}})}))
    env = dict(os.environ, NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC="200000")
    proc = subprocess.Popen([sys.executable, "-m", "para.daemon", "--config", str(config),
                             "--runtime-dir", str(short / "rt"), "--state-dir", str(tmp_path / "st")], env=env)
    try:
        ready = _receive_until(listener, "READY=1")
        assert any(f"STATUS=serving on {short / 'rt' / 'control.sock'}" in s for s in ready)
        _receive_until(listener, "WATCHDOG=1")
        proc.send_signal(signal.SIGTERM)
        _receive_until(listener, "STOPPING=1")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        listener.close()
        shutil.rmtree(short, ignore_errors=True)


def test_unit_files_parse_and_run_parad() -> None:
    for unit in (ROOT / "systemd" / "parad.service", ROOT / "systemd" / "user" / "parad.service"):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.read(unit)
        service = parser["Service"]
        assert service["Type"] == "notify" and "parad" in service["ExecStart"]
        assert service["ExecStart"].startswith("/")  # systemd wants an absolute path
        assert int(service["WatchdogSec"]) > 0
    system = configparser.ConfigParser(strict=False, interpolation=None)
    system.read(ROOT / "systemd" / "parad.service")
    assert "--system" in system["Service"]["ExecStart"] and system["Service"]["RuntimeDirectory"] == "para"


def test_fallback_without_systemd_python_speaks_the_protocol(monkeypatch, tmp_path: Path) -> None:
    """systemd-python needs libsystemd headers; without it parad writes the datagram itself."""
    from para.daemon import notify
    path = Path(tempfile.mkdtemp(prefix="pn", dir="/tmp")) / "n"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    try:
        monkeypatch.setattr(notify, "_sd", None)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert notify.notify("READY=1\nSTATUS=x") is True
        assert listener.recv(100) == b"READY=1\nSTATUS=x"
        monkeypatch.delenv("NOTIFY_SOCKET")
        assert notify.notify("READY=1") is False
        monkeypatch.setenv("WATCHDOG_USEC", "3000000")
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
        assert notify.watchdog_interval() == 1.5
        monkeypatch.setenv("WATCHDOG_PID", "1")
        assert notify.watchdog_interval() is None
    finally:
        listener.close()
        shutil.rmtree(path.parent, ignore_errors=True)
