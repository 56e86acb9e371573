"""The raw peers of the benches: pyzmq and msgpack in child processes, with no para code.

Roles (argv[1]; argv[2] is the socket path, ipc://):

- rep: answers REQ round trips;
- router: answers pipelined DEALER traffic;
- relay PATH BACKEND: forwards bytes client -> backend -> client (ROUTER in
  front, ROUTER behind), as parad does client -> worker -> client;
- backend: answers for relay;
- spawn-relay PATH BACK N: hands each task to one of N idle spawners, one
  task at a time each (as credit 1 does), queueing the rest;
- spawner: posix_spawns `bash -c CMD` in a session of its own with every
  signal at its default, reads its stdout and stderr to EOF, waitpids and
  replies with the exit status and the output.

Each answering server msgpack-decodes and re-encodes what it answers, as a
real one would; none uses a poller but the relays. Each child says "ready"
on stdout and exits when its parent closes its stdin.
"""

from __future__ import annotations

import select
import subprocess
import sys

SCRIPT = r'''
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
def drain(s):
    while True:
        try:
            yield s.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
if role == "rep":
    s = sock(zmq.REP, path, True)
    print("ready", flush=True)
    while True:
        s.send(pack(unpack(s.recv())))
elif role in ("router", "backend"):
    s = sock(zmq.ROUTER, path, True) if role == "router" else sock(zmq.DEALER, path, False)
    if role == "backend":
        s.send(b"hello")
    print("ready", flush=True)
    while True:
        frames = s.recv_multipart()
        frames[-1] = pack(unpack(frames[-1]))
        s.send_multipart(frames)
elif role == "relay":
    front = sock(zmq.ROUTER, path, True); back = sock(zmq.ROUTER, sys.argv[3], True)
    backend, _hello = back.recv_multipart()
    print("ready", flush=True)
    poller = zmq.Poller(); poller.register(front, zmq.POLLIN); poller.register(back, zmq.POLLIN)
    while True:
        ready = dict(poller.poll())
        if front in ready:
            for client, payload in drain(front):
                back.send_multipart([backend, client, payload])
        if back in ready:
            for _, client, payload in drain(back):
                front.send_multipart([client, payload])
elif role == "spawner":
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
elif role == "spawn-relay":
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
            waiting.extend(drain(front))
        if back in ready:
            for spawner, client, payload in drain(back):
                front.send_multipart([client, payload])
                idle.append(spawner)
        while idle and waiting:
            client, payload = waiting.popleft()
            back.send_multipart([idle.pop(), client, payload])
'''


class Peers:
    """Raw peer processes, stopped together."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, *argv: str, wait: bool = True) -> subprocess.Popen:
        """Start a peer (role, path, ...); wait for its "ready" unless `wait` is False."""
        proc = subprocess.Popen([sys.executable, "-c", SCRIPT, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.procs.append(proc)
        if wait:
            self.ready(proc)
        return proc

    @staticmethod
    def ready(proc: subprocess.Popen, deadline: float = 30.0) -> None:
        waiting, _, _ = select.select([proc.stdout], [], [], deadline)
        if not waiting or proc.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"raw peer {' '.join(proc.args[3:5])} failed to start")

    def exited(self) -> list[str]:
        """Roles of the peers that have exited."""
        return [p.args[3] for p in self.procs if p.poll() is not None]

    def stop(self) -> None:
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
