"""The floor of para's shape for commands: a bare relay in front of bare spawners.

    client (DEALER, pipelined, like Client.map)
      -> relay (ROUTER in front, ROUTER behind; hands each task to an idle
         spawner, one at a time, as parad does with credit 1)
      -> spawner x N (DEALER): posix_spawn `bash -c CMD` in a session of its
         own with every signal at its default, stdout and stderr on pipes read
         to EOF, waitpid, reply with the exit status and the output

The relay and spawners are the spawn-relay and spawner roles of bench/peers.py.
All of it pyzmq and msgpack, with nothing else: no admission, scheduler,
sandbox, limits, tree kill, heartbeats, result types or event loop timers.
Any design in which a Python supervisor relays each task to a Python worker
pays at least this much, so a target below this floor is out of reach of the
design, not only of para's code. bench/run.py measures it in the same rounds
as para and xargs.
"""

from __future__ import annotations

import time
from pathlib import Path

import msgpack
import zmq

from peers import Peers

WINDOW = 2048   # tasks in flight, as Client.map keeps
SILENCE = 30.0  # seconds without a reply after which a round gives up


class SpawnFloor:
    """The relay and its spawners as child processes; `round(n)` runs n `bash -c true` through them."""

    def __init__(self, tmp: Path, workers: int) -> None:
        import psutil

        front, back = str(tmp / "floor-front.sock"), str(tmp / "floor-back.sock")
        self.peers = Peers()
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        try:
            relay = self.peers.start("spawn-relay", front, back, str(workers), wait=False)
            for _ in range(workers):
                self.peers.start("spawner", back)
            self.peers.ready(relay)
            for opt, value in ((zmq.LINGER, 0), (zmq.SNDHWM, 0), (zmq.RCVHWM, 0)):
                self.sock.setsockopt(opt, value)
            self.sock.connect("ipc://" + front)
            self._ps = [psutil.Process(p.pid) for p in self.peers.procs]
        except BaseException:
            self.stop()
            raise
        self.total = {"client": 0.0, "relay": 0.0, "spawners": 0.0, "commands": 0.0}
        self.tasks = 0

    def _cpu(self) -> dict[str, float]:
        times = [p.cpu_times() for p in self._ps]
        return {
            "client": time.process_time(),
            "relay": times[0].user + times[0].system,
            "spawners": sum(t.user + t.system for t in times[1:]),
            "commands": sum(t.children_user + t.children_system for t in times[1:]),
        }

    def round(self, n: int) -> float:
        """Seconds to run n tasks with up to WINDOW in flight; every one must exit 0."""
        sock, pack, unpack = self.sock, msgpack.packb, msgpack.unpackb
        before = self._cpu()
        t = time.perf_counter()
        sent = received = 0
        while received < n:
            while sent < n and sent - received < WINDOW:
                sock.send(pack({"id": sent, "command": "true"}))
                sent += 1
            if not sock.poll(SILENCE * 1000):
                raise RuntimeError(f"floor: no reply for {SILENCE:g}s ({received} of {n} back; "
                                   f"exited: {', '.join(self.peers.exited()) or 'none'})")
            reply = unpack(sock.recv())
            if reply["exit"] != 0:
                raise RuntimeError(f"floor: bash -c true exited {reply['exit']}: {reply['stderr'][-300:]!r}")
            received += 1
        dt = time.perf_counter() - t
        after = self._cpu()
        for k in self.total:
            self.total[k] += after[k] - before[k]
        self.tasks += n
        return dt

    def per_task_us(self) -> dict[str, float]:
        return {k: round(v / max(self.tasks, 1) * 1e6, 1) for k, v in self.total.items()}

    def stop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.ctx.term()
            self.sock = None
        self.peers.stop()
