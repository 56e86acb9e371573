"""A real parad started for a test or a benchmark: config in, ready pools, clean stop proved."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
import yaml

from para.client import Client, ParaError
from para.daemon.config import builtin_pools as _builtin_pools
from para.testing.processes import alive
from para.testing.wait import WaitTimeout, wait_until

# scale_cpu_percent 100: a loaded test machine must not stop pools growing in tests that need them to.
FAST = {"heartbeat_interval": 0.1, "failure_detection_timeout": 2.0, "shutdown_grace": 5.0, "log_level": "debug",
        "scale_cpu_percent": 100, "scale_memory_percent": 100}

ALL_POOLS = {name: {"min_workers": 1, "max_workers": 2} for name in ("echo", "read", "glob", "grep")} | {
    "bash": {"min_workers": 2, "max_workers": 4}}


def only_pools(pools: dict[str, Any]) -> dict[str, Any]:
    """`pools` for a config file that runs exactly them: parad merges a file over its built-in
    pools, so the built-in ones not named are removed (`NAME: null`)."""
    return {**{name: None for name in _builtin_pools() if name not in pools}, **pools}


class DaemonError(RuntimeError):
    """parad did not start, did not stop, or left something behind."""


class Daemon:
    """A parad process on `config`, started and ready (every pool at min_workers) when constructed.

    Its config, log and state live under `tmp`; its sockets in `runtime_dir`
    (by default a fresh short dir under /tmp: Unix socket paths are limited
    to 107 bytes). `python_flags` go before `-m para.daemon` (benchmarks pass
    `-P`); `require_ok` also waits for every pool's state to be "ok"; `cwd` is
    parad's working directory (the sandbox's writable root '.'). The daemon runs
    exactly the pools in `config["pools"]` (see only_pools); with
    `builtin_pools=True` the file is written as given, so parad keeps the
    built-in pools it does not name, as it does for a user's file.
    """

    def __init__(self, config: dict[str, Any], tmp: Path, env: dict[str, str] | None = None,
                 runtime_dir: Path | None = None, *, python_flags: Sequence[str] = (),
                 ready_timeout: float = 30.0, require_ok: bool = False, cwd: Path | None = None,
                 builtin_pools: bool = False) -> None:
        self.config = config
        self.tmp = tmp
        self.runtime_dir = runtime_dir or Path(tempfile.mkdtemp(prefix="pt", dir="/tmp"))
        tmp.mkdir(parents=True, exist_ok=True)
        self.state_dir = tmp / "state"
        self.config_path = tmp / "parad.yaml"
        self._builtin_pools = builtin_pools
        written = config if builtin_pools else {**config, "pools": only_pools(config.get("pools", {}))}
        self.config_path.write_text(yaml.safe_dump(written))
        self.log_path = tmp / "parad.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, *python_flags, "-m", "para.daemon", "--config", str(self.config_path),
             "--runtime-dir", str(self.runtime_dir), "--state-dir", str(self.state_dir)],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
        )
        self.pid = self.proc.pid
        self.seen: set[int] = set()
        self.status: dict[str, Any] = {}  # the status that showed it ready
        self._require_ok = require_ok
        self._last = "no answer yet"
        t0 = time.perf_counter()
        try:
            wait_until(self._ready, ready_timeout, "parad to serve")
        except WaitTimeout:
            self.stop()  # a parad that never came up is in no caller's hands: stop it here
            raise DaemonError(f"parad not ready after {ready_timeout:g}s ({self._last}):\n{self.log()[-5000:]}") from None
        except BaseException:
            self.stop()
            raise
        self.ready_s = time.perf_counter() - t0

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise DaemonError(f"parad exited with {self.proc.returncode}:\n{self.log()}")
        if not (self.runtime_dir / "control.sock").exists():
            return False
        try:
            with self.client(timeout=5.0) as c:
                status = c.status()
        except ParaError as exc:  # the socket exists a moment before parad answers on it
            self._last = str(exc)
            return False
        pools = status["pools"]
        self._last = ", ".join(f"{p['name']}: {p['state']} {p['ready']}/{p['min_workers']} ready" for p in pools)
        if all(p["ready"] >= p["min_workers"] and (p["state"] == "ok" or not self._require_ok) for p in pools):
            self.status = status
            return True
        return False

    def client(self, **kwargs: Any) -> Client:
        """A Client of this parad; `kwargs` go to Client."""
        return Client(self.runtime_dir, **kwargs)

    def log(self) -> str:
        """What parad wrote to stdout and stderr so far."""
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
        """The names of the pools parad runs."""
        named = self.config.get("pools", {})
        kept = set(_builtin_pools()) if self._builtin_pools else set()
        return sorted((kept | set(named)) - {name for name, pool in named.items() if pool is None})

    def workers(self, pool: str | None = None) -> list[dict[str, Any]]:
        """The workers parad reports, of `pool` only if given."""
        with self.client() as c:
            return [w for w in c.workers() if pool is None or w["pool"] == pool]

    def pool(self, name: str) -> dict[str, Any]:
        """Pool `name` as `status()` reports it."""
        with self.client() as c:
            return next(p for p in c.status()["pools"] if p["name"] == name)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM parad and return its exit code; kill it and its tree, and raise DaemonError, after `timeout`."""
        self.tree()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in self.tree():
                p.kill()
            self.proc.kill()
            self.proc.wait()
            self._log.close()
            raise DaemonError(f"parad did not exit within {timeout:g}s of SIGTERM; killed") from None
        self._log.close()
        return code

    def leftovers(self) -> list[int]:
        """Processes once seen under parad that have not exited."""
        return [pid for pid in self.seen if alive(pid)]


def stop_and_check(d: Daemon) -> None:
    """Stop `d`; raise DaemonError unless it exited 0 leaving no socket file and no process behind."""
    code = d.stop()
    sockets = list(d.runtime_dir.glob("**/*.sock")) if d.runtime_dir.exists() else []
    if d.leftovers():
        wait_until(lambda: not d.leftovers(), 10, f"processes {d.leftovers()} of parad's tree to end")
    shutil.rmtree(d.runtime_dir, ignore_errors=True)
    if code != 0:
        raise DaemonError(f"parad exited with {code}:\n{d.log()}")
    if sockets:
        raise DaemonError(f"socket files left behind: {sockets}")


def bad_frames(d: Daemon) -> dict[str, float]:
    """para_bad_frames_total by socket, as `paractl metrics` shows it."""
    with d.client() as c:
        text = c.metrics()
    return {socket: float(n) for socket, n in re.findall(r'^para_bad_frames_total\{socket="([^"]+)"\} (\S+)$', text, re.M)}


def paractl_argv(*args: str) -> list[str]:
    """The command line of `paractl ARGS` run by this Python."""
    return [sys.executable, "-m", "para.client.paractl", *args]


def paractl(parad: Daemon | None, *args: str, timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run paractl against `parad` (never autostarting one there), or bare when parad is None.

    Its stdin is /dev/null unless `stdin` or `input` is given: `paractl bash` forwards a
    stdin that is a pipe or a file, and the test runner's own stdin is no test's business."""
    prefix = ["--runtime-dir", str(parad.runtime_dir), "--no-autostart"] if parad is not None else []
    if "input" not in kwargs:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run(paractl_argv(*prefix, *args), capture_output=True, text=True, timeout=timeout, **kwargs)
