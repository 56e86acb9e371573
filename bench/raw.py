"""The raw pyzmq peers of the echo rounds (bench/peers.py), and a client socket to each."""

from __future__ import annotations

import time
from pathlib import Path

import msgpack
import zmq

from peers import Peers
from stats import percentile

RAW_WINDOW = 2048   # messages in flight for the raw pipelined reference (= para's MAP_WINDOW)


PAYLOAD = {"tool": "echo", "args": {"x": 1}}   # what the raw peers carry: about a TaskSpec's size


class RawPeers:
    """The raw pyzmq peers of the echo rounds (bench/peers.py), each in a child process."""

    def __init__(self, tmp: Path) -> None:
        self.rep_path = str(tmp / "raw-rep.sock")
        self.router_path = str(tmp / "raw-router.sock")
        self.relay_path = str(tmp / "raw-relay.sock")
        backend_path = str(tmp / "raw-backend.sock")
        self.peers = Peers()
        try:
            self.peers.start("rep", self.rep_path)
            self.peers.start("router", self.router_path)
            relay = self.peers.start("relay", self.relay_path, backend_path, wait=False)
            self.peers.start("backend", backend_path)
            self.peers.ready(relay)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.peers.stop()


class RawSocket:
    """A client socket to one raw peer."""

    def __init__(self, path: str, kind: int) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(kind)
        for opt, value in ((zmq.LINGER, 0), (zmq.SNDHWM, 0), (zmq.RCVHWM, 0)):
            self.sock.setsockopt(opt, value)
        self.sock.connect("ipc://" + path)

    def latency_round(self, n: int) -> tuple[float, float]:
        sock, pack, unpack, clock = self.sock, msgpack.packb, msgpack.unpackb, time.perf_counter
        samples = []
        for _ in range(n):
            t = clock()
            sock.send(pack(PAYLOAD))
            unpack(sock.recv())
            samples.append(clock() - t)
        samples.sort()
        return percentile(samples, 50), percentile(samples, 99)

    def pipelined_round(self, n: int) -> float:
        """n messages with up to RAW_WINDOW in flight, one message per send (no batching)."""
        sock, pack, unpack = self.sock, msgpack.packb, msgpack.unpackb
        t = time.perf_counter()
        sent = received = 0
        while received < n:
            while sent < n and sent - received < RAW_WINDOW:
                sock.send(pack(PAYLOAD))
                sent += 1
            unpack(sock.recv())
            received += 1
        return time.perf_counter() - t

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()
