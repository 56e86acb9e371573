"""Bad input gets a clear error naming what was wrong, and the daemon keeps serving."""

from __future__ import annotations

import time
from collections.abc import Callable

import msgpack
import pytest
import zmq

from para.client import InvalidRequest
from para.ipc import PROTOCOL_VERSION, codec
from para.ipc import messages as m
from para.testing import bad_frames


@pytest.fixture
def raw(daemon):
    """A bare DEALER socket on the control endpoint, to send what no client would."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"ipc://{daemon.runtime_dir}/control.sock")

    def exchange(*frames: bytes, until: Callable[[list], bool] | None = None) -> list:
        """Send `frames`; the replies read until `until(replies)` holds (default: any reply came)."""
        done = until or (lambda rs: any(isinstance(r, (m.ErrorReply, m.Accepted, m.Reply, m.Welcome)) for r in rs))
        sock.send_multipart(list(frames))
        replies = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if daemon.proc.poll() is not None:  # say so now, not after the whole wait
                pytest.fail(f"parad died (exit status {daemon.proc.returncode}) on this input")
            if not sock.poll(100):
                continue
            for part in codec.split(sock.recv()):
                replies.append(codec.decode(part))
            if done(replies):
                return replies
        pytest.fail("no reply from parad")

    yield exchange
    sock.close()
    ctx.term()
    with daemon.client() as c:  # whatever came before, the daemon still serves
        assert c.run("echo", alive=True).value == {"alive": True}


def _error(replies: list) -> m.ErrorReply:
    errors = [r for r in replies if isinstance(r, m.ErrorReply)]
    assert errors, f"expected an ErrorReply, got {replies}"
    return errors[0]


def test_garbage_frame(raw) -> None:
    e = _error(raw(b"\x00\xffnot msgpack"))
    assert e.code == "protocol" and "not a para frame" in e.message


def _nested(depth: int) -> bytes:
    """A frame of Reply messages each inside the last one's body: 3-4 bytes a level."""
    body = msgpack.packb(None)
    for _ in range(depth):
        body = msgpack.packb(msgpack.ExtType(m.WIRE_TAGS[m.Reply], body))
    return bytes([codec.MAGIC, PROTOCOL_VERSION]) + body


def test_a_small_deeply_nested_frame_is_refused_and_counted(raw, daemon) -> None:
    frame = _nested(250)
    assert len(frame) < 1024
    before = bad_frames(daemon).get("control", 0)
    e = _error(raw(frame))
    assert e.code == "protocol" and f"messages nested more than {codec.MAX_DEPTH} deep" in e.message
    assert bad_frames(daemon)["control"] == before + 1


def test_truncated_msgpack(raw) -> None:
    frame = codec.encode(m.Submit(1, [m.TaskSpec("a", "echo", {"x": "y" * 100})]))
    e = _error(raw(frame[: len(frame) // 2]))
    assert e.code == "protocol" and "malformed" in e.message


def test_wrong_protocol_version(raw) -> None:
    frame = bytearray(codec.encode(m.Hello("old", 1)))
    frame[1] = PROTOCOL_VERSION + 1
    e = _error(raw(bytes(frame)))
    assert e.code == "protocol" and f"protocol version {PROTOCOL_VERSION + 1} is not supported" in e.message


def test_multipart_request(raw) -> None:
    e = _error(raw(codec.encode(m.Ping(1)), codec.encode(m.Ping(2)), codec.encode(m.Ping(3))))
    assert "one frame per request" in e.message
    # parad read the whole message, so the sender's next one is read as a request, not as its tail:
    # a Ping of this same socket gets its own Pong, and nothing answers the extra frames.
    replies = raw(codec.encode(m.Ping(4)), until=lambda rs: any(isinstance(r, m.Pong) for r in rs))
    assert [r.req for r in replies if isinstance(r, m.Pong)] == [4]


def test_daemon_to_client_message_sent_as_a_request(raw) -> None:
    e = _error(raw(codec.encode(m.Pong(3))))
    assert e.req == 3 and "Pong is not a client request" in e.message


def test_oversized_message(raw, daemon) -> None:
    frame = codec.encode(m.Submit(4, [m.TaskSpec("big", "echo", {"blob": b"x" * (8 << 20)})]))
    e = _error(raw(frame))
    assert e.code == "too_large" and f"request of {len(frame)} bytes exceeds max_message_size" in e.message


def test_oversized_message_is_refused_by_the_client_before_sending(daemon) -> None:
    with daemon.client() as c:
        with pytest.raises(InvalidRequest, match="exceeds the daemon's max_message_size"):
            c.run("echo", blob=b"x" * (9 << 20))


def test_unknown_tool(raw) -> None:
    replies = raw(codec.encode(m.Submit(5, [m.TaskSpec("t1", "frobnicate", {})])))
    e = _error(replies)
    assert (e.code, e.task_id) == ("unknown_tool", "t1")
    assert "unknown tool 'frobnicate'; this daemon runs: bash, echo" == e.message


@pytest.mark.parametrize("args, words", [
    ({"command": 42}, "bash argument command: Input should be a valid string (got 42)"),
    ({}, "bash: no command: give command (a shell string) or argv (a list of words)"),
    ({"command": "true", "cwdd": "/"}, "bash argument cwdd: Extra inputs are not permitted"),
    ({"command": "true", "env": {"A": 1}}, "bash argument env.A: Input should be a valid string"),
])
def test_wrong_argument_names_and_types(raw, args, words) -> None:
    e = _error(raw(codec.encode(m.Submit(6, [m.TaskSpec("t2", "bash", args)]))))
    assert e.code == "invalid_request" and words in e.message


@pytest.mark.parametrize("spec, words", [
    (m.TaskSpec("t3", "echo", {}, priority=9), "task priority: Input should be less than or equal to 4"),
    (m.TaskSpec("t3", "echo", {}, timeout="soon"), "task timeout"),
    (m.TaskSpec("bad id!", "echo", {}), "task id: String should match pattern"),
    (m.TaskSpec("t3", "echo", ["not", "a", "dict"]), "task args: Input should be a valid dictionary"),
])
def test_wrong_task_fields(raw, spec, words) -> None:
    e = _error(raw(codec.encode(m.Submit(7, [spec]))))
    assert e.code == "invalid_request" and words in e.message


def test_timeout_above_the_pool_maximum(start_daemon) -> None:
    d = start_daemon(pools={"bash": {"min_workers": 1, "default_timeout": 10, "max_timeout": 10}})
    with d.client() as c:
        with pytest.raises(InvalidRequest, match=r"timeout 11s exceeds the max_timeout of pool 'bash' \(10s\)"):
            c.run("bash", command="true", timeout=11)


def test_one_bad_task_in_a_batch_does_not_sink_the_others(raw) -> None:
    frame = codec.encode(m.Submit(8, [m.TaskSpec("good1", "echo", {"n": 1}), m.TaskSpec("bad", "nope", {}),
                                      m.TaskSpec("good2", "echo", {"n": 2})]))
    # The refusal leaves at once, the Accepted after the commit that records the others: both, in any order.
    replies = raw(frame, until=lambda rs: {m.Accepted, m.ErrorReply} <= {type(r) for r in rs})
    accepted = next(r for r in replies if isinstance(r, m.Accepted))
    assert accepted.ids == ["good1", "good2"]
    assert _error(replies).task_id == "bad"


def test_duplicate_live_task_id(raw) -> None:
    spec = m.TaskSpec("dup", "bash", {"command": "sleep 5"})
    raw(codec.encode(m.Submit(9, [spec])))
    e = _error(raw(codec.encode(m.Submit(10, [spec]))))
    assert "task id 'dup' is already in use" in e.message
    raw(codec.encode(m.Cancel(11, ["dup"])))


def test_submit_tasks_not_a_list(raw) -> None:
    body = msgpack.packb(msgpack.ExtType(m.WIRE_TAGS[m.Submit], msgpack.packb([12, "nope"])))
    e = _error(raw(bytes([codec.MAGIC, PROTOCOL_VERSION]) + body))
    assert "Submit.tasks must be a list" in e.message


def test_unknown_query(raw) -> None:
    e = _error(raw(codec.encode(m.Query(13, "everything"))))
    assert "unknown query 'everything'" in e.message
