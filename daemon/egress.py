"""parad's handle on the egress proxy (web/egress_proxy.py): started when some pool's network is an allow-list.

Like the fork server, it is a child of parad, started before any ZeroMQ
state and stopped after the sockets close: parad closes its stdin, the proxy
removes its sockets and exits, and parad reaps it (killing it after a grace).
If parad dies, even by SIGKILL, the proxy sees its stdin close the same way.
Its sockets live in `<runtime dir>/egress/`, one per distinct pool policy,
named by sandbox/policy.proxy_name so that a worker finds its pool's from
its options alone.
"""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from para.daemon.isolation import IsolationError, policy_of
from para.daemon.safe_path import safe_pythonpath
from para.ipc.endpoints import Endpoints
from para.sandbox.policy import proxy_name

log = logging.getLogger("parad")

READY_TIMEOUT = 15.0


class EgressError(IsolationError):
    """The egress proxy did not start: the pools' network policy cannot be met."""


def proxy_config(pool_options: dict[str, BaseModel], endpoints: Endpoints) -> dict[str, dict[str, Any]]:
    """Socket path -> proxy policy, for every pool whose network is an allow-list (pools may share one)."""
    config = {}
    for options in pool_options.values():
        policy, read_only = policy_of(options)
        web = None if policy is None or read_only else policy.web_config()
        if web is not None:
            config[str(endpoints.egress_path(proxy_name(web)))] = web.model_dump(mode="json")
    return config


class EgressProxy:
    """The running proxy, or nothing at all when no pool needs one."""

    def __init__(self, pool_options: dict[str, BaseModel], endpoints: Endpoints) -> None:
        self.endpoints = endpoints
        self.config = proxy_config(pool_options, endpoints)
        self.proc: subprocess.Popen | None = None
        self._clear()
        if self.config:
            self._start()

    def _start(self) -> None:
        self.endpoints.egress_dir.mkdir(mode=0o700, exist_ok=True)
        # In /, with -P and PYTHONPATH filtered: nothing of the caller's folder (parad's cwd) is imported.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        pythonpath = safe_pythonpath(os.environ.get("PYTHONPATH"))
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        self.proc = subprocess.Popen([sys.executable, "-P", "-m", "para.web.egress_proxy"], cwd="/", env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.proc.stdin.write(json.dumps(self.config).encode() + b"\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], READY_TIMEOUT)
        line = self.proc.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            self.close()
            raise EgressError(f"the egress proxy did not start (see the log above); pools whose sandbox network "
                              f"is an allow-list need it: {len(self.config)} socket(s) in {self.endpoints.egress_dir}")
        log.info("egress proxy: pid %d, %d pool policy(ies) with an allow-list", self.proc.pid, len(self.config))

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def close(self) -> None:
        """Close its stdin (it removes its sockets and exits), reap it; remove what it left."""
        if self.proc is not None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc.stdout.close()
            self.proc = None
        self._clear()

    def _clear(self) -> None:
        """Sockets a proxy that died (or a parad killed before) left behind, and their directory."""
        folder = self.endpoints.egress_dir
        if not folder.is_dir():
            return
        for sock in folder.glob("*.sock"):
            sock.unlink(missing_ok=True)
        try:
            folder.rmdir()
        except OSError:
            pass
