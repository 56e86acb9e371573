"""The wire format, without sockets."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from para.ipc import PROTOCOL_VERSION, codec, shapes
from para.ipc import messages as m
from para.ipc.endpoints import WORKER_CHANNELS, Endpoints


_MESSAGES = {cls.__name__: cls for cls in m.WIRE_TAGS}


def _sample(cls: type) -> object:
    """An instance of `cls` with a non-default value in every field."""
    values = {}
    for f in dataclasses.fields(cls):
        t = str(f.type)
        if f.name == "task":
            values[f.name] = m.TaskSpec("t-1", "bash", {"command": "ls"}, 3.5, 1, "s", 2, True)
        elif f.name == "result":
            values[f.name] = m.TaskResult("t-1", "bash", m.FAILED, 2, None, b"out\xff", b"err", True, {"k": [1]})
        elif f.name == "tasks":
            values[f.name] = [m.TaskSpec("a", "echo", {"x": 1}), m.TaskSpec("b", "echo", {})]
        elif t in _MESSAGES:  # a field declared to hold one message (Spawn.settings)
            values[f.name] = _sample(_MESSAGES[t])
        elif t.startswith("dict"):
            values[f.name] = {"nested": {"deep": [1, 2.5, None]}}
        elif "bytes" in t:
            values[f.name] = b"\x00\x01data"
        elif "bool" in t:
            values[f.name] = True
        elif "float" in t:
            values[f.name] = 1.25
        elif "int" in t:
            values[f.name] = 7
        elif "list" in t:
            values[f.name] = ["a", "b"]
        elif "dict" in t:
            values[f.name] = {"nested": {"deep": [1, 2.5, None]}}
        else:
            values[f.name] = f"{f.name}-value"
    return cls(**values)


@pytest.mark.parametrize("cls", list(m.WIRE_TAGS), ids=lambda c: c.__name__)
def test_every_message_round_trips(cls: type) -> None:
    message = _sample(cls)
    assert codec.decode(codec.encode(message)) == message


def test_a_spawn_carries_typed_worker_settings() -> None:
    settings = m.WorkerSettings("/run/para", 0.5, 4, {"sandbox": {"network": False}},
                                launch=["/usr/bin/bwrap", "--unshare-pid", "--"], env={"PATH": "/usr/bin"},
                                lend_ids=True, cgroup_worker="/cg/pool-bash/bash-1/worker",
                                cgroup_command="/cg/pool-bash/bash-1/command", runtime_fd=5)
    spawn = codec.decode(codec.encode(m.Spawn("bash-1", "bash", "bash", settings)))
    assert spawn == m.Spawn("bash-1", "bash", "bash", settings)
    assert type(spawn.settings) is m.WorkerSettings and spawn.settings.runtime_fd == 5
    shapes.check(spawn, (m.Spawn,))
    with pytest.raises(codec.ProtocolError, match="Spawn.settings is dict, expected WorkerSettings"):
        shapes.check(m.Spawn("bash-1", "bash", "bash", {"credit": 4}), (m.Spawn,))


def test_tags_are_unique() -> None:
    assert len(set(m.WIRE_TAGS.values())) == len(m.WIRE_TAGS)


def test_batch_frames_round_trip_and_single_frames_pass_through() -> None:
    frames = [codec.encode(m.Ping(i)) for i in range(5)]
    batch = codec.encode_batch(frames)
    assert codec.split(batch) == frames
    assert [codec.decode(f).req for f in codec.split(batch)] == list(range(5))
    assert codec.encode_batch(frames[:1]) == frames[0]
    assert codec.split(frames[0]) == [frames[0]]


@pytest.mark.parametrize("frame, words", [
    (b"", "bad magic"),
    (b"hello world", "bad magic"),
    (bytes([codec.MAGIC, PROTOCOL_VERSION + 1]) + msgpack.packb(1), "protocol version"),
    (bytes([codec.MAGIC, PROTOCOL_VERSION]) + b"\xc1", "malformed"),
    (bytes([codec.MAGIC, PROTOCOL_VERSION]) + msgpack.packb([1, 2]), "not a para message"),
    (bytes([codec.MAGIC, PROTOCOL_VERSION]) + msgpack.packb(msgpack.ExtType(99, msgpack.packb([]))), "unknown message type"),
    (bytes([codec.MAGIC, PROTOCOL_VERSION]) + msgpack.packb(msgpack.ExtType(10, msgpack.packb([1, 2, 3]))), "Ping"),
    (bytes([codec.MAGIC, PROTOCOL_VERSION]) + msgpack.packb(msgpack.ExtType(10, msgpack.packb("x"))), "not a list"),
])
def test_bad_frames_raise_protocol_error_saying_why(frame: bytes, words: str) -> None:
    with pytest.raises(codec.ProtocolError, match=words):
        codec.decode(frame)


HEADER = bytes([codec.MAGIC, PROTOCOL_VERSION])


@pytest.mark.parametrize(("frame", "number"), [
    (codec.encode(m.Submit(77, [m.TaskSpec("t", "echo", {"x": msgpack.ExtType(99, b"?")})])), 77),
    (HEADER + msgpack.packb(msgpack.ExtType(10, msgpack.packb([5, "extra", "values"]))), 5),   # a Ping, too long
    (codec.encode(m.Hello("client", 1, None)), 0),                     # its first field is no number
    (codec.encode(m.Submit(77, []))[:-1], 0),                          # cut short: nothing is told
    (HEADER + msgpack.packb([7]), 0),                                  # not a message
    (HEADER + msgpack.packb(msgpack.ExtType(10, msgpack.packb([-3]))), 0),
    (HEADER + msgpack.packb(msgpack.ExtType(10, msgpack.packb([(1 << 64) - 1]))), 0),
    (bytes([0, PROTOCOL_VERSION]) + msgpack.packb(msgpack.ExtType(10, msgpack.packb([5]))), 0),   # bad magic
    (b"", 0),
])
def test_the_request_number_of_a_frame_that_does_not_decode(frame: bytes, number: int) -> None:
    assert codec.request_number(frame) == number


def test_bad_batch_frames_are_refused() -> None:
    with pytest.raises(codec.ProtocolError, match="list of frames"):
        codec.split(bytes([codec.BATCH_MAGIC, PROTOCOL_VERSION]) + msgpack.packb([1, 2]))
    with pytest.raises(codec.ProtocolError, match="protocol version"):
        codec.split(bytes([codec.BATCH_MAGIC, 0]) + msgpack.packb([]))


def _nested(depth: int) -> bytes:
    """A frame of Reply messages each inside the last one's body."""
    body = msgpack.packb(None)
    for _ in range(depth):
        body = msgpack.packb(msgpack.ExtType(m.WIRE_TAGS[m.Reply], body))
    return bytes([codec.MAGIC, PROTOCOL_VERSION]) + body


def test_messages_nest_up_to_the_bound() -> None:
    def replies(depth: int) -> m.Reply:
        return m.Reply(depth, replies(depth - 1) if depth > 1 else None)
    assert codec.decode(codec.encode(replies(codec.MAX_DEPTH))) == replies(codec.MAX_DEPTH)
    with pytest.raises(codec.ProtocolError, match=f"messages nested more than {codec.MAX_DEPTH} deep"):
        codec.decode(codec.encode(replies(codec.MAX_DEPTH + 1)))


def test_a_frame_nested_hundreds_deep_is_refused_not_recursed() -> None:
    # In a child: unbounded, this overflows the C stack and the process dies of SIGSEGV.
    code = ("import sys; from para.ipc import codec; from tests.test_ipc import _nested\n"
            "try:\n    codec.decode(_nested(int(sys.argv[1])))\n"
            "except codec.ProtocolError as exc:\n    print(exc)\n")
    for depth in (300, 5000):
        child = subprocess.run([sys.executable, "-c", code, str(depth)], capture_output=True, text=True,
                               timeout=60, cwd=Path(__file__).parent.parent)
        assert child.returncode == 0, f"decoding {depth} levels killed the process: {child}"
        assert child.stdout == f"messages nested more than {codec.MAX_DEPTH} deep\n"


def test_batch_frames_hold_a_bounded_number_of_frames() -> None:
    ping = codec.encode(m.Ping(1))
    assert len(codec.split(codec.encode_batch([ping] * codec.MAX_BATCH_FRAMES))) == codec.MAX_BATCH_FRAMES
    with pytest.raises(codec.ProtocolError, match=f"at most {codec.MAX_BATCH_FRAMES} frames"):
        codec.split(codec.encode_batch([ping] * (codec.MAX_BATCH_FRAMES + 1)))


@pytest.mark.parametrize("header", [b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff",
                                    b"\xc6\xff\xff\xff\xff", b"\xc9\xff\xff\xff\xff\x04"],
                         ids=["array", "map", "str", "bin", "ext"])
def test_a_length_past_the_frame_is_refused(header: bytes) -> None:
    with pytest.raises(codec.ProtocolError, match="malformed"):
        codec.decode(bytes([codec.MAGIC, PROTOCOL_VERSION]) + header + b"\x00" * 64)


@pytest.mark.parametrize("cls", list(m.WIRE_TAGS), ids=lambda c: c.__name__)
def test_every_well_formed_message_passes_the_shape_check(cls: type) -> None:
    shapes.check(codec.decode(codec.encode(_sample(cls))), (cls,))


@pytest.mark.parametrize("message, expected, words", [
    (m.Heartbeat("bash-1", 1, 1, "lots", 0.5), m.Heartbeat, "Heartbeat.rss is str, expected int"),
    (m.Done(m.Ping(1)), m.Done, "Done.result is Ping, expected TaskResult"),
    (m.Done(m.TaskResult("t", "bash", m.SUCCEEDED, stdout="text")), m.Done, "TaskResult.stdout is str, expected bytes"),
    (m.Ready(["bash-1"], 1, 1), m.Ready, "Ready.worker is list, expected str"),
    (m.Ping(1), m.Ready, "Ping is not expected here"),
])
def test_a_field_of_the_wrong_type_is_a_protocol_error(message: object, expected: type, words: str) -> None:
    with pytest.raises(codec.ProtocolError, match=words):
        shapes.check(codec.decode(codec.encode(message)), (expected,))


def test_encoding_an_unknown_type_fails_loudly() -> None:
    with pytest.raises(TypeError, match="cannot encode"):
        codec.encode(m.Reply(1, object()))


def test_endpoints_live_in_the_runtime_dir(tmp_path) -> None:
    e = Endpoints(tmp_path)
    assert e.control == f"ipc://{tmp_path}/control.sock"
    assert {p.parent for p in e.socket_paths()} == {tmp_path, tmp_path / "workers"}
    assert len(e.socket_paths()) == 2 + len(WORKER_CHANNELS)
    with pytest.raises(ValueError):
        e.worker_path("nonsense")


def test_a_client_result_carries_every_field_of_the_wire_result() -> None:
    # Result.from_wire passes TaskResult's fields positionally: the two must keep one order.
    from dataclasses import fields

    from para.client.result import Result
    assert [f.name for f in fields(Result)] == [f.name for f in fields(m.TaskResult)]
    wire = m.TaskResult("t-1", "bash", m.FAILED, 2, 9, b"out\xff", b"err", True, {"k": [1]}, 1.5, 3, "bash-1",
                        "boom", m.E_TOOL, "memory", {"utime": 0.1}, 4, 3, [{"host": "h", "port": 1, "rule": "r"}])
    got = Result.from_wire(wire).to_dict()
    assert got == {**{f.name: getattr(wire, f.name) for f in fields(m.TaskResult)}, "stdout": "out\ufffd", "stderr": "err"}
    assert Result.from_wire(m.TaskResult("t-2", "echo", m.SUCCEEDED)).to_dict()["stdout"] == ""


def _with_extra_values(message: object, *extra: object, inner: bytes | None = None) -> bytes:
    """`message` as a newer peer would send it: with values past the fields this release knows
    (its nested message, if `inner` is given, already packed the same way)."""
    values = [getattr(message, f.name) for f in dataclasses.fields(message)]
    if inner is not None:
        values[0] = msgpack.ExtType(m.WIRE_TAGS[type(values[0])], inner)
    return msgpack.packb(values + list(extra), use_bin_type=True)


def test_values_past_the_known_fields_are_refused_by_parad_and_left_out_by_clients() -> None:
    result = m.TaskResult("t-1", "echo", m.SUCCEEDED, value={"x": 1}, worker="echo-1", attempts=1)
    inner = _with_extra_values(result, "a field of tomorrow")
    outer = _with_extra_values(m.Done(result), {"also": "new"}, inner=inner)
    frame = codec._HEADER + msgpack.packb(msgpack.ExtType(m.WIRE_TAGS[m.Done], outer), use_bin_type=True)
    with pytest.raises(codec.ProtocolError, match="Done|TaskResult"):
        codec.decode(frame)                          # parad: the sender must not send what we lack
    assert codec.decode(frame, newer_ok=True) == m.Done(result)   # a client: what it knows, as sent
    # Too few values is no newer peer: refused either way.
    short = codec._HEADER + msgpack.packb(msgpack.ExtType(m.WIRE_TAGS[m.TaskResult], msgpack.packb(["t-1"])))
    with pytest.raises(codec.ProtocolError, match="TaskResult"):
        codec.decode(short, newer_ok=True)
