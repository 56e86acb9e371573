"""A config file is merged over the built-in defaults: it changes what it names, nothing else.

These daemons run their config file as written (Daemon(..., builtin_pools=True)),
without the test sandbox of tests/conftest.py, so what they run is what a
user's file gives: the built-in pools and policies, commands as the owner of
their workspace when parad runs as root (cwd "/" in tasks: any user may enter it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from para.daemon.config import Config, load_config
from para.testing import FAST, Daemon, paractl, stop_and_check

BUILTIN_SIZES = {"bash": (2, 8), "echo": (1, 2), "read": (1, 4), "glob": (1, 4), "grep": (1, 4), "fetch": (1, 1), "search": (0, 1)}


@pytest.fixture
def run_file(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """run_file(config, env=...) -> a parad reading `config` as its file, built-in pools kept."""
    started: list[Daemon] = []

    def start(config: dict[str, Any], env: dict[str, str] | None = None) -> Daemon:
        d = Daemon({"daemon": FAST, **config}, tmp_path / f"d{len(started)}", env, builtin_pools=True, ready_timeout=90)
        started.append(d)
        return d

    yield start
    for d in started:
        stop_and_check(d)


def sizes(d: Daemon) -> dict[str, tuple[int, int]]:
    """Each pool's (min_workers, max_workers), as `paractl status` reports them."""
    proc = paractl(d, "--json", "status")
    assert proc.returncode == 0, proc.stderr
    return {p["name"]: (p["min_workers"], p["max_workers"]) for p in json.loads(proc.stdout)["pools"]}


def parad(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "para.daemon", *args], capture_output=True, text=True, timeout=60)


def test_a_file_that_sets_one_bash_option_keeps_every_pool_and_bash_sizes(run_file) -> None:
    d = run_file({"pools": {"bash": {"options": {"kill_grace": 3}}}})
    assert sizes(d) == BUILTIN_SIZES
    status = paractl(d, "status")
    assert f"{d.config_path} over built-in defaults" in status.stdout
    with d.client() as c:
        assert c.run("echo", x=1).value == {"x": 1}
        assert c.run("bash", command="echo hi", cwd="/").stdout == "hi\n"
        assert c.run("read", path="/etc/os-release").ok
        assert c.run("glob", patterns=["os-release"], root="/etc").ok


def test_a_built_in_pool_is_removed_by_null_and_a_new_pool_of_its_tool_can_be_added(run_file) -> None:
    d = run_file({"pools": {"grep": None, "project": {"tool": "bash", "min_workers": 1, "max_workers": 1}}})
    expected = {name: size for name, size in BUILTIN_SIZES.items() if name != "grep"} | {"project": (1, 1)}
    assert sizes(d) == expected
    refused = paractl(d, "grep", "x", "/etc")
    assert refused.returncode != 0 and "unknown tool 'grep'" in refused.stderr
    with d.client() as c:
        assert c.run("project", command="echo in project", cwd="/").stdout == "in project\n"


def test_a_removal_that_names_no_built_in_pool_stops_parad_with_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("pools:\n  gerp: null\n")
    proc = parad("--config", str(bad), "--runtime-dir", str(tmp_path / "rt"), "--state-dir", str(tmp_path / "st"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr == (f"parad: {bad}: pools.gerp: null removes a built-in pool, and there is none named 'gerp' "
                           f"(built-in pools: bash, echo, fetch, glob, grep, read, search); correct the name, or delete the line\n")
    assert not (tmp_path / "rt").exists()


@pytest.mark.parametrize("content, words", [
    ({"pools": None}, "pools: null would remove every pool; remove built-in pools one by one"),
    ({"pools": dict.fromkeys(BUILTIN_SIZES)}, "pools: every built-in pool is removed and none is added; keep or add"),
    ({"daemon": None}, "daemon: null cannot empty a section; leave 'daemon' out to keep its defaults"),
    ({"pools": {"bash": {"options": None}}}, "pools.bash.options: null cannot empty a section"),
    # Merged over bash, `tool: grep` would run grep with bash's sizes and timeouts.
    ({"pools": {"bash": {"tool": "grep"}}},
     "pools.bash.tool: the built-in pool 'bash' runs 'bash', not 'grep'; to run 'grep', add a pool under a new name"),
    # Merged, not replaced: the built-in max_workers (8) still applies, and the error says what to change.
    ({"pools": {"bash": {"min_workers": 10}}}, "min_workers (10) exceeds max_workers (8); raise max_workers"),
])
def test_check_config_refuses_what_cannot_merge_naming_the_key(tmp_path: Path, content, words: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(content))
    proc = parad("--check-config", str(path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"parad: {path}: ") and words in proc.stderr and proc.stderr.count("\n") == 1


def host_interfaces() -> set[str]:
    return {line.split(":")[0].strip() for line in Path("/proc/net/dev").read_text().splitlines()[2:]}


def test_one_nested_sandbox_option_keeps_the_rest_of_the_sandbox_policy(run_file, tmp_path: Path) -> None:
    if host_interfaces() <= {"lo"}:
        pytest.skip("the host has no network interface but lo: a command with the network could not tell")
    file = {"pools": {"bash": {"options": {"sandbox": {"network": True}}}}}
    d = run_file(file, env={**os.environ, "API_TOKEN": "secret"})
    with d.client() as c:
        r = c.run("bash", command='cat /proc/net/dev; echo "token=${API_TOKEN-dropped}"; ulimit -n', cwd="/")
    assert r.ok, r
    assert host_interfaces() <= {line.split(":")[0].strip() for line in r.stdout.splitlines() if ":" in line}
    assert "token=dropped\n1024\n" in r.stdout  # the env filter and the open_files limit are the defaults'
    assert sizes(d) == BUILTIN_SIZES
    # What parad runs with, every key written out: the default sandbox with network on.
    printed = parad("--config", str(d.config_path), "--print-config")
    assert printed.returncode == 0, printed.stderr
    sandbox = yaml.safe_load(printed.stdout)["pools"]["bash"]["options"]["sandbox"]
    assert sandbox == {**Config().pool_options("bash").sandbox.model_dump(mode="json"), "network": True}


def effective(config: Config) -> dict:
    """The config with every pool's options filled in with its tool's defaults."""
    return {**config.model_dump(), "pools": {name: {**pool.model_dump(), "options": config.pool_options(name).model_dump()}
                                             for name, pool in config.pools.items()}}


def test_print_config_writes_a_file_that_means_the_same(tmp_path: Path) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text("daemon: {log_level: debug}\npools:\n  glob: null\n  bash:\n    max_workers: 3\n"
                    "    options: {sandbox: {filesystem: {deny_read: [~/.secrets]}}}\n")
    printed = parad("--config", str(mine), "--print-config")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.startswith(f"# parad.yaml as parad runs it: {mine} merged over the built-in defaults.\n")
    again = tmp_path / "again.yaml"
    again.write_text(printed.stdout)
    config = load_config(again)
    assert effective(config) == effective(load_config(mine))
    assert "glob" not in config.pools and config.pools["bash"].max_workers == 3 and config.pools["bash"].min_workers == 2
    assert config.pool_options("bash").sandbox.filesystem.deny_read == ["~/.secrets"]  # a list replaces, it is not merged
