"""The worker's side of nested tasks: a socket its commands reach parad through.

A command that wants child tasks uses the ordinary client (`paractl`,
`para.client.Client()`), which finds PARA_CHILD_ENDPOINT and PARA_CHILD_TOKEN
in its environment. The endpoint is an abstract Unix socket, one per worker:
no file, and inside a sandbox without network it exists only in the
sandbox's network namespace. Each task gets a token of its own, so the
worker knows which of the commands it drives a client speaks for: it checks
the token, then relays every frame up to the supervisor, tagged with that
task; the supervisor's answers come back as `Relay` messages and go out
unchanged.
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
        self.endpoint = f"ipc://@para-child-{secrets.token_hex(8)}"
        self.sock = make_socket(ctx, zmq.ROUTER)
        # ZeroMQ drops a client whose frame passes this as its size arrives:
        # neither this worker nor parad ever holds a bigger one.
        self.sock.setsockopt(zmq.MAXMSGSIZE, max_message_size + RELAY_SLACK)
        self.sock.bind(self.endpoint)
        self._tokens: dict[str, str] = {}      # token -> the task whose commands hold it
        self._trusted: dict[bytes, str] = {}   # client identity -> the task it speaks for
        # task -> its tokens and trusted identities: a task's end forgets them without a walk over every task's.
        self._held: dict[str, list[str | bytes]] = {}

    def env(self, task_id: str) -> dict[str, str]:
        """What the command of `task_id` finds in its environment: where to connect, and its token."""
        token = secrets.token_hex(16)
        self._tokens[token] = task_id
        self._held.setdefault(task_id, []).append(token)
        return {CHILD_ENDPOINT_ENV: self.endpoint, CHILD_TOKEN_ENV: token}

    def on_readable(self) -> list[m.Relayed]:
        """Read what the command's clients sent; what may go up to the supervisor."""
        up = []
        while True:
            try:
                identity, frame = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return up
            except ValueError:
                continue  # not [identity, frame]
            task_id, refusal = self._check(identity, frame)
            if refusal:
                self.sock.send_multipart([identity, codec.encode(m.ErrorReply(0, m.E_PROTOCOL, refusal))])
            else:
                up.append(m.Relayed(self.worker_id, task_id, identity, frame))

    def _check(self, identity: bytes, frame: bytes) -> tuple[str | None, str | None]:
        """(the task this client speaks for, None), or (None, why its frame goes no further)."""
        task_id = self._trusted.get(identity)
        if task_id is not None:
            return task_id, None
        try:
            hello = codec.decode(frame)
        except codec.ProtocolError as exc:
            return None, str(exc)
        if not isinstance(hello, m.Hello) or not isinstance(hello.token, str):
            return None, f"say Hello with the token from ${CHILD_TOKEN_ENV} first"
        task_id = self._tokens.get(hello.token)
        if task_id is None:
            return None, f"no task of this worker holds that token (its task ended, or it is not from ${CHILD_TOKEN_ENV})"
        self._trusted[identity] = task_id
        self._held.setdefault(task_id, []).append(identity)
        return task_id, None

    def deliver(self, relay: m.Relay) -> None:
        try:
            self.sock.send_multipart([relay.identity, relay.frame], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # that client is gone

    def forget(self, task_id: str) -> None:
        """`task_id` ended: its token and its clients' trust end with it."""
        for key in self._held.pop(task_id, ()):
            if isinstance(key, str):
                self._tokens.pop(key, None)
            else:
                self._trusted.pop(key, None)

    def close(self) -> None:
        self.sock.close(linger=0)
