"""parad's loop never waits while a message waits: daemon/poller.py's epoll over the
sockets' notification descriptors, which go quiet once asked or sent on, and a real
parad whose loop leaves messages for the next turn."""

from __future__ import annotations

import os
import select
import signal
from pathlib import Path

import pytest
import zmq

from para.daemon.poller import Poller
from para.daemon.supervisor import DATA_BATCH
from para.ipc.endpoints import Endpoints
from para.testing import bad_frames, wait_until


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def _pair(ctx: zmq.Context, tmp_path: Path, kind: int, peer_kind: int) -> tuple[zmq.Socket, zmq.Socket]:
    ours, peer = ctx.socket(kind), ctx.socket(peer_kind)
    ours.bind(f"ipc://{tmp_path}/s.sock")
    if peer_kind == zmq.DEALER:
        peer.setsockopt(zmq.IDENTITY, b"peer")
    peer.connect(f"ipc://{tmp_path}/s.sock")
    return ours, peer


def _drain(sock: zmq.Socket) -> int:
    count = 0
    while sock.poll(0):
        sock.recv_multipart()
        count += 1
    return count


def test_poller_finds_messages_left_after_a_partial_read(ctx, tmp_path) -> None:
    pull, push = _pair(ctx, tmp_path, zmq.PULL, zmq.PUSH)
    poller = Poller()
    try:
        poller.add_socket(pull)
        assert poller.poll(0) == set()
        for i in range(10):
            push.send(b"%d" % i)
        assert wait_until(lambda: pull in poller.poll(100), 10, "the first message announced")
        pull.recv()
        poller.recheck(pull)   # what the loop does when a drain stops at its limit
        assert pull in poller.poll(10_000)
        assert _drain(pull) >= 1
        assert pull not in poller.poll(0)
    finally:
        poller.close()


def test_poller_finds_a_message_a_send_took_the_notice_of(ctx, tmp_path) -> None:
    router, dealer = _pair(ctx, tmp_path, zmq.ROUTER, zmq.DEALER)
    poller = Poller()
    try:
        poller.add_socket(router)
        dealer.send(b"hello")
        wait_until(lambda: router in poller.poll(100), 10, "the dealer's hello")
        _drain(router)
        assert router not in poller.poll(0)
        dealer.send(b"request")
        fd = router.get(zmq.FD)
        wait_until(lambda: select.select([fd], [], [], 0.1)[0], 10, "the request's notice")
        router.send_multipart([b"peer", b"reply"])   # may read the notice: the descriptor goes quiet
        poller.recheck(router)                       # so the loop asks after every send
        assert router in poller.poll(10_000)
        assert router.recv_multipart() == [b"peer", b"request"]
    finally:
        poller.close()


def test_plain_descriptors_are_polled_too(ctx, tmp_path) -> None:
    r, w = os.pipe()
    poller = Poller()
    try:
        poller.add_fd(r)
        assert poller.poll(0) == set()
        os.write(w, b"x")
        assert poller.poll(10_000) == {r}
        poller.remove_fd(r)
        assert poller.poll(0) == set()
    finally:
        poller.close()
        os.close(r)
        os.close(w)


def test_a_flood_on_a_quiet_worker_channel_is_read_to_the_end(daemon) -> None:
    """More frames wait on the data channel than one turn reads, and nothing else comes:
    the turns that follow read the rest without a new message to wake them."""
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    try:
        push.connect(Endpoints(daemon.runtime_dir).worker("data"))
        before = bad_frames(daemon).get("worker_data", 0)
        push.send(b"not a para frame")
        wait_until(lambda: bad_frames(daemon).get("worker_data", 0) == before + 1, 20, "the first frame read")
        flood = 5 * DATA_BATCH
        os.kill(daemon.pid, signal.SIGSTOP)   # so they all wait at once when parad goes on
        try:
            for _ in range(flood):
                push.send(b"not a para frame")
            wait_until(lambda: push.get(zmq.EVENTS) & zmq.POLLOUT, 10, "the frames queued")
        finally:
            os.kill(daemon.pid, signal.SIGCONT)
        wait_until(lambda: bad_frames(daemon).get("worker_data", 0) == before + 1 + flood, 20,
                   f"parad to read all {flood} frames of the flood")
    finally:
        push.close(linger=0)
        ctx.term()
