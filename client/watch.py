"""Following parad's event stream: progress, results, errors, metrics.

Events are best effort: a watcher that reads too slowly loses events rather
than slowing the daemon, and one that connects late sees only what follows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zmq

from para.ipc import codec
from para.ipc.endpoints import Endpoints, default_runtime_dir

TOPICS = ("progress", "results", "errors", "metrics")


def watch(runtime_dir: str | Path | None = None, topics: tuple[str, ...] = TOPICS,
          timeout: float | None = None) -> Iterator[tuple[str, Any]]:
    """Yield (topic, message) as parad publishes them; stops after `timeout` seconds of silence."""
    unknown = set(topics) - set(TOPICS)
    if unknown:
        raise ValueError(f"unknown topic(s) {', '.join(sorted(unknown))}; topics: {', '.join(TOPICS)}")
    endpoints = Endpoints(Path(runtime_dir or default_runtime_dir()).absolute())
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.SUB)
    sock.linger = 0
    try:
        for topic in topics:
            sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        sock.connect(endpoints.events)
        while True:
            if not sock.poll(None if timeout is None else int(timeout * 1000)):
                return
            topic, payload = sock.recv_multipart()
            yield topic.decode(), codec.decode(payload)
    finally:
        sock.close()
