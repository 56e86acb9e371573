"""The event stream for watchers: an XPUB socket that knows who listens.

Encoding an event for nobody would cost the hot path for nothing, so events
are built and sent only when some watcher subscribed to their topic.
Topics (ipc/channels.py): progress, results, errors, metrics. A watcher
subscribes to whole topic names; anything else a peer subscribes to is never
applied, only counted, and a peer that sends many makes parad drop every
watcher connection (they reconnect), so subscriptions cannot grow parad.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import zmq

from para.ipc import channels
from para.ipc.channels import TOPICS
from para.ipc.endpoints import Endpoints

log = logging.getLogger("para.events")

# Subscriptions to other than a topic's name tolerated before every watcher
# connection is dropped: libzmq holds each (up to EVENTS_MAX_MESSAGE bytes,
# a few KiB in its trie) until its peer goes.
MAX_FOREIGN = 256


class EventPublisher:
    def __init__(self, sock: zmq.Socket, endpoints: Endpoints) -> None:
        self.sock = sock
        self.endpoints = endpoints
        self._subscriptions: dict[bytes, int] = dict.fromkeys(TOPICS, 0)
        self._foreign = 0    # since the connections were last dropped
        self.refused = 0     # subscriptions to other than a topic's name, in all
        self.resets = 0      # times every watcher connection was dropped for them

    def on_readable(self) -> None:
        """Read (un)subscription notices from watchers."""
        while True:
            try:
                note = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            parsed = channels.subscription(note)
            if parsed is None:
                continue   # a message upstream: watchers send none
            subscribe, topic = parsed
            count = self._subscriptions.get(topic)
            if count is not None:
                channels.keep_subscription(self.sock, subscribe, topic)
                self._subscriptions[topic] = max(0, count + (1 if subscribe else -1))
            elif subscribe:
                self._refuse(topic)

    def _refuse(self, topic: bytes) -> None:
        self.refused += 1
        self._foreign += 1
        if self._foreign >= MAX_FOREIGN:
            self._foreign = 0
            self.resets += 1
            if self.resets & (self.resets - 1) == 0:   # 1st, 2nd, 4th...: a flood does not flood the log
                log.warning("dropped every events connection (%d times): %d subscriptions to no topic (the last %r); "
                            "watchers reconnect; subscribe to %s only",
                            self.resets, MAX_FOREIGN, topic[:16], ", ".join(t.decode() for t in TOPICS))
            channels.drop_watchers(self.sock, self.endpoints)

    @property
    def watchers(self) -> int:
        """Subscriptions open now (one watcher of every topic counts once per topic)."""
        return sum(self._subscriptions.values())

    def wanted(self, topic: bytes) -> bool:
        return self._subscriptions.get(topic, 0) > 0

    def publish(self, topic: bytes, make: Callable[[], Any]) -> bool:
        """Publish the event `make` builds if anybody watches `topic`; whether it was sent to the socket."""
        if not self.wanted(topic):
            return False
        channels.publish(self.sock, topic, make())  # a slow watcher loses events; it never slows the daemon
        return True
