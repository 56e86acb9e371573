"""Fuzzing every socket a frame enters parad by: it stays up, answers, and counts what it drops.

Random, truncated, bit-flipped, wrong-shape, wrong-version, deeply nested and
near-maximum frames go to the control socket, to the nested-task relay (from a
client inside a bash task; its first frame also before Hello, which the worker
checks itself) and to each worker channel (as a fake worker). After
each batch parad must be alive and run an echo task; para_bad_frames_total must
have counted each frame it dropped. The figures per socket are printed (-s).

The examples are derandomized so CI sees the same frames every run; set
PARA_FUZZ_EXPLORE=1 to draw new ones.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Iterator

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from para.client import Client
from para.daemon.config import Config
from para.daemon.frame_limits import worker_frame_limits
from para.ipc import PROTOCOL_VERSION, codec, shapes
from para.ipc import messages as m
from para.testing import FAST, Daemon, bad_frames, stop_and_check, wait_until

HEADER = bytes([codec.MAGIC, PROTOCOL_VERSION])
BATCH_HEADER = bytes([codec.BATCH_MAGIC, PROTOCOL_VERSION])
MAX_SIZE = 1 << 20   # the fuzzed daemon's max_message_size, small so near-maximum frames stay cheap
_FUZZ = settings(deadline=None, database=None, derandomize=not os.environ.get("PARA_FUZZ_EXPLORE"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def fuzz(examples: int) -> settings:
    return settings(_FUZZ, max_examples=examples)


# Operator requests a fuzzed frame must not turn into: they would stop what the test checks.
OPERATOR = (m.Shutdown, m.Scale)

# ---- frames ------------------------------------------------------------------

SAMPLES = [
    m.Hello("fuzz", 1), m.Ping(1), m.Query(2, "status"), m.Cancel(3, ["nope"]),
    m.Submit(4, [m.TaskSpec("fz", "echo", {"x": [1, 2.5, "y", None]})], ack=False),
    m.Ready("echo-1", 1, 4), m.Relayed("echo-1", "t-1", b"id", codec.encode(m.Ping(5))),
    m.Heartbeat("echo-1", 1, 1, 1 << 20, 0.5), m.ErrorReport("echo-1", "t-1", "exception", "boom"),
    m.TaskEvent("t-1", "echo-1", "started", {"attempt": 1}), m.Chunk("t-1", "stdout", b"out", 0),
    m.Done(m.TaskResult("t-1", "echo", m.SUCCEEDED, 0, None, b"o", b"e", worker="echo-1", rusage={"utime": 0.1})),
]
VALID = [codec.encode(s) for s in SAMPLES] + [codec.encode_batch([codec.encode(m.Ping(i)) for i in range(3)])]


def _flip(frame: bytes, bits: list[int]) -> bytes:
    out = bytearray(frame)
    for bit in bits:
        out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def _ext(tag: int, fields: list) -> msgpack.ExtType:
    return msgpack.ExtType(tag, msgpack.packb(fields, use_bin_type=True))


def _wire(value: object) -> object:
    """`value` with every message in it as the ExtType the codec makes of it."""
    if type(value) in m.WIRE_TAGS:
        return _ext(m.WIRE_TAGS[type(value)], [_wire(getattr(value, f)) for f in codec._FIELDS[type(value)]])
    return [_wire(v) for v in value] if isinstance(value, list) else value


def _with_field(sample: object, index: int, value: object) -> bytes:
    """`sample`'s frame with field `index` (counted on through a nested message's fields) set to `value`."""
    fields = [getattr(sample, f) for f in codec._FIELDS[type(sample)]]
    nested = next((i for i, v in enumerate(fields) if type(v) in m.WIRE_TAGS), None)
    if index < len(fields):
        fields[index] = value
    elif nested is not None:
        inner = fields[nested]
        inner_fields = [getattr(inner, f) for f in codec._FIELDS[type(inner)]]
        inner_fields[(index - len(fields)) % len(inner_fields)] = value
        fields[nested] = _ext(m.WIRE_TAGS[type(inner)], [_wire(v) for v in inner_fields])
    return HEADER + msgpack.packb(_ext(m.WIRE_TAGS[type(sample)], [_wire(v) for v in fields]), use_bin_type=True)


def _nested_messages(depth: int) -> bytes:
    body = msgpack.packb(None)
    for _ in range(depth):
        body = msgpack.packb(msgpack.ExtType(m.WIRE_TAGS[m.Reply], body))
    return HEADER + body


values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 64 - 1) | st.floats() | st.text(max_size=16)
    | st.binary(max_size=16) | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12)

random_frames = (st.binary(max_size=256) | st.binary(max_size=64).map(HEADER.__add__)
                 | st.binary(max_size=64).map(BATCH_HEADER.__add__))
truncated = st.sampled_from(VALID).flatmap(lambda f: st.integers(0, len(f) - 1).map(lambda n: f[:n]))
mutated = st.sampled_from(VALID).flatmap(
    lambda f: st.lists(st.integers(0, len(f) * 8 - 1), min_size=1, max_size=4).map(lambda bits: _flip(f, bits)))
wrong_version = st.sampled_from(VALID).flatmap(
    lambda f: st.integers(0, 255).filter(lambda v: v != PROTOCOL_VERSION).map(lambda v: f[:1] + bytes([v]) + f[2:]))
wrong_shape = (
    st.tuples(st.sampled_from(SAMPLES), st.integers(0, 20), values).map(lambda t: _with_field(*t))
    | st.tuples(st.sampled_from(sorted(m.WIRE_TAGS.values())), st.lists(values, max_size=6)).map(
        lambda t: HEADER + msgpack.packb(_ext(*t), use_bin_type=True))
    | st.lists(values, max_size=4).map(lambda v: HEADER + msgpack.packb(v, use_bin_type=True)))
deeply_nested = (
    st.integers(codec.MAX_DEPTH + 1, 3000).map(_nested_messages)
    | st.integers(900, 5000).map(   # a Ping whose req is a list in a list in a list ...
        lambda n: HEADER + msgpack.packb(msgpack.ExtType(m.WIRE_TAGS[m.Ping], b"\x91" * (n + 1) + b"\xc0")))
    | st.integers(1, 400).map(lambda n: BATCH_HEADER + b"\x91" * n + b"\xc4\x00"))
# Headers that claim far more than the frame holds (array, map, str, bin, ext of 2**32 - 1).
length_claims = st.tuples(st.sampled_from([b"\xdd", b"\xdf", b"\xdb", b"\xc6", b"\xc9"]), st.binary(max_size=32)).map(
    lambda t: HEADER + t[0] + b"\xff\xff\xff\xff" + t[1])

any_frame = random_frames | truncated | mutated | wrong_version | wrong_shape | deeply_nested | length_claims
batches = st.lists(any_frame, min_size=1, max_size=8)


def _decoded(frame: bytes, expected: tuple[type, ...] | None = None) -> object | None:
    """What parad makes of `frame`: the message, or None if it is a bad frame (the same codec and checks)."""
    try:
        message = codec.decode(frame)
        if expected is not None:
            shapes.check(message, expected)
        return message
    except codec.ProtocolError:
        return None


def _harmless(frames: list[bytes]) -> bool:
    return not any(isinstance(_decoded(f), OPERATOR) for f in frames)


# ---- the daemon, its figures -------------------------------------------------

FIGURES: dict[str, dict[str, int]] = {}


def _tally(socket: str, **counts: int) -> None:
    row = FIGURES.setdefault(socket, {"sent": 0, "errors": 0, "answered": 0, "dropped": 0})
    for key, n in counts.items():
        row[key] += n


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory, make_daemon) -> Iterator[Daemon]:
    # The relay's client script lives under pytest's temp dir: bash commands must see it.
    sandbox = {"filesystem": {"writable": [str(tmp_path_factory.getbasetemp())]}}
    d = make_daemon({"daemon": {**FAST, "log_level": "info", "max_message_size": MAX_SIZE},
                     "pools": {"echo": {"min_workers": 1, "max_workers": 1},
                               "bash": {"min_workers": 1, "max_workers": 2, "options": {"sandbox": sandbox}}}},
                    tmp_path_factory.mktemp("fuzz"))
    yield d
    print("\nfuzz figures (frames sent; answered with an error; answered otherwise; dropped and counted,"
          " each frame of a batch frame on its own):")
    for socket, row in sorted(FIGURES.items()):
        print(f"  {socket:15s} sent {row['sent']:5d}  errors {row['errors']:5d}  answered {row['answered']:5d}"
              f"  dropped {row['dropped']:5d}")
    print(f"  para_bad_frames_total: {bad_frames(d)}")
    log = d.log()
    stop_and_check(d)
    # Every bad frame was refused by a check; none reached a handler that raised.
    assert "parad failed on it" not in log and "Traceback" not in log, log[-5000:]


@pytest.fixture(scope="module")
def client(fuzzed: Daemon) -> Iterator[Client]:
    with fuzzed.client() as c:
        yield c


def _still_serving(d: Daemon, c: Client) -> None:
    assert d.proc.poll() is None, f"parad exited with {d.proc.returncode}:\n{d.log()[-3000:]}"
    token = uuid.uuid4().hex
    assert c.run("echo", token=token, timeout=30).value == {"token": token}


# ---- the control socket ------------------------------------------------------

class Raw:
    """A DEALER on a socket of parad's, counting what comes back."""

    def __init__(self, address: str, d: Daemon) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(address)
        self.d = d
        self.req = 1 << 40

    def exchange(self, frames: list[bytes]) -> tuple[int, int]:
        """Send `frames`, then a Ping; (error replies, other replies) that came before the Pong."""
        for frame in frames:
            self.sock.send(frame)
        self.req += 1
        self.sock.send(codec.encode(m.Ping(self.req)))
        errors = other = 0

        def pong() -> bool:
            nonlocal errors, other
            assert self.d.proc.poll() is None, f"parad exited with {self.d.proc.returncode}"
            while self.sock.poll(0):
                for part in codec.split(self.sock.recv()):
                    reply = codec.decode(part)
                    if isinstance(reply, m.Pong) and reply.req == self.req:
                        return True
                    if isinstance(reply, m.ErrorReply):
                        errors += 1
                    elif not isinstance(reply, m.Done):  # results of fuzzed submits come when they come
                        other += 1
            return False
        wait_until(pong, 30, "parad to answer a Ping after the fuzzed frames")
        return errors, other

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


@pytest.fixture(scope="module")
def control(fuzzed: Daemon) -> Iterator[Raw]:
    raw = Raw(f"ipc://{fuzzed.runtime_dir}/control.sock", fuzzed)
    yield raw
    raw.close()


@fuzz(80)
@given(frames=batches.filter(_harmless))
def test_control_socket(fuzzed: Daemon, client: Client, control: Raw, frames: list[bytes]) -> None:
    before = bad_frames(fuzzed)["control"]
    errors, other = control.exchange(frames)
    bad = sum(_decoded(f) is None for f in frames)
    assert errors >= bad, f"{bad} bad frames got only {errors} error replies"
    dropped = bad_frames(fuzzed)["control"] - before
    assert bad <= dropped <= len(frames)
    _tally("control", sent=len(frames), errors=errors, answered=other, dropped=int(dropped))
    _still_serving(fuzzed, client)


# A Ping whose req is bytes, exactly max_message_size long: 2 header, 6 ext, 1 array, 5 bin header.
_BIG_PING = HEADER + msgpack.packb(_ext(m.WIRE_TAGS[m.Ping], [b"x" * (MAX_SIZE - 14)]), use_bin_type=True)
assert len(_BIG_PING) == MAX_SIZE
NEAR_MAXIMUM = {
    "junk of max_message_size": HEADER + b"\xc1" * (MAX_SIZE - 2),
    "one byte over": HEADER + b"\xc1" * (MAX_SIZE - 1),
    "a Ping of max_message_size": _BIG_PING,
    "a batch past its bound": codec.encode_batch([codec.encode(m.Ping(1))] * (codec.MAX_BATCH_FRAMES + 1)),
}


@pytest.mark.parametrize("name", list(NEAR_MAXIMUM))
def test_control_socket_near_maximum_frames(fuzzed: Daemon, client: Client, control: Raw, name: str) -> None:
    before = bad_frames(fuzzed)["control"]
    errors, other = control.exchange([NEAR_MAXIMUM[name]])
    bad = int(NEAR_MAXIMUM[name] is not _BIG_PING)   # that one is a request: answered with a Pong
    assert (errors, other) == (bad, 1 - bad) and bad_frames(fuzzed)["control"] == before + bad
    _tally("control", sent=1, errors=errors, answered=other, dropped=bad)
    _still_serving(fuzzed, client)


def test_a_frame_past_the_socket_limit_costs_its_sender_the_connection(fuzzed: Daemon, client: Client) -> None:
    raw = Raw(f"ipc://{fuzzed.runtime_dir}/control.sock", fuzzed)
    try:
        raw.sock.send(HEADER + b"\x00" * (4 * MAX_SIZE + 1))   # over the socket's MAXMSGSIZE: zmq drops the peer
        _tally("control", sent=1)
        _still_serving(fuzzed, client)
        assert raw.exchange([]) == (0, 0)   # the DEALER reconnected and is served again
    finally:
        raw.close()


# ---- the nested-task relay -------------------------------------------------------

RELAY_CLIENT = '''
import json, os, sys, uuid
import msgpack, zmq
from para.ipc import codec
from para.ipc import messages as m

frames = msgpack.unpackb(open(sys.argv[1], "rb").read())
sock = zmq.Context().socket(zmq.DEALER)
sock.setsockopt(zmq.LINGER, 0)
sock.connect(os.environ["PARA_CHILD_ENDPOINT"])
counts = {"errors": 0, "answered": 0}

def until(done):
    while sock.poll(30_000):
        for part in codec.split(sock.recv()):
            msg = codec.decode(part)
            if done(msg):
                return msg
            if isinstance(msg, m.ErrorReply):
                counts["errors"] += 1
            elif not isinstance(msg, m.Done):
                counts["answered"] += 1
    sys.exit("no answer through the relay in 30 s")

sock.send(frames[0])   # before Hello, the worker itself checks the frame
refused = until(lambda msg: isinstance(msg, m.ErrorReply))
sock.send(codec.encode(m.Hello("fuzz", os.getpid(), os.environ["PARA_CHILD_TOKEN"])))
until(lambda msg: isinstance(msg, m.Welcome))
counts = {"errors": 0, "answered": 0}
for frame in frames:
    sock.send(frame)
sock.send(codec.encode(m.Ping(1 << 40)))
until(lambda msg: isinstance(msg, m.Pong) and msg.req == 1 << 40)
child = "fz-" + uuid.uuid4().hex
sock.send(codec.encode(m.Submit(2, [m.TaskSpec(child, "echo", {"child": child})], ack=False)))
done = until(lambda msg: isinstance(msg, m.Done) and msg.result.id == child)
print(json.dumps({**counts, "echo": done.result.value == {"child": child}, "refused": refused.message}))
'''


@pytest.fixture(scope="module")
def relay(fuzzed: Daemon, client: Client, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """relay(frames) -> what the client inside a bash task counted, sending `frames` up the relay."""
    where = tmp_path_factory.mktemp("relay")
    script = where / "relay_client.py"
    script.write_text(RELAY_CLIENT)

    def send(frames: list[bytes]) -> dict:
        path = where / f"{uuid.uuid4().hex}.frames"
        path.write_bytes(msgpack.packb(frames, use_bin_type=True))
        try:
            r = client.run("bash", command=f"{sys.executable} {script} {path}", timeout=60)
        finally:
            path.unlink()
        assert r.ok, f"the client in the task failed: {r.stderr}"
        return json.loads(r.stdout)
    return send


@fuzz(12)
@given(frames=st.lists(any_frame, min_size=1, max_size=25).filter(_harmless))
def test_nested_task_relay(fuzzed: Daemon, client: Client, relay, frames: list[bytes]) -> None:
    before = bad_frames(fuzzed)["relay"]
    counts = relay(frames)
    bad = sum(_decoded(f) is None for f in frames)
    assert counts["echo"] and counts["errors"] >= bad and counts.pop("refused"), counts
    dropped = bad_frames(fuzzed)["relay"] - before
    assert bad <= dropped <= len(frames)
    _tally("relay", sent=len(frames), errors=counts["errors"], answered=counts["answered"], dropped=int(dropped))
    _still_serving(fuzzed, client)


def test_nested_task_relay_near_maximum_frames(fuzzed: Daemon, client: Client, relay) -> None:
    frames = [NEAR_MAXIMUM["one byte over"], NEAR_MAXIMUM["junk of max_message_size"], _nested_messages(3000)]
    before = bad_frames(fuzzed)["relay"]
    counts = relay([_nested_messages(3000)] + frames)
    assert counts == {"errors": 4, "answered": 0, "echo": True,
                      "refused": f"messages nested more than {codec.MAX_DEPTH} deep"}
    assert bad_frames(fuzzed)["relay"] == before + 4
    _tally("relay", sent=4, errors=4, dropped=4)


# ---- the worker channels -----------------------------------------------------------

IDENTITY = b"fuzz-1"
EXPECTED = {"event": (m.TaskEvent,), "data": (m.Chunk, m.Done), "error": (m.ErrorReport,),
            "metrics": (m.Heartbeat,), "command": (m.Ready, m.Relayed)}


def _drops(channel: str, frame: bytes) -> int:
    """How many drops parad counts for `frame` on a worker channel (the same codec and checks)."""
    if channel in ("event", "data"):
        try:
            parts = codec.split(frame)
        except codec.ProtocolError:
            return 1
        return sum(_decoded(p, EXPECTED[channel]) is None for p in parts)
    message = _decoded(frame, EXPECTED[channel])
    if message is None:
        return 1
    return int(channel == "command" and message.worker.encode() != IDENTITY)


@pytest.fixture(scope="module")
def fake_worker(fuzzed: Daemon) -> Iterator[dict[str, zmq.Socket]]:
    """A socket on each worker channel, as a worker would connect it."""
    ctx = zmq.Context()
    socks = {}
    for channel in EXPECTED:
        sock = ctx.socket(zmq.DEALER if channel == "command" else zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 0)
        if channel == "command":
            sock.setsockopt(zmq.IDENTITY, IDENTITY)
        sock.connect(f"ipc://{fuzzed.runtime_dir}/workers/{channel}.sock")
        socks[channel] = sock
    yield socks
    for sock in socks.values():
        sock.close()
    ctx.term()


def _fuzz_worker_channel(d: Daemon, c: Client, socks: dict[str, zmq.Socket], channel: str, frames: list[bytes]) -> None:
    socket = f"worker_{channel}"
    before = bad_frames(d)[socket]
    for frame in frames:
        socks[channel].send(frame)
    expected = sum(_drops(channel, f) for f in frames)
    wait_until(lambda: bad_frames(d)[socket] >= before + expected, 30,
               f"parad to count {expected} bad frames on {socket}")
    _still_serving(d, c)
    dropped = bad_frames(d)[socket] - before
    assert dropped == expected, f"{dropped} frames dropped, expected {expected}"
    _tally(socket, sent=len(frames), dropped=int(dropped))


@pytest.mark.parametrize("channel", list(EXPECTED))
@fuzz(40)
@given(frames=batches)
def test_worker_channel(fuzzed: Daemon, client: Client, fake_worker, channel: str, frames: list[bytes]) -> None:
    _fuzz_worker_channel(fuzzed, client, fake_worker, channel, frames)


@pytest.mark.parametrize("channel", list(EXPECTED))
def test_worker_channel_near_maximum_frames(fuzzed: Daemon, client: Client, fake_worker, channel: str) -> None:
    frames = list(NEAR_MAXIMUM.values()) + [
        HEADER + b"\xc1" * (2 * MAX_SIZE),   # under every worker channel's bound (frame_limits.py)
        codec.encode_batch([b"\xc1"] * codec.MAX_BATCH_FRAMES),   # a full batch of junk: each part counted
    ]
    _fuzz_worker_channel(fuzzed, client, fake_worker, channel, frames)


def test_a_worker_frame_past_its_channel_bound_costs_the_connection(fuzzed: Daemon, client: Client,
                                                                    fake_worker) -> None:
    config = Config.model_validate({"daemon": {"max_message_size": MAX_SIZE}})
    bound = worker_frame_limits(config)["command"]
    fake_worker["command"].send(HEADER + b"\xc1" * bound)   # over MAXMSGSIZE: zmq drops the peer unread
    _tally("worker_command", sent=1)
    _still_serving(fuzzed, client)
    # The DEALER reconnected: its next frame is read (and counted) again.
    _fuzz_worker_channel(fuzzed, client, fake_worker, "command", [HEADER + b"\xc1"])


WRONG_TYPES = {
    "a Heartbeat whose rss is a string": ("metrics", m.Heartbeat("echo-1", 1, 1, "lots", 0.5)),
    "a Done whose result is not a TaskResult": ("data", m.Done(m.Ping(1))),
    "a Done whose TaskResult has a list for an id": ("data", m.Done(m.TaskResult(["t-1"], "echo", m.SUCCEEDED))),
    "a Chunk for a task named by a dict": ("data", m.Chunk({"t": 1}, "stdout", b"x", 0)),
    "a Ready whose worker is a list": ("command", m.Ready(["echo-1"], 1, 1)),
    "a Relayed whose frame is a string": ("command", m.Relayed("fuzz-1", "t-1", b"id", "frame")),
    "an ErrorReport with no message": ("error", m.ErrorReport("echo-1", None, "crash", None)),
    "a Ping on the data channel": ("data", m.Ping(1)),
}


@pytest.mark.parametrize("name", list(WRONG_TYPES))
def test_a_message_with_fields_of_the_wrong_type_is_dropped(fuzzed: Daemon, client: Client, fake_worker,
                                                             name: str) -> None:
    channel, message = WRONG_TYPES[name]
    frame = codec.encode(message)
    assert _drops(channel, frame) == 1
    _fuzz_worker_channel(fuzzed, client, fake_worker, channel, [frame])
    with fuzzed.client() as c:
        assert "para_worker_rss_bytes" in c.metrics()   # a worker's figures still read as numbers
