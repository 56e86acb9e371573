"""The floor of para's shape for commands: a bare relay in front of bare spawners.

    client (DEALER, pipelined, like Client.map)
      -> relay (ROUTER in front, ROUTER behind; hands each task to an idle
         spawner, one at a time, as parad does with credit 1)
      -> spawner x N (DEALER): posix_spawn `bash -c CMD` in a session of its
         own with every signal at its default, stdout and stderr on pipes read
         to EOF, waitpid, reply with the exit status and the output

All of it pyzmq and msgpack, with nothing else: no admission, scheduler,
sandbox, limits, tree kill, heartbeats, result types or event loop timers.
Any design in which a Python supervisor relays each task to a Python worker
pays at least this much, so a target below this floor is out of reach of the
design, not only of para's code. bench/run.py measures it in the same rounds
as para and xargs.
"""

from __future__ import annotations

import select
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import zmq

PEER = r'''
import collections, os, shutil, signal, sys, threading
import msgpack, zmq
role, path = sys.argv[1], sys.argv[2]
ctx = zmq.Context()
def sock(kind, where, bind):
    s = ctx.socket(kind)
    s.setsockopt(zmq.LINGER, 0); s.setsockopt(zmq.SNDHWM, 0); s.setsockopt(zmq.RCVHWM, 0)
    (s.bind if bind else s.connect)("ipc://" + where)
    return s
def watch_stdin():
    sys.stdin.read()
    os._exit(0)
threading.Thread(target=watch_stdin, daemon=True).start()
pack, unpack = msgpack.packb, msgpack.unpackb
if role == "spawner":
    s = sock(zmq.DEALER, path, False)
    s.send(b"hello")
    bash = shutil.which("bash")
    if bash is None:
        sys.exit("floor spawner: bash is not on PATH")
    env = {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8"}
    default = set(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}
    print("ready", flush=True)
    while True:
        frames = s.recv_multipart()
        task = unpack(frames[-1])
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            pid = os.posix_spawn(bash, ["bash", "-c", task["command"]], env, setsid=True, setsigdef=default,
                                 file_actions=[(os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)])
        except OSError as exc:
            for fd in (out_r, out_w, err_r, err_w):
                os.close(fd)
            frames[-1] = pack({"id": task["id"], "exit": -1, "stdout": b"", "stderr": str(exc).encode()})
            s.send_multipart(frames)
            continue
        os.close(out_w)
        os.close(err_w)
        output = {}
        for name, fd in (("stdout", out_r), ("stderr", err_r)):
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            os.close(fd)
            output[name] = b"".join(chunks)
        _, status = os.waitpid(pid, 0)
        frames[-1] = pack({"id": task["id"], "exit": os.waitstatus_to_exitcode(status), **output})
        s.send_multipart(frames)
elif role == "relay":
    front = sock(zmq.ROUTER, path, True)
    back = sock(zmq.ROUTER, sys.argv[3], True)
    back.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a dead spawner is an error, not a silent drop
    idle = [back.recv_multipart()[0] for _ in range(int(sys.argv[4]))]
    print("ready", flush=True)
    waiting = collections.deque()
    poller = zmq.Poller(); poller.register(front, zmq.POLLIN); poller.register(back, zmq.POLLIN)
    while True:
        ready = dict(poller.poll())
        if front in ready:
            while True:
                try:
                    waiting.append(front.recv_multipart(zmq.NOBLOCK))
                except zmq.Again:
                    break
        if back in ready:
            while True:
                try:
                    spawner, client, payload = back.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                front.send_multipart([client, payload])
                idle.append(spawner)
        while idle and waiting:
            client, payload = waiting.popleft()
            back.send_multipart([idle.pop(), client, payload])
'''

WINDOW = 2048   # tasks in flight, as Client.map keeps
SILENCE = 30.0  # seconds without a reply after which a round gives up


class SpawnFloor:
    """The relay and its spawners as child processes; `round(n)` runs n `bash -c true` through them."""

    def __init__(self, tmp: Path, workers: int) -> None:
        import psutil

        front, back = str(tmp / "floor-front.sock"), str(tmp / "floor-back.sock")
        self.procs: list[subprocess.Popen] = []
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        try:
            relay = self._start("relay", front, back, str(workers))
            for _ in range(workers):
                self._ready(self._start("spawner", back))
            self._ready(relay)
            for opt, value in ((zmq.LINGER, 0), (zmq.SNDHWM, 0), (zmq.RCVHWM, 0)):
                self.sock.setsockopt(opt, value)
            self.sock.connect("ipc://" + front)
            self._ps = [psutil.Process(p.pid) for p in self.procs]
        except BaseException:
            self.stop()
            raise
        self.total = {"client": 0.0, "relay": 0.0, "spawners": 0.0, "commands": 0.0}
        self.tasks = 0

    def _start(self, *argv: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", PEER, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.procs.append(proc)
        return proc

    @staticmethod
    def _ready(proc: subprocess.Popen, deadline: float = 30.0) -> None:
        ready, _, _ = select.select([proc.stdout], [], [], deadline)
        if not ready or proc.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"floor peer {proc.args[3:]} failed to start")

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
                dead = [p.args[3] for p in self.procs if p.poll() is not None]
                raise RuntimeError(f"floor: no reply for {SILENCE:g}s ({received} of {n} back; "
                                   f"exited: {', '.join(dead) or 'none'})")
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
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    proc.stdin.close()
                    proc.wait(5)
                except (OSError, subprocess.TimeoutExpired):
                    proc.kill()
                    proc.wait()
            proc.stdout.close()
        self.procs = []
