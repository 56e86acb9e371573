"""The worker's side of nested tasks: a socket its commands reach parad through.

A command that wants child tasks uses the ordinary client (`paractl`,
`para.client.Client()`), which finds PARA_CHILD_ENDPOINT and PARA_CHILD_TOKEN
in its environment. The endpoint is an abstract Unix socket: no file, and
inside a sandbox without network it exists only in the sandbox's network
namespace. The worker checks the token, then relays every frame up to the
supervisor, tagged with the task it runs; the supervisor's answers come
back as `Relay` messages and go out unchanged.
"""

from __future__ import annotations

import secrets

import zmq

from para.ipc import codec
from para.ipc import messages as m
from para.ipc.endpoints import CHILD_ENDPOINT_ENV, CHILD_TOKEN_ENV
from para.ipc.sockets import make_socket


# Past a client's max_message_size, room for what the client adds around its
# request; parad answers a frame in that room with too_large.
RELAY_SLACK = 64 << 10


class ChildRelay:
    def __init__(self, ctx: zmq.Context, worker_id: str, max_message_size: int) -> None:
        self.worker_id = worker_id
        self.token = secrets.token_hex(16)
        self.endpoint = f"ipc://@para-child-{secrets.token_hex(8)}"
        self.sock = make_socket(ctx, zmq.ROUTER)
        # ZeroMQ drops a client whose frame passes this as its size arrives:
        # neither this worker nor parad ever holds a bigger one.
        self.sock.setsockopt(zmq.MAXMSGSIZE, max_message_size + RELAY_SLACK)
        self.sock.bind(self.endpoint)
        self._trusted: set[bytes] = set()

    def env(self) -> dict[str, str]:
        return {CHILD_ENDPOINT_ENV: self.endpoint, CHILD_TOKEN_ENV: self.token}

    def on_readable(self, task_id: str | None) -> list[m.Relayed]:
        """Read what the command's clients sent; what may go up to the supervisor."""
        up = []
        while True:
            try:
                identity, frame = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return up
            except ValueError:
                continue  # not [identity, frame]
            refusal = self._check(identity, frame, task_id)
            if refusal:
                self.sock.send_multipart([identity, codec.encode(m.ErrorReply(0, m.E_PROTOCOL, refusal))])
            else:
                up.append(m.Relayed(self.worker_id, task_id, identity, frame))

    def _check(self, identity: bytes, frame: bytes, task_id: str | None) -> str | None:
        if identity not in self._trusted:
            try:
                hello = codec.decode(frame)
            except codec.ProtocolError as exc:
                return str(exc)
            if not isinstance(hello, m.Hello) or hello.token != self.token:
                return f"say Hello with the token from ${CHILD_TOKEN_ENV} first"
            self._trusted.add(identity)
        if task_id is None:
            return "no task is running in this worker any more"
        return None

    def deliver(self, relay: m.Relay) -> None:
        try:
            self.sock.send_multipart([relay.identity, relay.frame], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # that client is gone

    def forget_clients(self) -> None:
        """A task ended: its clients' trust ends with it."""
        self._trusted.clear()

    def close(self) -> None:
        self.sock.close(linger=0)
