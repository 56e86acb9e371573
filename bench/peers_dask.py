"""Dask as a peer (bench/frameworks.py runs this as a child): a distributed LocalCluster
of N single-threaded worker processes.

    python bench/peers_dask.py N TMP

Tasks are `subprocess.run(["bash", "-c", "true"])` through `Client.map`, gathered;
the round trip is `client.submit(noop, pure=False).result()`, one call at a time.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from frameworks import serve


def command(_i: int) -> int:
    return subprocess.run(["bash", "-c", "true"]).returncode


def noop() -> None:
    return None


def start(workers: int, tmp: Path) -> tuple[str, Callable[[int], None], Callable[[], None], Callable[[], None]]:
    import distributed
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           local_directory=str(tmp / "dask"))
    client = Client(cluster)
    offset = [0]   # distinct keys per round: Dask would otherwise answer a repeated map from memory

    def run_tasks(n: int) -> None:
        futures = client.map(command, range(offset[0], offset[0] + n))
        offset[0] += n
        codes = client.gather(futures)
        if any(codes):
            raise RuntimeError(f"{sum(1 for c in codes if c)} of {n} bash -c true exited non-zero")

    def shutdown() -> None:
        client.close()
        cluster.close()

    run_tasks(4 * workers)
    client.submit(noop, pure=False).result()
    return distributed.__version__, run_tasks, lambda: client.submit(noop, pure=False).result(), shutdown


if __name__ == "__main__":
    serve(start)
