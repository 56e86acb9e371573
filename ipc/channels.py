"""Both ends of parad's sockets: kinds, options, topics, identities, send and receive.

parad binds every socket in its runtime directory (endpoints.py):

    control   ROUTER  <- each client's DEALER: requests up, replies down (CLIENT_REQUESTS)
    events    XPUB    -> watchers' SUB, by topic (TOPICS)
    command   ROUTER <-> each worker's DEALER, whose identity is the worker id
    event     PULL    <- workers' PUSH: TaskEvent batches
    data      PULL    <- workers' PUSH: Chunk, InputAck and Done batches, bounded (DATA_HWM)
    error     PULL    <- workers' PUSH: ErrorReport
    metrics   PULL    <- workers' PUSH: Heartbeat

Five worker channels, not one, so a flood of output never delays a heartbeat
or a cancel. Each channel names the messages that may cross it, each way:
parad's intake checks what arrives against them. What to send and when is
the daemon's business; only what makes the wire work lives here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import zmq

from para.ipc import codec
from para.ipc import messages as m
from para.ipc.endpoints import WORKER_CHANNELS, Endpoints
from para.ipc.sockets import NOBLOCK, has_message, make_socket, send_frame, send_pair

log = logging.getLogger("para.worker")

EVENTS_MAX_MESSAGE = 64   # bytes: the largest frame a watcher sends (see bind_events)
DATA_HWM = 64   # data frames a worker queues toward parad before its output backs up; parad queues as many per worker
# Streamed stdin (Input/InputAck): bytes of one task's input that may be sent and not yet
# acknowledged as written to its command's stdin. Clients keep to it; parad refuses more.
INPUT_WINDOW = 1 << 20
INPUT_CHUNK = 64 << 10   # bytes a client puts in one Input: a pipe's worth

# Event topics: the wire form (bytes) and the form people type (str).
TOPICS = (b"progress", b"results", b"errors", b"metrics")
TOPIC_NAMES = tuple(t.decode() for t in TOPICS)

# The control socket's identity of a client inside a worker's command (nested
# tasks) starts with this; ZeroMQ's own identities are 5 bytes: no clash.
CHILD_PREFIX = b"\x00child\x00"

# What a client may ask on the control socket.
CLIENT_REQUESTS: tuple[type, ...] = (m.Hello, m.Ping, m.Submit, m.SubmitBatch, m.Scale, m.Cancel, m.Query, m.Shutdown,
                                     m.Input, m.Await, m.Prune)


@dataclass(frozen=True)
class Channel:
    """One worker channel: the socket kind at each end, and what crosses it each way."""
    name: str
    parad_kind: int
    worker_kind: int
    up: tuple[type, ...]            # worker -> parad
    down: tuple[type, ...] = ()     # parad -> worker
    worker_hwm: int | None = None
    parad_hwm: int | None = None    # messages parad's socket queues per worker before the worker's queue fills


COMMAND = Channel("command", zmq.ROUTER, zmq.DEALER, up=(m.Ready, m.Relayed),
                  down=(m.Assign, m.CancelTask, m.Stop, m.Relay, m.PauseOutput, m.ResumeOutput, m.Input))
EVENT = Channel("event", zmq.PULL, zmq.PUSH, up=(m.TaskEvent,))
# Both ends bounded: a worker streaming faster than parad's loop reads would
# otherwise fill libzmq's default 1000-message queue inside parad.
DATA = Channel("data", zmq.PULL, zmq.PUSH, up=(m.Chunk, m.Done, m.InputAck), worker_hwm=DATA_HWM, parad_hwm=DATA_HWM)
ERROR = Channel("error", zmq.PULL, zmq.PUSH, up=(m.ErrorReport,))
METRICS = Channel("metrics", zmq.PULL, zmq.PUSH, up=(m.Heartbeat,))
CHANNELS = {c.name: c for c in (COMMAND, EVENT, DATA, ERROR, METRICS)}
assert tuple(CHANNELS) == WORKER_CHANNELS


# ---- parad's end -----------------------------------------------------------

def bind_control(ctx: zmq.Context, endpoints: Endpoints, max_message_size: int, sndhwm: int) -> zmq.Socket:
    """The clients' socket. ZeroMQ disconnects a peer whose frame passes `max_message_size`;
    each client's queue holds `sndhwm` messages, and a send to a full one (or to a client
    that is gone) raises instead of dropping the message."""
    sock = make_socket(ctx, zmq.ROUTER)
    sock.setsockopt(zmq.MAXMSGSIZE, max_message_size)
    sock.setsockopt(zmq.SNDHWM, sndhwm)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.bind(endpoints.control)
    return sock


def bind_events(ctx: zmq.Context, endpoints: Endpoints) -> zmq.Socket:
    """The watchers' socket; XPUB, so parad reads who subscribes to what.

    Manual: libzmq keeps a subscription for matching only when parad calls
    `keep_subscription` for it, so what a peer subscribes to cannot grow the
    matching trie. libzmq still records every subscription a peer sends until
    that peer goes, hence a small MAXMSGSIZE (a SUB's handshake is 25 bytes,
    its longest subscription 9) and `drop_watchers` for a peer that sends many."""
    sock = make_socket(ctx, zmq.XPUB)
    sock.setsockopt(zmq.XPUB_MANUAL, 1)
    sock.setsockopt(zmq.MAXMSGSIZE, EVENTS_MAX_MESSAGE)
    sock.bind(endpoints.events)
    return sock


def subscription(note: bytes) -> tuple[bool, bytes] | None:
    """An XPUB's notice as (subscribe?, topic); None for anything else a peer sent."""
    if not note or note[0] > 1:
        return None
    return note[0] == 1, note[1:]


def keep_subscription(sock: zmq.Socket, subscribe: bool, topic: bytes) -> None:
    """Apply (or drop) `topic` for the peer whose notice was read last (XPUB_MANUAL)."""
    sock.setsockopt(zmq.SUBSCRIBE if subscribe else zmq.UNSUBSCRIBE, topic)


def drop_watchers(sock: zmq.Socket, endpoints: Endpoints) -> None:
    """Close every connection to the events socket, and all libzmq holds for them.

    Unbinding ends the connections the listener accepted; a SUB reconnects on
    its own and sends its subscriptions again, so watchers lose only the events
    published meanwhile."""
    sock.unbind(endpoints.events)
    sock.bind(endpoints.events)
    os.chmod(endpoints.events_path, 0o600)


def bind_worker_channels(ctx: zmq.Context, endpoints: Endpoints,
                         max_sizes: dict[str, int] | None = None) -> dict[str, zmq.Socket]:
    """parad's socket of each worker channel, by name, bound; ZeroMQ drops a worker
    whose frame on a channel passes its `max_sizes` entry (none: no bound)."""
    socks: dict[str, zmq.Socket] = {}
    try:
        for channel in CHANNELS.values():
            sock = socks[channel.name] = make_socket(ctx, channel.parad_kind)
            if max_sizes and channel.name in max_sizes:
                sock.setsockopt(zmq.MAXMSGSIZE, max_sizes[channel.name])
            if channel.parad_hwm is not None:
                sock.setsockopt(zmq.RCVHWM, channel.parad_hwm)
            if channel.parad_kind == zmq.ROUTER:
                # A send to a worker that is gone raises instead of vanishing,
                # so what was meant for it can go elsewhere.
                sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            sock.bind(endpoints.worker(channel.name))
    except BaseException:
        for sock in socks.values():
            sock.close()
        raise
    return socks


def send_to_worker(sock: zmq.Socket, worker_id: str, messages: Iterable[Any]) -> bool:
    """Send `messages` to one worker on the command channel, as one frame, never blocking.

    False if it cannot be routed: the worker is gone, or not connected yet.
    """
    frame = codec.encode_batch([codec.encode(msg, env_ext=True) for msg in messages])
    try:
        send_pair(sock, worker_id.encode(), frame)
        return True
    except zmq.ZMQError:
        return False


def publish(sock: zmq.Socket, topic: bytes, message: Any) -> bool:
    """Publish an event on `topic`, never blocking; False if a slow watcher's queue is full."""
    try:
        send_pair(sock, topic, codec.encode(message))
        return True
    except zmq.Again:
        return False


# ---- a worker's end --------------------------------------------------------

class WorkerEnd:
    """A worker's side of the five channels, connected to parad's."""

    def __init__(self, ctx: zmq.Context, endpoints: Endpoints, worker_id: str) -> None:
        self.sockets: dict[str, zmq.Socket] = {}
        for channel in CHANNELS.values():
            identity = worker_id.encode() if channel.worker_kind == zmq.DEALER else None
            sock = self.sockets[channel.name] = make_socket(ctx, channel.worker_kind, hwm=channel.worker_hwm,
                                                            identity=identity)
            sock.connect(endpoints.worker(channel.name))
        self.command = self.sockets["command"]
        self.refused = 0   # command frames that did not decode

    def send(self, channel: str, message: Any) -> None:
        """Send one message up `channel`."""
        send_frame(self.sockets[channel], codec.encode(message))

    def send_encoded(self, channel: str, frames: list[bytes], block: bool = True) -> bool:
        """Send already encoded messages up `channel` as one frame; False if it is full (block=False)."""
        try:
            send_frame(self.sockets[channel], codec.encode_batch(frames), 0 if block else NOBLOCK)
            return True
        except zmq.Again:
            return False

    def commands(self) -> Iterator[Any]:
        """Every command parad has sent that is waiting, decoded, in order.

        A frame that does not decode is logged, counted in `refused` and
        skipped: one bad frame must not end a worker and the tasks it holds."""
        while True:
            try:
                frame = self.command.recv(NOBLOCK)
            except zmq.Again:
                return
            try:
                parts = codec.split(frame)
            except codec.ProtocolError as exc:
                self._refuse(exc)
                continue
            for part in parts:
                try:
                    yield codec.decode(part)
                except codec.ProtocolError as exc:
                    self._refuse(exc)
            # Asking costs less than the zmq.Again a further recv would raise, and most wakes carry one frame.
            if not has_message(self.command):
                return

    def _refuse(self, exc: codec.ProtocolError) -> None:
        self.refused += 1
        if self.refused & (self.refused - 1) == 0:   # 1st, 2nd, 4th...: a flood does not flood the log
            log.warning("ignored %d bad command frame(s) from parad, the last: %s", self.refused, exc)

    def close(self, linger: int = 1000) -> None:
        for sock in self.sockets.values():
            sock.close(linger=linger)


# ---- a watcher's end -------------------------------------------------------

def subscribe(ctx: zmq.Context, endpoints: Endpoints, topics: Iterable[str]) -> zmq.Socket:
    """A socket that receives parad's events of `topics` (names from TOPIC_NAMES)."""
    sock = make_socket(ctx, zmq.SUB)
    try:
        for topic in topics:
            sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        sock.connect(endpoints.events)
    except BaseException:
        sock.close()
        raise
    return sock


def receive_event(sock: zmq.Socket) -> tuple[str, Any]:
    """The next event on a subscribed socket: (topic name, message)."""
    topic, payload = sock.recv_multipart()
    return topic.decode(), codec.decode(payload, newer_ok=True)
