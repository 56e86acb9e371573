"""A real parad started for a test or a benchmark: config in, ready pools, clean stop proved."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import sqlite3
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
        self._argv = [sys.executable, *python_flags, "-m", "para.daemon", "--config", str(self.config_path),
                      "--runtime-dir", str(self.runtime_dir), "--state-dir", str(self.state_dir)]
        self._env, self._cwd, self._ready_timeout = env, cwd, ready_timeout
        self.seen: dict[int, psutil.Process] = {}   # by pid; a Process knows its start time, so a reused pid is not it
        self._require_ok = require_ok
        self.killed = False   # the last run ended by kill(): stop_and_check expects no clean exit from it
        self._start("wb")

    def _start(self, log_mode: str) -> None:
        """Start parad and wait until it is ready; `ready_s` and `answered_s` time it."""
        self._log = open(self.log_path, log_mode)
        self.log_start = self._log.tell()   # where this run's lines begin in the log
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(self._argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=self._env, cwd=self._cwd)
        self.pid = self.proc.pid
        self.status: dict[str, Any] = {}  # the status that showed it ready
        self.answered_s: float | None = None  # from start to its first answer to status
        self._last = "no answer yet"
        try:
            wait_until(lambda: self._ready(t0), self._ready_timeout, "parad to serve")
        except WaitTimeout:
            self.stop()  # a parad that never came up is in no caller's hands: stop it here
            raise DaemonError(f"parad not ready after {self._ready_timeout:g}s ({self._last}):\n"
                              f"{self.log()[-5000:]}") from None
        except BaseException:
            self.stop()
            raise
        self.ready_s = time.perf_counter() - t0

    def kill(self, timeout: float = 20.0) -> None:
        """SIGKILL parad, as a crash or the OOM killer would, and wait until it and every process
        seen under it (fork server, workers, their commands) have ended.

        Raises DaemonError, after killing them itself, if any is still alive `timeout` s later:
        nothing of a dead parad may go on running unsupervised.
        """
        self.tree()   # the latest tree, so the wait below covers every member
        self.proc.kill()
        self.proc.wait()
        self._log.close()
        self.killed = True
        try:
            wait_until(lambda: not self.leftovers(), timeout, "parad's process tree to follow it")
        except WaitTimeout:
            left = {pid: _describe(self.seen[pid]) for pid in self.leftovers()}
            for pid in left:
                _kill_quietly(self.seen[pid])
            raise DaemonError(f"processes {left} outlived parad's SIGKILL by {timeout:g}s; killed them") from None

    def restart(self) -> None:
        """Start a new parad in place of this one, which must have exited (kill() or stop()):
        the same config, runtime dir, state dir and log (appended to); ready when it returns.

        `pid`, `proc`, `status`, `ready_s` and `answered_s` then describe the new run;
        `log(this_run=True)` is its part of the log.
        """
        if self.proc.poll() is None:
            raise DaemonError(f"parad (pid {self.pid}) is still running: kill() or stop() it before restart()")
        self.killed = False
        self._start("ab")

    def _ready(self, t0: float) -> bool:
        if self.proc.poll() is not None:
            raise DaemonError(f"parad exited with {self.proc.returncode}:\n{self.log(this_run=True)}")
        if not (self.runtime_dir / "control.sock").exists():
            return False
        try:
            with self.client(timeout=5.0) as c:
                status = c.status()
        except ParaError as exc:  # the socket exists a moment before parad answers on it (or a dead one's is left)
            self._last = str(exc)
            return False
        if self.answered_s is None:
            self.answered_s = time.perf_counter() - t0
        pools = status["pools"]
        self._last = ", ".join(f"{p['name']}: {p['state']} {p['ready']}/{p['min_workers']} ready" for p in pools)
        # A pool whose tool cannot be loaded (its `error`) is failed for good: no worker to wait for.
        if all(p.get("error") or p["ready"] >= p["min_workers"] and (p["state"] == "ok" or not self._require_ok) for p in pools):
            self.status = status
            return True
        return False

    def client(self, **kwargs: Any) -> Client:
        """A Client of this parad; `kwargs` go to Client."""
        return Client(self.runtime_dir, **kwargs)

    def log(self, this_run: bool = False) -> str:
        """What parad wrote to stdout and stderr so far: every run's, or the current run's alone."""
        with open(self.log_path, "rb") as f:
            f.seek(self.log_start if this_run else 0)
            return f.read().decode(errors="replace")

    def journal_rows(self, sql: str, *args: Any) -> list[tuple]:
        """The rows `sql` selects from this parad's journal (SQLite allows a reader beside parad)."""
        with contextlib.closing(sqlite3.connect(self.state_dir / "journal.sqlite3")) as db:
            return db.execute(sql, args).fetchall()

    def tree(self) -> list[psutil.Process]:
        """Every live process under parad; remembered so teardown can prove they all ended."""
        try:
            procs = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        for p in procs:
            self.seen.setdefault(p.pid, p)
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
        """Processes once seen under parad that have not exited (a pid since reused is not one)."""
        return [pid for pid, p in self.seen.items() if _running(p)]


def stop_and_check(d: Daemon) -> None:
    """Stop `d`; raise DaemonError unless it exited 0 leaving no socket file and no process behind.

    A parad whose last run ended by `kill()` is expected to have left its socket files and
    a non-zero exit: only the processes are checked.
    """
    code = d.stop()
    sockets = list(d.runtime_dir.glob("**/*.sock")) if d.runtime_dir.exists() else []
    if d.leftovers():
        wait_until(lambda: not d.leftovers(), 10, f"processes {d.leftovers()} of parad's tree to end")
    shutil.rmtree(d.runtime_dir, ignore_errors=True)
    if d.killed:
        return
    if code != 0:
        raise DaemonError(f"parad exited with {code}:\n{d.log()}")
    if sockets:
        raise DaemonError(f"socket files left behind: {sockets}")


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _describe(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())[:80]
    except psutil.Error:
        return "?"


def _kill_quietly(p: psutil.Process) -> None:
    try:
        p.kill()   # psutil checks it is still the process we saw, not a reuse of its pid
    except psutil.NoSuchProcess:
        pass


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
