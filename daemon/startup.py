"""Bringing parad up and down, in this order, undone in reverse:

    make parad not dumpable; lock the runtime dir; probe the host and plan
    each pool's isolation; start the fork server (before any ZeroMQ state:
    it forks the workers); start the egress proxy, if a pool's network is an
    allow-list (daemon/egress.py); open the journal (after the fork server, which
    must not hold it); bind the sockets; serve (supervisor.py, which first
    recovers the journal's unfinished tasks).
    Then close the sockets, close the journal (its last commit), stop the
    egress proxy, stop the fork server (it kills what is left of its workers), release the runtime dir.
"""

from __future__ import annotations

import logging
from pathlib import Path

from para.daemon import isolation
from para.daemon.config import Config
from para.daemon.core import workspace_policy
from para.daemon.egress import EgressProxy
from para.daemon.forkserver import ForkServer
from para.daemon.journal.opening import open_store
from para.daemon.journal.store import Journal
from para.daemon.listeners import Listeners
from para.daemon.runtime_dir import RuntimeDir
from para.daemon.supervisor import Supervisor
from para.daemon.tools.registry import BUILTIN, shadowed
from para.daemon.tasks import TaskStore
from para.ipc.endpoints import Endpoints
from para.sandbox import prctl, probe

log = logging.getLogger("parad")


def plugin_tools(config: Config) -> list[str]:
    """The plugin tools parad's pools run, for the fork server to import; each that cannot be loaded is logged."""
    for problem in shadowed():
        log.error("%s", problem)
    refs = []
    for name, pool in config.pools.items():
        problem = config.unavailable(name)
        if problem is not None:
            log.error("pool %s is failed: %s", name, problem)
        elif pool.tool not in BUILTIN and pool.tool not in refs:
            refs.append(pool.tool)
    return refs


def run(config: Config, endpoints: Endpoints, state_dir: Path, config_source: str, system: bool = False) -> int:
    """Serve until stopped; 0 when parad stopped cleanly. Raises RuntimeDirError, IsolationError, PermissionError,
    JournalError."""
    # Commands run as parad's own user where there is no sandbox: they must
    # not read parad's memory, environment or descriptors through /proc.
    prctl.set_not_dumpable()
    runtime = RuntimeDir(endpoints)
    runtime.acquire()
    try:
        host = probe.probe()
        hide = [str(endpoints.runtime_dir), str(state_dir)]
        pool_options = {name: config.pool_options(name) for name in config.pools}
        plans = isolation.plan(pool_options, host, hide)
        isolation.log_plans(plans)
        forkserver = ForkServer(plugin_tools(config))
        try:
            proxy = EgressProxy(pool_options, endpoints)
            try:
                store = open_store(config, state_dir)
                try:
                    _serve(config, endpoints, state_dir, config_source, host, plans, forkserver, store, system)
                finally:
                    if isinstance(store, Journal):
                        store.close()
            finally:
                proxy.close()
        finally:
            forkserver.close()
    finally:
        runtime.release()
    log.info("parad stopped")
    return 0


def _serve(config: Config, endpoints: Endpoints, state_dir: Path, config_source: str, host: probe.HostSupport,
           plans: dict, forkserver: ForkServer, store: TaskStore, system: bool) -> None:
    listeners = Listeners.bind(config, endpoints)
    try:
        Supervisor(config, endpoints, state_dir, config_source, host, plans, forkserver, listeners,
                   workspace_policy(config, system), store).serve()
    finally:
        listeners.close()
