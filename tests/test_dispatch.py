"""Credit-based dispatch: idle workers get work before busy ones queue more."""

from __future__ import annotations

import zmq

from para.daemon.config import load_config
from para.daemon.core import Core
from para.daemon.dispatch import Dispatcher
from para.daemon.pool import READY, WorkerHandle
from para.daemon.tasks import TaskRecord
from para.ipc import channels, codec
from para.ipc import messages as m
from para.ipc.endpoints import Endpoints
from para.testing import wait_until


def test_a_task_never_waits_behind_a_long_one_while_a_worker_is_idle(start_daemon) -> None:
    # Credit 2 lets a worker hold a second task; the dispatcher must still pick the idle worker.
    d = start_daemon(pools={"bash": {"min_workers": 2, "max_workers": 2, "credit": 2}})
    with d.client() as c:
        long = c.submit("bash", command="sleep 300")
        busy = wait_until(lambda: next((w["id"] for w in c.workers() if w["tasks"]), None), what="the long task to run")
        quick = c.submit("bash", command="echo quick").result(timeout=60)
        assert quick.ok and quick.worker != busy
        assert not long.done()
        c.cancel(long)
        assert long.result(timeout=30).status == "cancelled"


def test_pipelined_tasks_spread_over_the_pool(start_daemon) -> None:
    d = start_daemon(pools={"echo": {"min_workers": 2, "max_workers": 2, "credit": 64}})
    with d.client() as c:
        results = list(c.map("echo", ({"i": i} for i in range(2000))))
    assert [r.value["i"] for r in results] == list(range(2000))
    assert {r.worker for r in results} == {"echo-1", "echo-2"}


class CommandPort:
    """The core's ports with only the worker command channel: what dispatch uses."""

    def __init__(self, sock: zmq.Socket) -> None:
        self.sock = sock

    def to_worker(self, worker_id: str, *messages: object) -> bool:
        return channels.send_to_worker(self.sock, worker_id, messages)

    def watched(self, topic: bytes) -> bool:
        return False


def test_a_large_credit_goes_out_in_frames_a_worker_accepts(tmp_path) -> None:
    # A worker refuses a batch of more than codec.MAX_BATCH_FRAMES: parad must
    # cut a worker's share into BATCH_FRAMES runs, whatever the credit.
    endpoints = Endpoints(tmp_path)
    endpoints.worker_dir.mkdir()
    ctx = zmq.Context()
    try:
        socks = channels.bind_worker_channels(ctx, endpoints)
        end = channels.WorkerEnd(ctx, endpoints, "echo-1")
        end.send("command", m.Ready("echo-1", 1, 5000))
        assert socks["command"].poll(10_000) and socks["command"].recv_multipart()  # now routable
        core = Core(load_config(None), ports=CommandPort(socks["command"]))
        pool = core.pools["echo"]
        worker = pool.workers["echo-1"] = WorkerHandle("echo-1", "echo", state=READY, credit=5000)
        for i in range(3000):
            pool.queue.push(TaskRecord(m.TaskSpec(f"t{i}", "echo", {}), "echo", None, 1))
        Dispatcher(core).run(pool)
        assert len(worker.tasks) == 3000 and worker.credit == 2000
        sizes, ids = [], []
        while len(ids) < 3000:
            assert end.command.poll(10_000), f"only {len(ids)} of 3000 assignments arrived"
            parts = codec.split(end.command.recv())
            sizes.append(len(parts))
            ids += [codec.decode(part).task.id for part in parts]
        assert ids == [f"t{i}" for i in range(3000)]
        assert max(sizes) <= codec.BATCH_FRAMES and len(sizes) == 3
    finally:
        ctx.destroy(linger=0)
