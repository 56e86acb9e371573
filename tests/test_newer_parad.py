"""para's client against a newer parad, one that appended fields to its messages (docs/PROTOCOL.md,
Encoding): it reads what it knows and goes on. No newer parad exists to start, so a peer on the
control socket plays one: it answers in this protocol version, with a value more in each message."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import fields

import msgpack
import pytest
import zmq

from para.client import Client
from para.ipc import PROTOCOL_VERSION, codec
from para.ipc import messages as m
from para.ipc.endpoints import Endpoints


def _newer(message: object) -> msgpack.ExtType:
    """`message` with one value past its fields, nested messages too."""
    values = []
    for f in fields(message):
        value = getattr(message, f.name)
        values.append(_newer(value) if type(value) in m.WIRE_TAGS else value)
    return msgpack.ExtType(m.WIRE_TAGS[type(message)], msgpack.packb(values + ["a field of tomorrow"], use_bin_type=True))


def _frame(message: object) -> bytes:
    return bytes([codec.MAGIC, PROTOCOL_VERSION]) + msgpack.packb(_newer(message), use_bin_type=True)


@pytest.fixture
def newer_parad(tmp_path) -> Iterator[Endpoints]:
    """A control socket that answers Hello, Ping and Submit as a newer parad would."""
    endpoints = Endpoints(tmp_path)
    endpoints.lock_path.write_text(str(os.getpid()))   # the client looks for a live parad's pid
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(f"ipc://{endpoints.control_path}")
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            if not sock.poll(50):
                continue
            identity, frame = sock.recv_multipart()
            request = codec.decode(frame)
            if isinstance(request, m.Hello):
                answer = m.Welcome("9.9", PROTOCOL_VERSION, os.getpid(), ["echo"], 1 << 20, boot="b")
            elif isinstance(request, m.Ping):
                answer = m.Pong(request.req, "b")
            else:
                spec = request.tasks[0]
                answer = m.Done(m.TaskResult(spec.id, spec.tool, m.SUCCEEDED, value=spec.args, worker="echo-1",
                                             attempts=1))
            sock.send_multipart([identity, _frame(answer)])

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    yield endpoints
    stop.set()
    server.join(5)
    sock.close()
    ctx.term()


def test_the_client_reads_a_newer_parads_messages(newer_parad) -> None:
    with Client(newer_parad.runtime_dir, timeout=10) as client:
        result = client.run("echo", x=1)
        assert result.ok and result.value == {"x": 1} and result.worker == "echo-1"
        assert client.daemon.daemon_version == "9.9"
