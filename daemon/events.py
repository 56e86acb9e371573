"""The event stream for watchers: an XPUB socket that knows who listens.

Encoding an event for nobody would cost the hot path for nothing, so events
are built and sent only when some subscription matches their topic.
Topics (ipc/channels.py): progress, results, errors, metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import zmq

from para.ipc import channels
from para.ipc.channels import TOPICS  # noqa: F401  (the topics `publish` takes)


class EventPublisher:
    def __init__(self, sock: zmq.Socket) -> None:
        self.sock = sock
        self._subscriptions: dict[bytes, int] = {}

    def on_readable(self) -> None:
        """Read (un)subscription notices from watchers."""
        while True:
            try:
                note = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if not note:
                continue
            prefix, delta = note[1:], (1 if note[0] == 1 else -1)
            count = self._subscriptions.get(prefix, 0) + delta
            if count > 0:
                self._subscriptions[prefix] = count
            else:
                self._subscriptions.pop(prefix, None)

    @property
    def watchers(self) -> int:
        """Subscriptions open now (one watcher of every topic counts once per topic)."""
        return sum(self._subscriptions.values())

    def wanted(self, topic: bytes) -> bool:
        return any(topic.startswith(prefix) for prefix in self._subscriptions)

    def publish(self, topic: bytes, make: Callable[[], Any]) -> None:
        if self._subscriptions and self.wanted(topic):
            channels.publish(self.sock, topic, make())  # a slow watcher loses events; it never slows the daemon
