"""Fixtures that run a real parad: real sockets, real forked workers, real commands.

The harness itself (Daemon, wait_until, marked, ...) is para.testing, which
benchmarks share; test modules import helpers from there, never from here
(`tests.conftest` would be a second copy of this module, with its own
TEST_SANDBOX that no fixture fills in).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from para.testing import ALL_POOLS, FAST, Daemon, stop_and_check

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
        if pool is None:  # a built-in pool removed
            pools[name] = pool
            continue
        tool = pool.get("tool") or name
        test_sandbox = TEST_SANDBOX if tool == "bash" else TEST_READ_SANDBOX if tool in ("read", "glob", "grep") else None
        if test_sandbox is not None:
            options = pool.get("options", {})
            pool = {**pool, "options": {**options, "sandbox": _merge(test_sandbox, options.get("sandbox", {}))}}
        pools[name] = pool
    return {**config, "pools": pools}


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.fixture(scope="session")
def make_daemon() -> Callable[..., Daemon]:
    """make_daemon(config, tmp, ...) -> a running Daemon on `config` under the test sandbox; the caller stops it."""
    def start(config: dict[str, Any], tmp: Path, *args: Any, **kwargs: Any) -> Daemon:
        return Daemon(with_test_sandbox(config), tmp, *args, **kwargs)
    return start


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory: pytest.TempPathFactory, make_daemon: Callable[..., Daemon]) -> Iterator[Daemon]:
    """One daemon with every built-in pool, shared by a module's tests that do not disturb it."""
    d = make_daemon({"daemon": FAST, "pools": ALL_POOLS}, tmp_path_factory.mktemp("shared"))
    yield d
    stop_and_check(d)


# The MCP tests' parad: a worker or two per pool, and time to spare before a worker is taken for
# hung, because their 20-calls tests stop the read and grep workers until every call is in.
MCP_POOLS = {"echo": {"min_workers": 1, "max_workers": 1}, "bash": {"min_workers": 1, "max_workers": 2},
             **{tool: {"min_workers": 1, "max_workers": 1} for tool in ("read", "grep", "glob")}}


@pytest.fixture(scope="module")
def mcp_parad(tmp_path_factory: pytest.TempPathFactory, make_daemon: Callable[..., Daemon]) -> Iterator[Daemon]:
    """A parad for an MCP server to front, shared by a module's tests."""
    d = make_daemon({"daemon": {**FAST, "failure_detection_timeout": 120.0}, "pools": MCP_POOLS},
                    tmp_path_factory.mktemp("mcp-parad"))
    yield d
    stop_and_check(d)


@pytest.fixture(scope="module")
def mcp_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MCP server's working directory: ten small files to grep and read (f0.txt .. f9.txt), and notes.txt."""
    ws = tmp_path_factory.mktemp("mcp-ws")
    (ws / "notes.txt").write_text("alpha\nneedle here\nomega\n")
    for i in range(10):
        (ws / f"f{i}.txt").write_text(f"line one\nneedle {i}\n")
    return ws


@pytest.fixture
def start_daemon(tmp_path: Path, make_daemon: Callable[..., Daemon]) -> Iterator[Callable[..., Daemon]]:
    """start_daemon(pools={...}, daemon={...}, cwd=DIR) -> a running Daemon (started in DIR); stopped and checked after the test."""
    started: list[Daemon] = []

    def start(pools: dict[str, Any] | None = None, daemon: dict[str, Any] | None = None,
              env: dict[str, str] | None = None, runtime_dir: Path | None = None, cwd: Path | None = None) -> Daemon:
        config = {
            "daemon": _merge(FAST, daemon or {}),
            "pools": pools or {"echo": {"min_workers": 1, "max_workers": 2},
                               "bash": {"min_workers": 2, "max_workers": 4}},
        }
        d = make_daemon(config, tmp_path / f"d{len(started)}", env, runtime_dir, cwd=cwd)
        started.append(d)
        return d

    yield start
    for d in started:
        stop_and_check(d)


@pytest.fixture
def daemon(start_daemon: Callable[..., Daemon]) -> Daemon:
    """A daemon with the default test pools (echo, bash)."""
    return start_daemon()
