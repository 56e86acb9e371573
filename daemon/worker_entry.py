"""A worker process's start: in a child the fork server forked, or exec'd inside a sandbox.

It hardens the process, then runs the worker its tool needs: a `Worker` (worker.py) for
commands and sync tools, an `AsyncWorker` (async_worker.py) for an async tool.
"""

from __future__ import annotations

if __name__ == "__main__":  # exec'd in a sandbox: first, no module from the caller's folder (safe_path)
    from para.daemon.safe_path import drop_caller_paths
    drop_caller_paths()

import os

from para.daemon import collector
from para.daemon.async_worker import AsyncWorker
from para.daemon.tools.registry import resolve
from para.daemon.worker import Worker
from para.ipc import codec
from para.ipc import messages as m
from para.sandbox import prctl


def worker_main(worker_id: str, tool: str, settings: m.WorkerSettings) -> None:
    """Entry point in a freshly forked child, or in a sandbox (see forkserver)."""
    # Nothing a command runs gains privileges, and none can reach into the worker.
    prctl.set_no_new_privs()
    prctl.set_not_dumpable()
    # Orphans of a command (setsid, double fork) come back to us, not to the
    # sandbox's init, so a kill of "everything below the worker" gets them.
    prctl.set_child_subreaper()
    # Before zmq starts its threads (the sets are per thread): nothing a worker
    # execs keeps a capability bubblewrap's --cap-add made ambient or inheritable.
    prctl.clear_ambient_capabilities()
    prctl.clear_inheritable_capabilities()
    kind = AsyncWorker if resolve(tool).is_async else Worker
    worker = kind(worker_id, tool, settings)
    collector.serve_long()
    try:
        worker.run()
    finally:
        worker.close()


if __name__ == "__main__":
    # Exec'd inside a sandbox: the fork server left our Spawn in descriptor argv[1].
    import sys
    with os.fdopen(int(sys.argv[1]), "rb") as spawn_file:
        request = codec.decode(spawn_file.read())
    # The descriptor of parad's runtime directory stays ours: no command may inherit it.
    os.set_inheritable(request.settings.runtime_fd, False)
    worker_main(request.worker, request.tool, request.settings)
