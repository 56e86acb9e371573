"""Following parad's event stream: progress, results, errors, metrics.

Events are best effort: a watcher that reads too slowly loses events rather
than slowing the daemon, and one that connects late sees only what follows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zmq

from para.ipc import channels
from para.ipc.endpoints import Endpoints, default_runtime_dir

TOPICS = channels.TOPIC_NAMES


def watch(runtime_dir: str | Path | None = None, topics: tuple[str, ...] = TOPICS,
          timeout: float | None = None) -> Iterator[tuple[str, Any]]:
    """Yield (topic, message) as parad publishes them; stops after `timeout` seconds of silence."""
    unknown = set(topics) - set(TOPICS)
    if unknown:
        raise ValueError(f"unknown topic(s) {', '.join(sorted(unknown))}; topics: {', '.join(TOPICS)}")
    endpoints = Endpoints(Path(runtime_dir or default_runtime_dir()).absolute())
    sock = channels.subscribe(zmq.Context.instance(), endpoints, topics)
    try:
        while True:
            if not sock.poll(None if timeout is None else int(timeout * 1000)):
                return
            yield channels.receive_event(sock)
    finally:
        sock.close()
