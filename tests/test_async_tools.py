"""Async tools (Tool.is_async): one worker serves many tasks at once as coroutines on its event loop.

The tool under test is loaded by module path, as a plugin is; each mode of its `run_async`
shows one part of the contract: overlap, cancel, timeout, failures, streaming, open/close, hangs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

import psutil

from para.client import TaskError
from para.ipc import channels, codec
from para.ipc import messages as m
from para.ipc.endpoints import Endpoints
from para.testing import FAST, Daemon, silent_client, stop_and_check, wait_running, wait_until

FLOOD_CHUNK = 64 << 10   # the tool's CHUNK
FLOOD = 1024             # chunks: 64 MiB, 64 times the clients' output budget

ASYNC_TOOL = '''
import asyncio, os, time
from pathlib import Path
from pydantic import BaseModel, ConfigDict
from para.daemon.tools.base import Finished, Tool, ToolFailure

CHUNK = 64 << 10

class Args(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: str
    n: int = 0
    seconds: float = 0
    path: str = ""
    message: str = ""

class Options(BaseModel):
    marks: str = ""   # a folder where open and close leave their marks

class Waiter(Tool):
    name = "waiter"
    Args = Args
    Options = Options
    is_async = True
    default_credit = 16

    async def open(self, options):
        self.arrived = 0
        self.all_here = asyncio.Event()
        self.marks = Path(options.marks)
        with open(self.marks / f"open.{os.getpid()}", "a") as f:
            f.write("opened\\n")

    async def close(self):
        (self.marks / f"close.{os.getpid()}").write_text(f"{self.arrived}\\n")

    async def run_async(self, args, options, ctx):
        if args.mode == "barrier":   # none returns before all n are in: they can only all finish together
            self.arrived += 1
            if self.arrived >= args.n:
                self.all_here.set()
            await self.all_here.wait()
            return Finished(value={"pid": os.getpid(), "arrived": self.arrived})
        if args.mode == "gate":      # waits for the test to create `path`; leaves marks as it starts and if cancelled
            Path(f"{args.path}.started.{ctx.task_id}").touch()
            try:
                while not os.path.exists(args.path):
                    await asyncio.sleep(0.02)
            except asyncio.CancelledError:
                Path(f"{args.path}.cancelled.{ctx.task_id}").touch()
                raise
            return Finished(value=os.getpid())
        if args.mode == "sleep":
            await asyncio.sleep(args.seconds)
            return Finished(value="slept")
        if args.mode == "raise":
            raise RuntimeError(args.message)
        if args.mode == "unencodable":
            return Finished(value=object())
        if args.mode == "fail":
            raise ToolFailure(args.message)
        if args.mode == "stream":
            for i in range(args.n):
                await ctx.output(f"chunk {i}\\n")
                ctx.progress(i + 1, args.n, "streaming")
                await asyncio.sleep(0)
            return Finished(value=args.n)
        if args.mode == "flood":     # n chunks of CHUNK bytes, each waiting for room
            for i in range(args.n):
                await ctx.output(b"%08d" % i + bytes(CHUNK - 8))
            return Finished(value=args.n)
        if args.mode == "hold":      # blocks the whole loop until the test creates `path`
            Path(args.path + ".held").touch()
            deadline = time.monotonic() + 60
            while not os.path.exists(args.path) and time.monotonic() < deadline:
                time.sleep(0.01)
            return Finished(value="held")
        if args.mode == "block":     # blocks the whole loop: no heartbeat goes out
            time.sleep(args.seconds)
            return Finished(value="blocked")
        raise ToolFailure(f"unknown mode {args.mode}")
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("asyncsite")
    (target / "para_async_tools.py").write_text(ASYNC_TOOL)
    return target


def _start(site: Path, tmp: Path, marks: Path, pools: dict | None = None) -> Daemon:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    tool = {"tool": "para_async_tools:Waiter", "options": {"marks": str(marks)}}
    pools = pools or {"waiter": {**tool, "min_workers": 1, "max_workers": 1},
                      "blocker": {**tool, "min_workers": 1, "max_workers": 1}}
    # A small output budget: a client that does not read has its streams paused after 1 MiB.
    return Daemon({"daemon": {**FAST, "client_output_budget": 1 << 20}, "pools": pools}, tmp, env=env)


@pytest.fixture(scope="module")
def parad(site: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = _start(site, tmp_path_factory.mktemp("parad"), tmp_path_factory.mktemp("marks"))
    yield d
    stop_and_check(d)


def test_credit_tasks_overlap_in_one_worker(parad: Daemon) -> None:
    with parad.client(timeout=60) as c:
        futures = [c.submit("waiter", mode="barrier", n=16, timeout=60) for _ in range(16)]
        results = [f.result(timeout=60) for f in futures]
    assert all(r.status == "succeeded" for r in results)
    assert len({r.value["pid"] for r in results}) == 1 and len({r.worker for r in results}) == 1
    assert all(r.value["arrived"] >= 16 for r in results)


def test_cancel_one_while_others_go_on(parad: Daemon, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    with parad.client(timeout=60) as c:
        futures = [c.submit("waiter", mode="gate", path=str(gate), timeout=60) for _ in range(3)]
        wait_running(c, count=3)
        # Cancelled once its coroutine runs (a cancel that comes first: the same-turn test below).
        wait_until((tmp_path / f"gate.started.{futures[0].id}").exists, 20, "the coroutine to start")
        futures[0].cancel()
        # The coroutine itself saw the cancel (CancelledError at its await).
        wait_until((tmp_path / f"gate.cancelled.{futures[0].id}").exists, 20, "the coroutine to be cancelled")
        gate.touch()
        cancelled = futures[0].result(timeout=60)
        assert (cancelled.status, cancelled.error) == ("cancelled", "cancelled while running")
        assert [f.result(timeout=60).status for f in futures[1:]] == ["succeeded", "succeeded"]


def test_a_cancel_read_in_the_same_turn_as_its_assign_ends_the_task(site: Path, tmp_path: Path) -> None:
    # The worker's loop is held while parad assigns a task and cancels it: the worker
    # reads both in one turn, before the task's coroutine has taken a step.
    tool = {"tool": "para_async_tools:Waiter", "options": {"marks": str(tmp_path)}}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    d = Daemon({"daemon": {**FAST, "failure_detection_timeout": 60},
                "pools": {"waiter": {**tool, "min_workers": 1, "max_workers": 1}}}, tmp_path / "d", env=env)
    try:
        release, gate = tmp_path / "release", tmp_path / "gate"
        with d.client(timeout=60) as c:
            holding = c.submit("waiter", mode="hold", path=str(release), timeout=60)
            wait_until(Path(f"{release}.held").exists, 20, "the worker's loop to be held")
            cancelled = c.submit("waiter", mode="gate", path=str(gate), timeout=60)
            wait_running(c, cancelled.id)     # assigned: the Assign waits in the worker's socket
            cancelled.cancel()                # answered: so does the CancelTask
            release.touch()
            result = cancelled.result(timeout=30)
            assert (result.status, result.error) == ("cancelled", "cancelled while running")
            assert holding.result(timeout=30).value == "held"
            gate.touch()
            # Its credit came back: the worker still takes tasks.
            assert c.run("waiter", mode="gate", path=str(gate), timeout=30).status == "succeeded"
    finally:
        stop_and_check(d)


def test_timeout_ends_timed_out(parad: Daemon) -> None:
    with parad.client(timeout=60) as c:
        with pytest.raises(TaskError) as info:
            c.run("waiter", mode="sleep", seconds=600, timeout=1)
    result = info.value.result
    assert (result.status, result.limit) == ("timed_out", "timeout")
    assert result.error == "timed out after 1s; the tool's coroutine was cancelled"


def test_failing_coroutine_fails_its_task_only(parad: Daemon, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    errors = channels.subscribe(zmq.Context.instance(), Endpoints(parad.runtime_dir), ("errors",))
    try:
        with parad.client(timeout=60) as c:
            wait_until(lambda: c.status()["daemon"]["watchers"] >= 1, 10, "parad to see the watcher")
            waiting = c.submit("waiter", mode="gate", path=str(gate), timeout=60)
            wait_running(c, waiting.id)
            with pytest.raises(TaskError) as raised:
                c.run("waiter", mode="raise", message="the coroutine broke on purpose")
            assert raised.value.result.error == "waiter raised RuntimeError: the coroutine broke on purpose"
            with pytest.raises(TaskError) as failed:
                c.run("waiter", mode="fail", message="nothing to fetch at that address")
            assert failed.value.result.error == "nothing to fetch at that address"
            with pytest.raises(TaskError) as unencodable:
                c.run("waiter", mode="unencodable")
            assert "waiter raised TypeError" in unencodable.value.result.error
            gate.touch()
            survivor = waiting.result(timeout=60)
            assert survivor.status == "succeeded" and survivor.worker == raised.value.result.worker
        reports = []
        def reported() -> bool:
            while errors.poll(0):
                reports.append(channels.receive_event(errors)[1])
            return any(r.kind == "exception" and "on purpose" in r.message for r in reports)
        wait_until(reported, 10, "the exception's ErrorReport")
    finally:
        errors.close(linger=0)


def test_streamed_chunks_arrive_in_order_with_progress(parad: Daemon) -> None:
    watcher = channels.subscribe(zmq.Context.instance(), Endpoints(parad.runtime_dir), ("progress",))
    try:
        with parad.client(timeout=60) as c:
            wait_until(lambda: c.status()["daemon"]["watchers"] >= 1, 10, "parad to see the watcher")
            future = c.submit("waiter", mode="stream", n=200, stream=True, timeout=60)
            streamed = b"".join(chunk.data for chunk in c.stream(future))
            assert future.result().value == 200
        assert streamed.decode() == "".join(f"chunk {i}\n" for i in range(200))
        progress = []
        def seen() -> bool:
            while watcher.poll(0):
                _, event = channels.receive_event(watcher)
                if event.task_id == future.id and event.kind == "progress":
                    progress.append(event.info["done"])
            return len(progress) == 200
        wait_until(seen, 10, "every progress event")
        assert progress == list(range(1, 201))
    finally:
        watcher.close(linger=0)


def test_output_of_a_task_whose_client_does_not_read_waits_in_the_coroutine(parad: Daemon) -> None:
    ctx = zmq.Context()
    slow = silent_client(ctx, parad.runtime_dir)
    spec = m.TaskSpec("flood-1", "waiter", {"mode": "flood", "n": FLOOD}, timeout=120, stream=True)
    try:
        with parad.client(timeout=60) as c:
            worker = psutil.Process(next(w["pid"] for w in parad.workers("waiter")))
            base = worker.memory_info().rss
            slow.send(codec.encode(m.Submit(1, [spec])))
            wait_until(lambda: c.status()["output"]["paused_tasks"] == 1, 60, "the flood's output to be paused")
            # The worker's other tasks go on meanwhile; each is a turn of its loop in which an
            # unpaused flood would have sent more.
            for _ in range(20):
                assert c.run("waiter", mode="sleep", seconds=0, timeout=30).value == "slept"
            held = c.status()["output"]["backlog_bytes"]
            assert [t["id"] for t in c.ps() if t["state"] == "running"] == ["flood-1"]
            grown = worker.memory_info().rss - base
        # The slow client reads now: every chunk comes, in order, then the result.
        received, result = [], None
        while result is None:
            assert slow.poll(60_000), f"the flood stalled after {len(received)} chunks"
            for part in codec.split(slow.recv()):
                msg = codec.decode(part)
                if isinstance(msg, m.Chunk):
                    received.append(msg.data)
                elif isinstance(msg, m.Done):
                    result = msg.result
    finally:
        slow.close()
        ctx.term()
    print(f"paused: parad held {held / 2**20:.1f} MiB, the worker grew {grown / 2**20:.1f} MiB, of a {FLOOD * FLOOD_CHUNK >> 20} MiB stream")
    assert held < 16 << 20, f"parad held {held >> 20} MiB of a paused stream"
    assert grown < 32 << 20, f"the worker grew by {grown >> 20} MiB holding a paused stream"
    assert result.status == "succeeded" and result.value == FLOOD
    data = b"".join(received)
    assert len(data) == FLOOD * FLOOD_CHUNK
    assert [data[i * FLOOD_CHUNK:i * FLOOD_CHUNK + 8] for i in range(FLOOD)] == [b"%08d" % i for i in range(FLOOD)]


def test_loop_blocked_past_detection_is_killed_as_hung(parad: Daemon) -> None:
    with parad.client(timeout=60) as c:
        with pytest.raises(TaskError) as info:
            c.run("blocker", mode="block", seconds=3 * FAST["failure_detection_timeout"], timeout=60)
    assert info.value.result.status == "lost" and "heartbeat" in info.value.result.error
    wait_until(lambda: parad.pool("blocker")["ready"] == 1, 30, "a new blocker worker")


def test_open_once_per_worker_and_close_at_stop(site: Path, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    pools = {"waiter": {"tool": "para_async_tools:Waiter", "options": {"marks": str(marks)},
                        "min_workers": 2, "max_workers": 2}}
    d = _start(site, tmp_path / "parad", marks, pools)
    try:
        with d.client(timeout=60) as c:
            futures = [c.submit("waiter", mode="sleep", seconds=0.1, timeout=60) for _ in range(8)]
            assert all(f.result(timeout=60).status == "succeeded" for f in futures)
        pids = {str(w["pid"]) for w in d.workers("waiter")}
        assert not list(marks.glob("close.*"))   # not before the worker stops
    finally:
        stop_and_check(d)
    # Each worker opened once, before its first task, and closed once, after its last.
    opened = {p.name.split(".")[1]: p.read_text() for p in marks.glob("open.*")}
    assert opened == {pid: "opened\n" for pid in pids}
    assert {p.name.split(".")[1] for p in marks.glob("close.*")} == pids


def test_a_tool_that_cannot_open_never_gets_a_task(site: Path, tmp_path: Path) -> None:
    # No marks folder: open() raises. Each worker reports why and ends before it is ready.
    pools = {"waiter": {"tool": "para_async_tools:Waiter", "options": {"marks": str(tmp_path / "missing")},
                        "min_workers": 0, "max_workers": 1}}
    d = _start(site, tmp_path / "parad", tmp_path / "missing", pools)
    try:
        with d.client(timeout=60) as c:
            task = c.submit("waiter", mode="sleep", seconds=0, timeout=60)
            wait_until(lambda: "waiter.open raised FileNotFoundError" in d.log(), 30, "the open failure in parad's log")
            assert "the worker cannot serve: fix the tool or its pool's options" in d.log()
            assert d.pool("waiter")["ready"] == 0
            assert [t["state"] for t in c.ps() if t["id"] == task.id] == ["queued"]
    finally:
        stop_and_check(d)
