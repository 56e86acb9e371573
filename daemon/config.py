"""parad's configuration: pydantic models that hold every default and description.

`configs/parad.yaml` is generated from these models (`parad --print-default-config`)
and a test keeps the two identical, so there is one source of truth. A config
file is merged over these defaults (`config_merge.py`) before it is validated.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ByteSize, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from para.daemon.config_merge import OverlayError, overlay
from para.daemon.tools.base import Tool
from para.daemon.tools.registry import ToolLoadError, UnknownTool, resolve


class ConfigError(Exception):
    """A config file that cannot be used; the message names file, key and reason."""


class WorkspacesSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    owned: bool | None = Field(None, description="any folder parad's user owns may be a workspace (not /, the home folder itself or system folders); null: yes, but no for `parad --system`")
    roots: list[str] = Field(default_factory=list, description="folders under which any folder may be a workspace, whoever owns it")


class JournalSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    durability: str = Field("batched", pattern="^(batched|sync|off)$", description="batched: committed once per loop turn before anything is acknowledged, synced to disk every sync_interval; sync: synced before anything is acknowledged; off: no journal, nothing kept across restarts (README: Durability)")
    commit_interval: float = Field(0.005, ge=0, le=1, description="while parad is busy, the longest a change waits for its commit (a busy turn's changes are grouped; an idle parad commits at once)")
    sync_interval: float = Field(0.05, gt=0, le=60, description="batched: seconds between syncs of the journal to disk")
    retain: float = Field(7 * 86400.0, ge=0, description="seconds finished tasks and their output are kept in the journal, by when they ended")
    max_bytes: ByteSize = Field(1 << 30, ge=1 << 20, description="and at most this many bytes of them (rows and output files); past either limit the oldest are dropped")
    inline_bytes: ByteSize = Field(64 << 10, ge=0, description="results up to this size are stored in the journal itself; larger ones in files beside it (results/)")


class DaemonSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    heartbeat_interval: float = Field(5.0, ge=0.05, description="seconds between worker heartbeats")
    failure_detection_timeout: float = Field(15.0, ge=0.1, description="seconds of heartbeat silence before a worker is killed and replaced")
    shutdown_grace: float = Field(10.0, ge=0, description="seconds running tasks get to finish on SIGTERM before worker trees are killed")
    max_message_size: int = Field(8 << 20, ge=1024, description="largest client request accepted, bytes; put bigger inputs in a file")
    nested_max_depth: int = Field(3, ge=0, le=10, description="how deep tasks may submit child tasks from inside their commands (0: not at all)")
    idempotency_window: float = Field(600.0, ge=0, description="seconds a task's idempotency_key is remembered: a repeat gets the first result")
    journal: JournalSection = Field(default_factory=JournalSection, description="the task journal in the state directory: what parad keeps across crashes and restarts")
    finished_task_retention: int = Field(10000, ge=0, description="with journal.durability off: finished results kept in memory for queries by id")
    finished_task_bytes: ByteSize = Field(64 << 20, ge=0, description="and at most this many bytes of them (as encoded); past either, the oldest are dropped")
    client_output_budget: ByteSize = Field(16 << 20, ge=1 << 20, description="bytes of results and output parad holds for a client that reads slower than its tasks produce; past it the client's streaming commands pause and its queued tasks wait, until it has read half of it")
    output_budget_total: ByteSize = Field(128 << 20, ge=1 << 20, description="bytes of results and output parad holds for all clients together; past it every client holding more than its share (this over the number of clients held for, at most client_output_budget) is over budget, until the total is down to half")
    metrics_listen: str | None = Field(None, pattern=r"^[^:]*:\d+$", description="serve Prometheus /metrics on HOST:PORT (e.g. 127.0.0.1:9464); null: off (`paractl metrics` still works)")
    scale_cpu_percent: float = Field(90.0, gt=0, le=100, description="pools do not grow while host CPU use is above this percentage (100: never hold back)")
    scale_memory_percent: float = Field(85.0, gt=0, le=100, description="pools do not grow while host memory use is above this percentage")
    log_level: str = Field("info", pattern="^(debug|info|warning|error)$", description="debug, info, warning or error")
    workspaces: WorkspacesSection = Field(default_factory=WorkspacesSection, description="which folders tasks may work in (their writable root and default cwd)")

    @model_validator(mode="after")
    def _check(self) -> "DaemonSection":
        # One late heartbeat must not be taken for a hang.
        if self.failure_detection_timeout < 2 * self.heartbeat_interval:
            raise ValueError(
                f"failure_detection_timeout ({self.failure_detection_timeout:g}s) must be at least twice "
                f"heartbeat_interval ({self.heartbeat_interval:g}s), or every healthy worker is killed as hung; "
                f"raise failure_detection_timeout or lower heartbeat_interval")
        if self.output_budget_total < self.client_output_budget:
            raise ValueError(
                f"output_budget_total ({self.output_budget_total} bytes) is below client_output_budget "
                f"({self.client_output_budget} bytes): one client could never reach its own budget; raise output_budget_total")
        return self


class PoolSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tool: str | None = Field(None, description="tool the pool runs: a built-in tool, an installed plugin tool, or a module path package.module:ClassName (README: Plugin tools); default: the pool's name")
    min_workers: int = Field(1, ge=0, description="workers kept warm")
    max_workers: int = Field(4, ge=1, description="workers at most, grown toward queue depth")
    # A worker holds its credit's tasks in memory, and past 1024 no pool runs faster.
    credit: int | None = Field(None, ge=1, le=1024, description="tasks a worker may hold at once (at most 1024); a worker of a tool that runs commands runs them all at once; default: the tool's (fetch 128, search 64, bash 32, echo 32, grep, glob and read 8)")
    max_queue: int = Field(10000, ge=1, description="queued tasks at most; past it submissions fail with queue_full")
    max_queue_bytes: ByteSize = Field(64 << 20, ge=1 << 20, description="and at most this many bytes of them, as they came on the wire (batch tasks waiting for dependencies count too); past it submissions fail with queue_full")
    default_timeout: float | None = Field(None, gt=0, description="seconds, for tasks that name none (null: no limit)")
    max_timeout: float | None = Field(None, gt=0, description="a task may not ask for more seconds")
    idle_timeout: float = Field(60.0, gt=0, description="seconds a worker above min_workers may sit idle before it is stopped")
    respawn_backoff: float = Field(0.1, gt=0, description="first delay before replacing a crashed worker, seconds; doubles per crash")
    respawn_backoff_max: float = Field(30.0, gt=0, description="longest delay between respawns, seconds")
    crash_limit: int = Field(5, ge=1, description="crashes in a row after which the pool is marked failed (circuit open)")
    retry_backoff: float = Field(0.2, ge=0, description="seconds before a task's first retry; doubles per attempt, times a jitter in [0.5, 1.5)")
    retry_backoff_max: float = Field(30.0, ge=0, description="longest wait before a retry, seconds")
    poison_after: int = Field(3, ge=1, description="a task whose workers died this many times in a row fails as a poison task")
    recycle_after: int | None = Field(None, ge=1, description="replace a worker after it completed this many tasks (null: never)")
    recycle_rss: ByteSize | None = Field(None, gt=0, description="replace a worker whose resident memory passes this many bytes (null: never)")
    options: dict[str, Any] = Field(default_factory=dict, description="the tool's own options")

    @model_validator(mode="after")
    def _check(self) -> "PoolSection":
        if self.min_workers > self.max_workers:
            raise ValueError(f"min_workers ({self.min_workers}) exceeds max_workers ({self.max_workers}); "
                             f"raise max_workers or lower min_workers")
        if self.default_timeout and self.max_timeout and self.default_timeout > self.max_timeout:
            raise ValueError(f"default_timeout ({self.default_timeout:g}s) exceeds max_timeout ({self.max_timeout:g}s); "
                             f"lower default_timeout or raise max_timeout")
        return self


def builtin_pools() -> list[str]:
    """The names of the pools parad runs unless a config file removes them."""
    return list(_default_pools())


def _default_pools() -> dict[str, PoolSection]:
    return {
        "echo": PoolSection(min_workers=1, max_workers=2),
        "bash": PoolSection(min_workers=2, max_workers=8, default_timeout=600),
        "read": PoolSection(min_workers=1, max_workers=4, default_timeout=60),
        "glob": PoolSection(min_workers=1, max_workers=4, default_timeout=120),
        "grep": PoolSection(min_workers=1, max_workers=4, default_timeout=300),
        # Sized by the tools' pool_defaults: one worker each, holding the pool's cache (README: Web tools).
        "fetch": PoolSection(),
        "search": PoolSection(),
    }


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    daemon: DaemonSection = Field(default_factory=DaemonSection)
    pools: dict[str, PoolSection] = Field(default_factory=_default_pools)

    # Each pool's tool class, and the pools whose plugin tool cannot be loaded (why, in one line).
    _tools: dict[str, type[Tool]] = PrivateAttr(default_factory=dict)
    _unavailable: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _check_pools(self) -> "Config":
        for name, pool in self.pools.items():
            pool.tool = pool.tool or name
            try:
                tool = resolve(pool.tool)
            except UnknownTool as exc:
                raise ValueError(f"pools.{name}: {exc}") from None
            except ToolLoadError as exc:
                # A broken plugin fails its own pool, not parad: the other pools serve on.
                self._unavailable[name] = str(exc)
                continue
            self._tools[name] = tool
            _apply_tool_defaults(name, pool, tool)
            try:
                tool.Options.model_validate(pool.options)
            except ValidationError as exc:
                raise ValueError(f"pools.{name}.options: {_first_error(exc)}") from None
            if pool.max_queue_bytes < self.daemon.max_message_size:
                raise ValueError(f"pools.{name}.max_queue_bytes ({pool.max_queue_bytes} bytes) is below daemon.max_message_size "
                                 f"({self.daemon.max_message_size} bytes): the largest request could never be queued; raise it")
        return self

    def tool_class(self, name: str) -> type[Tool]:
        """The tool pool `name` runs; for a pool whose tool cannot be loaded, a stand-in that runs nothing."""
        return self._tools.get(name) or _unloadable(self.pools[name].tool or name)

    def unavailable(self, name: str) -> str | None:
        """Why pool `name`'s tool cannot be loaded (what to fix), or None."""
        return self._unavailable.get(name)

    def pool_options(self, name: str) -> BaseModel:
        if name in self._unavailable:
            return _AnyOptions.model_validate(self.pools[name].options)
        return self._tools[name].Options.model_validate(self.pools[name].options)


class _AnyOptions(BaseModel):
    """The options of a pool whose tool could not be loaded: kept as written, checked by nothing."""
    model_config = ConfigDict(extra="allow")


def _unloadable(ref: str) -> type[Tool]:
    return type("Unloadable", (Tool,), {"name": ref, "Args": _AnyOptions, "description": f"(not loaded: {ref})"})


def _apply_tool_defaults(name: str, pool: PoolSection, tool: type[Tool]) -> None:
    """A plugin tool's own pool defaults (`Tool.pool_defaults`) for the settings the config leaves out."""
    unset = {k: v for k, v in tool.pool_defaults.items() if k not in pool.model_fields_set}
    if not unset:
        return
    try:
        checked = PoolSection.model_validate({**pool.model_dump(include=pool.model_fields_set), **unset})
    except ValidationError as exc:
        raise ValueError(f"pools.{name}: with the tool's pool_defaults {unset}: {_first_error(exc)}") from None
    for key in unset:
        setattr(pool, key, getattr(checked, key))


def _first_error(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}"
        + (f" (got {e['input']!r})" if e["type"] != "missing" and not isinstance(e["input"], dict) else "")
        for e in exc.errors()
    )


def default_config_text() -> str:
    return resources.files("para.configs").joinpath("parad.yaml").read_text()


def load_config(path: Path | None) -> Config:
    """Read a config file (None: the packaged default), merge it over the built-in defaults and validate it."""
    where = str(path) if path else "packaged parad.yaml"
    try:
        text = path.read_text() if path else default_config_text()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: top level must be a mapping with 'daemon' and 'pools'")
    try:
        return Config.model_validate(overlay(Config().model_dump(), data))
    except OverlayError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_first_error(exc)}") from None
