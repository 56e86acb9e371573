"""Config: one source of truth, and clear refusals naming file, key and reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from para.daemon.config import Config, ConfigError, load_config
from para.daemon.config_doc import render_default_config

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_parad_yaml_is_generated_from_the_models() -> None:
    assert (ROOT / "configs" / "parad.yaml").read_text() == render_default_config(), \
        "configs/parad.yaml is stale: regenerate it with `parad --print-default-config > configs/parad.yaml`"


def _effective(config: Config) -> dict:
    """The config with every pool's options filled in with the tool's defaults."""
    dumped = config.model_dump()
    for name in config.pools:
        dumped["pools"][name]["options"] = config.pool_options(name).model_dump()
    return dumped


def test_shipped_defaults_equal_the_model_defaults() -> None:
    assert _effective(load_config(ROOT / "configs" / "parad.yaml")) == _effective(Config())
    assert _effective(load_config(None)) == _effective(Config())  # the packaged copy


def test_every_field_is_described() -> None:
    text = render_default_config()
    for line_no, line in enumerate(text.splitlines()):
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not stripped.endswith(":"):
            previous = text.splitlines()[line_no - 1].strip()
            assert previous.startswith("#"), f"no description above {stripped!r}"


@pytest.mark.parametrize("content, words", [
    ({"daemon": {"heartbeat_intervall": 1}}, "daemon.heartbeat_intervall: Extra inputs are not permitted"),
    ({"daemon": {"heartbeat_interval": "fast"}}, "daemon.heartbeat_interval: Input should be a valid number"),
    ({"pools": {"bash": {"min_workers": 5, "max_workers": 2}}}, "min_workers (5) exceeds max_workers (2)"),
    ({"pools": {"rust": {}}}, "pools.rust: unknown tool 'rust'; built-in tools: bash, echo, fetch, glob, grep, read, search"),
    ({"pools": {"bash": {"options": {"sandbox": {"limits": {"cpu_seconds": -1}}}}}}, "pools.bash.options: sandbox.limits.cpu_seconds"),
    ({"pools": {"bash": {"options": {"nope": 1}}}}, "pools.bash.options: nope: Extra inputs are not permitted"),
    ([1, 2], "top level must be a mapping"),
    # Configs that validate field by field but cannot work (issue: refused at check time, not at the first task).
    ({"daemon": {"failure_detection_timeout": 1, "heartbeat_interval": 5}},
     "failure_detection_timeout (1s) must be at least twice heartbeat_interval (5s)"),
    ({"pools": {"bash": {"options": {"sandbox": {"run_as": "none"}}}}},
     "sandbox.run_as: Value error, user 'none' does not exist on this host; name an existing user (one that runs nothing else), 'owner' for the workspace's owner, or null"),
    ({"pools": {"read": {"options": {"sandbox": {"run_as": "none"}}}}}, "pools.read.options: sandbox.run_as: Value error, user 'none'"),
    ({"pools": {"bash": {"default_timeout": 600, "max_timeout": 60}}}, "default_timeout (600s) exceeds max_timeout (60s)"),
    ({"daemon": {"client_output_budget": "64MiB", "output_budget_total": "32MiB"}},
     "output_budget_total (33554432 bytes) is below client_output_budget (67108864 bytes)"),
    ({"pools": {"bash": {"max_queue_bytes": "4MiB"}}},
     "pools.bash.max_queue_bytes (4194304 bytes) is below daemon.max_message_size (8388608 bytes)"),
    # A credit past what one batch frame may hold crashed the worker at the first big submit.
    ({"pools": {"echo": {"credit": 5000}}}, "pools.echo.credit: Input should be less than or equal to 1024"),
])
def test_bad_config_names_file_key_and_reason(tmp_path: Path, content, words: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ") and words in str(info.value)


def test_run_as_null_means_root_as_the_shipped_comment_says(tmp_path: Path) -> None:
    shipped = (ROOT / "configs" / "parad.yaml").read_text()
    assert "null: as root" in shipped and "none: as root" not in shipped
    path = tmp_path / "root.yaml"
    path.write_text("pools:\n  bash:\n    options:\n      sandbox:\n        run_as: null\n")
    assert load_config(path).pool_options("bash").sandbox.run_as is None


def test_check_config_refuses_what_cannot_work(tmp_path: Path) -> None:
    bad = tmp_path / "hb.yaml"
    bad.write_text("daemon:\n  heartbeat_interval: 5\n  failure_detection_timeout: 1\n")
    proc = subprocess.run([sys.executable, "-m", "para.daemon", "--check-config", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "must be at least twice heartbeat_interval" in proc.stderr


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "x.yaml").write_text("daemon: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "x.yaml")


def test_parad_refuses_a_bad_config_at_start_and_check_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("daemon:\n  shutdown_grace: soon\n")
    for argv in (["--config", str(bad), "--runtime-dir", str(tmp_path / "rt")], ["--check-config", str(bad)]):
        proc = subprocess.run([sys.executable, "-m", "para.daemon", *argv], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2
        assert f"parad: {bad}: daemon.shutdown_grace: Input should be a valid number" in proc.stderr
    assert not (tmp_path / "rt").exists()  # refused before touching anything
    good = subprocess.run([sys.executable, "-m", "para.daemon", "--check-config", str(ROOT / "configs" / "parad.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert good.returncode == 0 and "ok" in good.stdout


def test_version_flag() -> None:
    proc = subprocess.run([sys.executable, "-m", "para.daemon", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("parad 0.")
