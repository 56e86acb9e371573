"""Separate channels: a 50 MB output flood delays neither heartbeats nor a cancel; and
both ends of each socket, as ipc/channels.py sets them up, exchanging messages."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psutil
import pytest
import zmq

from para.client import watch
from para.daemon import children, events
from para.daemon.child_relay import RELAY_SLACK
from para.daemon.clients import ClientRequests
from para.daemon.config import Config
from para.daemon.frame_limits import worker_frame_limits
from para.daemon.tools.ripgrep import RG_OUTPUT_CAP
from para.daemon.worker import Worker
from para.ipc import channels, codec
from para.ipc import messages as m
from para.ipc.endpoints import Endpoints
from para.testing import wait_running, wait_until

MB = 1 << 20


def test_flood_does_not_delay_heartbeats_or_cancel(start_daemon) -> None:
    d = start_daemon(
        daemon={"heartbeat_interval": 0.1, "failure_detection_timeout": 2.0},
        pools={"bash": {"min_workers": 2, "max_workers": 2, "options": {"sandbox": {"limits": {"output_bytes": 64 * MB}}}}},
    )
    with d.client(timeout=30) as c:
        sleeper = c.submit("bash", command="sleep 300")
        wait_running(c, what="the sleeper to run")
        # 50 MiB in 1 MiB bursts: at least 2.5 s of flood, so the cancel below happens mid-flood.
        flood = c.submit("bash", stream=True,
                         command="for i in $(seq 50); do head -c 1048576 /dev/zero; sleep 0.05; done")
        flooder = wait_until(lambda: next((w for w in c.workers() if flood.id in w["tasks"]), None),
                             what="the flood to start")
        received = 0
        cancelled_mid_flood = False
        for chunk in c.stream(flood):
            received += len(chunk.data)
            if received >= 5 * MB and not cancelled_mid_flood:
                beats_before = next(w for w in c.workers() if w["id"] == flooder["id"])["heartbeats"]
                c.cancel(sleeper)
                assert sleeper.result(timeout=30).status == "cancelled"
                assert not flood.done(), "the cancel waited for the flood to finish"
                beats_during = wait_until(
                    lambda: (lambda n: n if n > beats_before else None)(
                        next(w for w in c.workers() if w["id"] == flooder["id"])["heartbeats"]),
                    what="a heartbeat from the flooding worker")
                assert not flood.done() and beats_during > beats_before
                cancelled_mid_flood = True
        result = flood.result()
    assert cancelled_mid_flood
    assert received == 50 * MB and result.stdout_bytes == 50 * MB and not result.truncated
    assert "sent no heartbeat" not in d.log()
    assert {w["id"] for w in d.workers("bash")} >= {flooder["id"]}  # never declared hung


# ---- ipc/channels.py: both ends of each socket, as parad and a worker set them up ----

WAIT_MS = 10_000   # a bound, not a pace: each wait returns as soon as the frame is there
UP = {"command": m.Ready("bash-1", 42, 4), "event": m.TaskEvent("t1", "bash-1", "started", {"attempt": 1}),
      "data": m.Done(m.TaskResult("t1", "bash", m.SUCCEEDED, stdout=b"hi")),
      "error": m.ErrorReport("bash-1", "t1", "limit", "output limit"),
      "metrics": m.Heartbeat("bash-1", 42, 1, 1 << 20, 0.5)}


@pytest.fixture
def wire(tmp_path) -> Iterator[tuple[zmq.Context, Endpoints]]:
    endpoints = Endpoints(tmp_path)
    endpoints.worker_dir.mkdir()
    ctx = zmq.Context()
    try:
        yield ctx, endpoints
    finally:
        ctx.destroy(linger=0)


def _recv(sock: zmq.Socket) -> list[bytes]:
    assert sock.poll(WAIT_MS), "nothing arrived"
    return sock.recv_multipart()


def test_every_worker_channel_carries_its_messages_both_ways(wire) -> None:
    ctx, endpoints = wire
    parad = channels.bind_worker_channels(ctx, endpoints)
    worker = channels.WorkerEnd(ctx, endpoints, "bash-1")
    assert set(parad) == set(channels.CHANNELS) == set(worker.sockets)
    for name, channel in channels.CHANNELS.items():
        assert parad[name].type == channel.parad_kind and worker.sockets[name].type == channel.worker_kind
        assert isinstance(UP[name], channel.up)
        worker.send(name, UP[name])
        frames = _recv(parad[name])
        assert codec.decode(frames[-1]) == UP[name]
        if name == "command":
            assert frames[0] == b"bash-1"   # the worker's identity routes parad's answers
    assert worker.sockets["data"].getsockopt(zmq.SNDHWM) == channels.DATA_HWM
    # Down the command channel, many messages in one frame, decoded in order.
    down = [m.Assign(m.TaskSpec("t1", "bash", {"command": "true"}), 1), m.CancelTask("t1"), m.PauseOutput("t1"),
            m.ResumeOutput("t1"), m.Relay(b"id", b"frame"), m.Input(0, "t1", b"in", eof=True), m.Stop(2.0)]
    assert {type(msg) for msg in down} == set(channels.COMMAND.down)
    assert channels.send_to_worker(parad["command"], "bash-1", down)
    assert worker.command.poll(WAIT_MS)
    assert list(worker.commands()) == down
    # Batched frames up, as the worker's data and event loops send them.
    assert worker.send_encoded("data", [codec.encode(UP["data"]), codec.encode(UP["data"])])
    assert [codec.decode(f) for f in codec.split(_recv(parad["data"])[0])] == [UP["data"]] * 2
    # A worker that is not there: the send says so instead of vanishing.
    assert not channels.send_to_worker(parad["command"], "bash-9", [m.Stop(1.0)])
    worker.close(linger=0)
    for sock in parad.values():
        sock.close()


def test_a_bad_command_frame_does_not_end_the_worker(wire) -> None:
    # A worker that raised on a frame it could not decode died with every task it held.
    ctx, endpoints = wire
    parad = channels.bind_worker_channels(ctx, endpoints)
    worker = channels.WorkerEnd(ctx, endpoints, "bash-1")
    worker.send("command", UP["command"])
    _recv(parad["command"])   # now routable
    bad = [b"\xa8\x01\xdd" + bytes(4) * 2, codec.encode_batch([b"junk", codec.encode(m.Stop(1.0))]),
           codec.encode_batch([codec.encode(m.Stop(1.0))] * (codec.MAX_BATCH_FRAMES + 1)), b"\xa7\x01\xc1"]
    for frame in bad:
        parad["command"].send_multipart([b"bash-1", frame])
    assert channels.send_to_worker(parad["command"], "bash-1", [m.CancelTask("t1")])
    got: list = []
    wait_until(lambda: got.extend(worker.commands()) or m.CancelTask("t1") in got, 10, "the good frame after the bad")
    assert got == [m.Stop(1.0), m.CancelTask("t1")] and worker.refused == 4
    worker.close(linger=0)
    for sock in parad.values():
        sock.close()


def test_parad_drops_a_worker_frame_past_its_channel_bound_and_takes_the_next(wire) -> None:
    ctx, endpoints = wire
    parad = channels.bind_worker_channels(ctx, endpoints, {"command": 1 << 16})
    worker = channels.WorkerEnd(ctx, endpoints, "bash-1")
    worker.command.send(bytes(1 << 20))
    worker.send("command", UP["command"])   # on a new connection: ZeroMQ reconnects the worker
    assert codec.decode(_recv(parad["command"])[-1]) == UP["command"]
    worker.close(linger=0)
    for sock in parad.values():
        sock.close()


def test_worker_frame_bounds_hold_the_largest_legit_frames() -> None:
    config = Config.model_validate({"pools": {"bash": {"options": {"sandbox": {"limits": {"output_bytes": 4 << 20}}}}}})
    limits = worker_frame_limits(config)
    size = config.daemon.max_message_size
    relayed = m.Relayed("bash-1", "t" * size, b"\x00child\x00" + bytes(250), bytes(size + RELAY_SLACK))
    assert len(codec.encode(relayed)) <= limits["command"]
    done = m.Done(m.TaskResult("t1", "bash", m.SUCCEEDED, stdout=bytes(4 << 20), stderr=bytes(4 << 20),
                               value={"files": ["x" * 250] * (RG_OUTPUT_CAP // 256)}))
    assert len(codec.encode(done)) <= limits["data"] < 512 << 20


def test_the_control_socket_routes_replies_and_refuses_unknown_clients(wire) -> None:
    ctx, endpoints = wire
    control = channels.bind_control(ctx, endpoints, max_message_size=1 << 16, sndhwm=4)
    assert control.getsockopt(zmq.SNDHWM) == 4 and control.getsockopt(zmq.MAXMSGSIZE) == 1 << 16
    client = ctx.socket(zmq.DEALER)
    client.connect(endpoints.control)
    client.send(codec.encode(m.Ping(7)))
    identity, frame = _recv(control)
    assert codec.decode(frame) == m.Ping(7)
    control.send_multipart([identity, codec.encode(m.Pong(7))])
    assert codec.decode(_recv(client)[0]) == m.Pong(7)
    with pytest.raises(zmq.ZMQError):   # ROUTER_MANDATORY: the outbox counts on a refusal, not a silent drop
        control.send_multipart([b"nobody", codec.encode(m.Pong(8))], zmq.NOBLOCK)
    client.close()
    control.close()


def test_events_reach_a_watcher_by_topic_name(wire) -> None:
    ctx, endpoints = wire
    publisher = events.EventPublisher(channels.bind_events(ctx, endpoints), endpoints)
    watcher = channels.subscribe(ctx, endpoints, ["errors"])
    # A peer that subscribes to a prefix of every topic: never applied, only counted.
    greedy = ctx.socket(zmq.XSUB)
    greedy.connect(endpoints.events)
    greedy.send(b"\x01")
    wait_until(lambda: publisher.on_readable() or (publisher.wanted(b"errors") and publisher.refused == 1), 10,
               "parad to read both subscriptions")
    assert not publisher.wanted(b"progress") and publisher.watchers == 1
    report = m.ErrorReport("bash-1", None, "exception", "boom")
    publisher.publish(b"progress", lambda: m.TaskEvent("t1", "bash-1", "started"))
    publisher.publish(b"errors", lambda: report)
    assert watcher.poll(WAIT_MS)
    assert channels.receive_event(watcher) == ("errors", report)   # progress was never subscribed to
    assert not greedy.poll(0)
    for sock in (greedy, watcher, publisher.sock):
        sock.close(linger=0)


def test_subscriptions_cannot_grow_parad(start_daemon) -> None:
    # Subscriptions to random prefixes grew parad without bound (libzmq's trie and
    # parad's table kept every one: 100,000 of 50 bytes cost ~414 MB) and slowed
    # every event publication. Bounded, the same flood costs parad a few MiB
    # (5-10 measured); the margin is for what a loaded machine adds meanwhile.
    d = start_daemon(daemon={"heartbeat_interval": 0.1, "failure_detection_timeout": 5.0})
    ctx = zmq.Context()
    endpoints = Endpoints(d.runtime_dir)
    try:
        watcher = channels.subscribe(ctx, endpoints, ["metrics"])
        with d.client(timeout=30) as c:
            wait_until(lambda: c.status()["daemon"]["watchers"] >= 1, 20, "the watcher to subscribe")
            proc = psutil.Process(d.pid)
            base = proc.memory_info().rss
            flood = ctx.socket(zmq.XSUB)
            flood.setsockopt(zmq.SNDHWM, 0)
            flood.connect(endpoints.events)
            for i in range(100_000):
                flood.send(b"\x01" + i.to_bytes(4, "big") + os.urandom(50))
            flood.send(b"\x01" + os.urandom(4096))   # past the socket's MAXMSGSIZE: cut off at once
            wait_until(lambda: flood.poll(0) or c.status()["daemon"]["events_refused"] >= 4 * events.MAX_FOREIGN,
                       60, "parad to read the flood")
            flood.close(linger=0)
            grown = proc.memory_info().rss - base
            assert grown < 64 << 20, f"parad grew by {grown / 2**20:.0f} MiB"
            assert c.run("echo", i=1).value == {"i": 1}
            # The watcher, cut off with the flood, came back by itself.
            while watcher.poll(0):
                watcher.recv_multipart()
            wait_until(lambda: watcher.poll(100) and channels.receive_event(watcher)[0] == "metrics", 30,
                       "a heartbeat to reach the watcher again")
            assert c.status()["daemon"]["watchers"] >= 1
    finally:
        ctx.destroy(linger=0)


def test_wire_names_are_defined_once_in_ipc() -> None:
    assert channels.TOPIC_NAMES == tuple(t.decode() for t in channels.TOPICS)
    assert events.TOPICS is channels.TOPICS and watch.TOPICS is channels.TOPIC_NAMES
    assert children.CHILD is channels.CHILD_PREFIX
    assert children.split_owner(children.owner_for("bash-1", b"abc")) == ("bash-1", b"abc")


def _handlers(cls: type) -> dict[type, object]:
    # The tables are built from bound methods alone, so a bare instance shows them.
    return (cls._handlers if cls is ClientRequests else cls._command_handlers)(object.__new__(cls))


def test_every_client_request_has_its_handler() -> None:
    table = _handlers(ClientRequests)
    assert set(table) == set(channels.CLIENT_REQUESTS)
    assert len({handler.__func__ for handler in table.values()}) == len(table)   # one method each


def test_every_command_a_worker_takes_has_its_handler() -> None:
    assert set(_handlers(Worker)) == set(channels.COMMAND.down)
