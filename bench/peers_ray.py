"""Ray as a peer (bench/frameworks.py runs this as a child): a local cluster of N CPUs.

    python bench/peers_ray.py N TMP

Tasks are `subprocess.run(["bash", "-c", "true"])` in a remote function
(num_cpus=1 each, so N run at once), submitted all at once and gathered; the
round trip is `ray.get(noop.remote())`, one call at a time.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from frameworks import serve


def start(workers: int, tmp: Path) -> tuple[str, Callable[[int], None], Callable[[], None], Callable[[], None]]:
    import ray

    # Its session dir (logs, sockets) under the bench's temp dir, removed with it.
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False,
             _temp_dir=str(tmp / "ray"))

    @ray.remote(num_cpus=1)
    def command() -> int:
        return subprocess.run(["bash", "-c", "true"]).returncode

    @ray.remote(num_cpus=1)
    def noop() -> None:
        return None

    def run_tasks(n: int) -> None:
        codes = ray.get([command.remote() for _ in range(n)])
        if any(codes):
            raise RuntimeError(f"{sum(1 for c in codes if c)} of {n} bash -c true exited non-zero")

    run_tasks(4 * workers)   # warm: the workers exist and have imported what the task needs
    ray.get(noop.remote())
    return ray.__version__, run_tasks, lambda: ray.get(noop.remote()), ray.shutdown


if __name__ == "__main__":
    serve(start)
