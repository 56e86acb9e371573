"""Fixtures that run a real parad: real sockets, real forked workers, real commands."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from para.client import Client

# scale_cpu_percent 100: a loaded test machine must not stop pools growing in tests that need them to.
FAST = {"heartbeat_interval": 0.1, "failure_detection_timeout": 2.0, "shutdown_grace": 5.0, "log_level": "debug",
        "scale_cpu_percent": 100, "scale_memory_percent": 100}


def wait_until(condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll `condition` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


# Tests run as root in CI: the bash pools run commands as root (not the
# default `nobody`) and may write under pytest's temporary directory and in
# the checkout (".", the default, which also keeps it visible when it lies
# under /tmp, where the sandbox has its own empty /tmp).
TEST_SANDBOX: dict[str, Any] = {"run_as": None, "filesystem": {"writable": []}}


@pytest.fixture(scope="session", autouse=True)
def _test_sandbox(tmp_path_factory: pytest.TempPathFactory) -> None:
    TEST_SANDBOX["filesystem"]["writable"] = [str(tmp_path_factory.getbasetemp()), "."]


# The read-only tools too read as root: what tests give them lies in pytest's
# root-owned 0700 directories. Tests of run_as set it themselves.
TEST_READ_SANDBOX: dict[str, Any] = {"run_as": None}


def with_test_sandbox(config: dict[str, Any]) -> dict[str, Any]:
    """`config` with TEST_SANDBOX under every bash pool's options, TEST_READ_SANDBOX under
    every read, glob and grep pool's (the test's own settings win)."""
    pools = {}
    for name, pool in config.get("pools", {}).items():
        tool = pool.get("tool") or name
        test_sandbox = TEST_SANDBOX if tool == "bash" else TEST_READ_SANDBOX if tool in ("read", "glob", "grep") else None
        if test_sandbox is not None:
            options = pool.get("options", {})
            pool = {**pool, "options": {**options, "sandbox": _merge(test_sandbox, options.get("sandbox", {}))}}
        pools[name] = pool
    return {**config, "pools": pools}


def marked(tag: str) -> list[int]:
    """Live processes whose argv[0] is `tag` (set with `exec -a TAG`).

    Tests find a command's processes this way, not by a pid the command
    wrote: inside a sandbox's pid namespace that pid means something else.
    """
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if cmdline and cmdline[0] == tag and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc.pid)
    return found


class Daemon:
    """A parad process started for one test."""

    def __init__(self, config: dict[str, Any], tmp: Path, env: dict[str, str] | None = None,
                 runtime_dir: Path | None = None) -> None:
        # Unix socket paths are limited to 107 bytes: keep the runtime dir short.
        config = with_test_sandbox(config)
        self.config = config
        self.runtime_dir = runtime_dir or Path(tempfile.mkdtemp(prefix="pt", dir="/tmp"))
        tmp.mkdir(parents=True, exist_ok=True)
        self.state_dir = tmp / "state"
        self.config_path = tmp / "parad.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = tmp / "parad.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "para.daemon", "--config", str(self.config_path),
             "--runtime-dir", str(self.runtime_dir), "--state-dir", str(self.state_dir)],
            stdout=self._log, stderr=subprocess.STDOUT, env=env,
        )
        self.pid = self.proc.pid
        self.seen: set[int] = set()
        try:
            wait_until(self._ready, 30, "parad to serve")
        except BaseException:
            self.stop()  # a parad that never came up is in no fixture's list: stop it here
            raise

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"parad exited with {self.proc.returncode}:\n{self.log()}")
        if not (self.runtime_dir / "control.sock").exists():
            return False
        with self.client() as c:
            pools = c.status()["pools"]
        return all(p["ready"] >= p["min_workers"] for p in pools)

    def client(self, **kwargs: Any) -> Client:
        return Client(self.runtime_dir, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tree(self) -> list[psutil.Process]:
        """Every live process under parad; remembered so teardown can prove they all ended."""
        try:
            procs = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        self.seen.update(p.pid for p in procs)
        return procs

    @property
    def pools(self) -> list[str]:
        return sorted(self.config["pools"])

    def workers(self, pool: str | None = None) -> list[dict[str, Any]]:
        with self.client() as c:
            return [w for w in c.workers() if pool is None or w["pool"] == pool]

    def pool(self, name: str) -> dict[str, Any]:
        with self.client() as c:
            return next(p for p in c.status()["pools"] if p["name"] == name)

    def stop(self) -> int:
        self.tree()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            for p in self.tree():
                p.kill()
            self.proc.kill()
            self.proc.wait()
            pytest.fail("parad did not exit within 30s of SIGTERM")
        self._log.close()
        return code

    def leftovers(self) -> list[int]:
        alive = []
        for pid in self.seen:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        return alive


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def stop_and_check(d: Daemon) -> None:
    """Stop `d` and fail unless it exited 0 leaving no socket file and no process behind."""
    code = d.stop()
    sockets = list(d.runtime_dir.glob("**/*.sock")) if d.runtime_dir.exists() else []
    if d.leftovers():
        wait_until(lambda: not d.leftovers(), 10, f"processes {d.leftovers()} of parad's tree to end")
    shutil.rmtree(d.runtime_dir, ignore_errors=True)
    assert code == 0, f"parad exited with {code}:\n{d.log()}"
    assert not sockets, f"socket files left behind: {sockets}"


ALL_POOLS = {name: {"min_workers": 1, "max_workers": 2} for name in ("echo", "read", "glob", "grep")} | {
    "bash": {"min_workers": 2, "max_workers": 4}}


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon with every built-in pool, shared by a module's tests that do not disturb it."""
    d = Daemon({"daemon": FAST, "pools": ALL_POOLS}, tmp_path_factory.mktemp("shared"))
    yield d
    stop_and_check(d)


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """start_daemon(pools={...}, daemon={...}) -> a running Daemon; stopped and checked after the test."""
    started: list[Daemon] = []

    def start(pools: dict[str, Any] | None = None, daemon: dict[str, Any] | None = None,
              env: dict[str, str] | None = None, runtime_dir: Path | None = None) -> Daemon:
        config = {
            "daemon": _merge(FAST, daemon or {}),
            "pools": pools or {"echo": {"min_workers": 1, "max_workers": 2},
                               "bash": {"min_workers": 2, "max_workers": 4}},
        }
        d = Daemon(config, tmp_path / f"d{len(started)}", env, runtime_dir)
        started.append(d)
        return d

    yield start
    for d in started:
        stop_and_check(d)


@pytest.fixture
def daemon(start_daemon: Callable[..., Daemon]) -> Daemon:
    """A daemon with the default test pools (echo, bash)."""
    return start_daemon()


def bad_frames(d: Daemon) -> dict[str, float]:
    """para_bad_frames_total by socket, as `paractl metrics` shows it."""
    with d.client() as c:
        text = c.metrics()
    return {socket: float(n) for socket, n in re.findall(r'^para_bad_frames_total\{socket="([^"]+)"\} (\S+)$', text, re.M)}
