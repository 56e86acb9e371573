"""Where para's sockets live: paths inside one runtime directory.

The directory's mode (0700) is the access control, and path-based ipc://
endpoints keep working from inside a worker's network namespace.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SYSTEM_RUNTIME_DIR = Path("/run/para")
WORKER_CHANNELS = ("command", "event", "data", "error", "metrics")


def default_runtime_dir() -> Path:
    """$XDG_RUNTIME_DIR/para, else a per-user directory under /tmp."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return Path(xdg) / "para"
    return Path(f"/tmp/para-{os.getuid()}")


@dataclass(frozen=True)
class Endpoints:
    """All socket paths of one daemon, derived from its runtime directory."""
    runtime_dir: Path

    @property
    def control_path(self) -> Path:
        return self.runtime_dir / "control.sock"

    @property
    def events_path(self) -> Path:
        return self.runtime_dir / "events.sock"

    @property
    def lock_path(self) -> Path:
        return self.runtime_dir / "parad.lock"

    @property
    def worker_dir(self) -> Path:
        return self.runtime_dir / "workers"

    @property
    def egress_dir(self) -> Path:
        return self.runtime_dir / "egress"

    def egress_path(self, name: str) -> Path:
        """The egress proxy's socket for the pools whose policy is named `name` (sandbox/policy.proxy_name)."""
        return self.egress_dir / f"{name}.sock"

    def worker_path(self, channel: str) -> Path:
        if channel not in WORKER_CHANNELS:
            raise ValueError(f"unknown worker channel {channel!r}")
        return self.worker_dir / f"{channel}.sock"

    @property
    def control(self) -> str:
        return f"ipc://{self.control_path}"

    @property
    def events(self) -> str:
        return f"ipc://{self.events_path}"

    def worker(self, channel: str) -> str:
        return f"ipc://{self.worker_path(channel)}"

    def socket_paths(self) -> list[Path]:
        return [self.control_path, self.events_path] + [
            self.worker_path(c) for c in WORKER_CHANNELS
        ]


# Set by a worker in its commands' environment: where a client inside the
# command reaches parad (nested tasks) and the token it must show.
CHILD_ENDPOINT_ENV, CHILD_TOKEN_ENV = "PARA_CHILD_ENDPOINT", "PARA_CHILD_TOKEN"
