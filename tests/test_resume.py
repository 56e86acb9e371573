"""Clients that outlive their parad: SIGKILL a real parad while a client waits, start another
on the same runtime and state directories, and see the client reconnect by itself.

Without a journal the client ends with an error that says the task's fate is
unknown; with one it gets its tasks back (or submits again those parad never
acknowledged) and every wait completes. Client timeouts are small (1 s) so
that a silent parad is noticed quickly; `reconnect` gives the new one time to start.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
import zmq

from para.client import AsyncClient, Client, DaemonUnavailable, NotFound
from para.client import core
from para.ipc import codec
from para.ipc import messages as m
from para.ipc.endpoints import Endpoints
from para.testing import FAST, Daemon, alive, daemons_serving, stop_and_check, wait_running, wait_until

POOLS = {"echo": {"min_workers": 1, "max_workers": 2}, "bash": {"min_workers": 2, "max_workers": 4}}
FAST_CLIENT = {"timeout": 2.0, "reconnect": 60.0}   # 1 s was too short for a Hello on a loaded machine



class Restarts:
    """parads one after another on one runtime dir and one state dir, as a restarted service is."""

    def __init__(self, make_daemon: Callable[..., Daemon], tmp: Path, config: dict[str, Any]) -> None:
        self.make, self.tmp, self.config = make_daemon, tmp, config
        self.started: list[Daemon] = []

    @property
    def current(self) -> Daemon:
        return self.started[-1]

    def start(self) -> Daemon:
        runtime_dir = self.current.runtime_dir if self.started else None
        if self.started:   # the same directory (so the same state dir); keep the killed one's log
            self.current.log_path.rename(self.tmp / f"parad.{len(self.started)}.log")
        self.started.append(self.make(self.config, self.tmp, runtime_dir=runtime_dir))
        return self.current

    def kill(self) -> None:
        """SIGKILL the current parad; wait until every process of its tree has gone."""
        d = self.current
        d.tree()
        os.kill(d.pid, signal.SIGKILL)
        d.proc.wait(timeout=30)
        wait_until(lambda: not d.leftovers(), 30, f"processes {d.leftovers()} of the killed parad to end")

    def close(self) -> None:
        for d in self.started[:-1]:
            if d.proc.poll() is None:
                d.stop()
        if self.started and self.current.proc.poll() is None:
            stop_and_check(self.current)
        elif self.started:   # the last one was killed: its socket files stay behind
            self.current.stop()
            shutil.rmtree(self.current.runtime_dir, ignore_errors=True)


@pytest.fixture
def restarts(make_daemon: Callable[..., Daemon], tmp_path: Path) -> Iterator[Callable[..., Restarts]]:
    """restarts(durability) -> a Restarts with its first parad running; every parad stopped after the test."""
    made: list[Restarts] = []

    def start(durability: str) -> Restarts:
        daemon = dict(FAST) | {"journal": {"durability": durability}}
        r = Restarts(make_daemon, tmp_path / f"r{len(made)}", {"daemon": daemon, "pools": POOLS})
        made.append(r)
        r.start()
        return r

    yield start
    for r in made:
        r.close()


def kill_and_restart_when(r: Restarts, running: int, what: str) -> None:
    """Once `running` tasks run (seen by a client of our own, and kept so by the journal, if there is
    one), SIGKILL parad and start another. A start that may run again is committed after it leaves:
    killed before that, parad would not count it (its task runs again as the same attempt)."""
    with r.current.client() as c:
        wait_until(lambda: len([t for t in c.ps() if t["state"] == "running"]) >= running, 30, what)
    if r.config["daemon"]["journal"]["durability"] != "off":
        count = "SELECT count(*) FROM tasks WHERE state = 'running'"
        wait_until(lambda: r.current.journal_rows(count)[0][0] >= running, 30, f"{what}, as the journal keeps it")
    r.kill()
    r.start()


def in_thread(call: Callable[[], Any]) -> Any:
    """Run `call` (a client's whole life) in a thread; its Future."""
    pool = ThreadPoolExecutor(1)
    future = pool.submit(call)
    pool.shutdown(wait=False)
    return future


# ---- without a journal: a clear end, never a hang ---------------------------------------

def test_without_a_journal_a_waiting_run_ends_saying_parad_restarted(restarts) -> None:
    r = restarts("off")

    def client_life() -> None:
        with Client(r.current.runtime_dir, **FAST_CLIENT) as c:
            c.run("bash", command="sleep 30")

    waiting = in_thread(client_life)
    kill_and_restart_when(r, 1, "the sleep to run")
    with pytest.raises(DaemonUnavailable, match="restarted without a journal.*fate is unknown"):
        waiting.result(timeout=120)
    with r.current.client() as c:  # the new parad serves, and ran nothing twice
        assert c.ps() == []


@pytest.mark.parametrize("timeout", [FAST_CLIENT["timeout"], float("inf")])
def test_a_client_idle_through_the_restart_learns_it_from_the_pong(restarts, monkeypatch, timeout: float) -> None:
    # Its socket reconnects to the new parad by itself, which answers its pings: before, it waited on.
    # With timeout=inf no wait gives up, but a quiet parad is still pinged every PING_EVERY seconds;
    # before, such a client never pinged, and waited for ever.
    monkeypatch.setattr(core, "PING_EVERY", 0.5)
    r = restarts("off")
    with Client(r.current.runtime_dir, timeout=timeout, reconnect=60.0) as c:
        future = c.submit("bash", command="sleep 30")
        wait_running(c, future.id)
        r.kill()
        r.start()
        with pytest.raises(DaemonUnavailable, match="restarted without a journal.*fate is unknown"):
            future.result(timeout=30)
        assert c.run("echo", x=1).ok   # and it goes on with the new parad


def test_an_async_client_without_a_timeout_learns_of_the_restart_too(restarts, monkeypatch) -> None:
    monkeypatch.setattr(core, "PING_EVERY", 0.5)
    r = restarts("off")

    async def client_life() -> None:
        async with AsyncClient(r.current.runtime_dir, timeout=float("inf"), reconnect=60.0) as c:
            task = await c.submit("bash", command="sleep 30")
            await asyncio.get_running_loop().run_in_executor(None, kill_and_restart_when, r, 1, "the sleep to run")
            with pytest.raises(DaemonUnavailable, match="restarted without a journal.*fate is unknown"):
                await task.result(timeout=30)

    asyncio.run(asyncio.wait_for(client_life(), 120))


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_hello_read_by_a_parad_that_died_is_sent_again(make_daemon, tmp_path: Path, kind: str) -> None:
    # A parad that read the Hello and died before answering, played by a ROUTER that reads it and
    # closes. The client's socket reconnects to the next parad by itself, but only a Hello sent
    # again reaches it: before, the client waited its whole timeout (here 60 s) for the Welcome.
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    endpoints = Endpoints(runtime)
    endpoints.lock_path.write_text(f"{os.getpid()}\n")   # a live pid, as a running parad leaves
    ctx = zmq.Context()
    silent = ctx.socket(zmq.ROUTER)
    silent.bind(f"ipc://{endpoints.control_path}")

    def client_life() -> Any:
        with Client(runtime, timeout=60.0, autostart=False) as c:
            return c.run("echo", x=1).value

    async def async_life() -> Any:
        async with AsyncClient(runtime, timeout=60.0, autostart=False) as c:
            return (await c.run("echo", x=1)).value

    waiting = in_thread(client_life if kind == "sync" else lambda: asyncio.run(async_life()))
    try:
        assert silent.poll(30_000), "the client's Hello never came"
        assert isinstance(codec.decode(silent.recv_multipart()[-1]), m.Hello)
    finally:
        silent.close(linger=0)
        ctx.term()
    endpoints.control_path.unlink(missing_ok=True)
    d = make_daemon({"daemon": FAST, "pools": POOLS}, tmp_path, runtime_dir=runtime)
    try:
        assert waiting.result(timeout=30) == {"x": 1}
    finally:
        stop_and_check(d)


def test_an_async_client_waiting_through_the_restart_ends_the_same_way(restarts) -> None:
    r = restarts("off")

    async def client_life() -> None:
        async with AsyncClient(r.current.runtime_dir, **FAST_CLIENT) as c:
            task = await c.submit("bash", command="sleep 30")
            await asyncio.get_running_loop().run_in_executor(None, kill_and_restart_when, r, 1, "the sleep to run")
            with pytest.raises(DaemonUnavailable, match="restarted without a journal.*fate is unknown"):
                await task.result(timeout=30)
            assert (await c.run("echo", x=1)).ok

    asyncio.run(asyncio.wait_for(client_life(), 120))


def test_without_a_journal_a_wait_by_id_ends_not_found(restarts) -> None:
    r = restarts("off")
    with r.current.client() as c:
        task_id = c.submit("bash", command="sleep 30").id
    connected, go = threading.Event(), threading.Event()

    def client_life() -> None:
        with Client(r.current.runtime_dir, **FAST_CLIENT) as c:
            connected.set()
            go.wait(30)
            c.result(task_id)

    waiting = in_thread(client_life)
    assert connected.wait(30)
    # The wait's Await reaches a parad that will never answer it, then that parad dies: the
    # wait resumes as any wait does, it does not fail as an unanswered request would.
    os.kill(r.current.pid, signal.SIGSTOP)
    go.set()
    r.kill()   # (SIGKILL ends a stopped process too)
    r.start()
    with pytest.raises(NotFound, match=f"knows no task '{task_id}'"):
        waiting.result(timeout=120)


def test_the_async_client_ends_the_same_way(restarts) -> None:
    r = restarts("off")

    async def client_life() -> None:
        async with AsyncClient(r.current.runtime_dir, **FAST_CLIENT) as c:
            results = [r async for r in c.map("bash", [{"command": "sleep 30"}] * 2, return_exceptions=True)]
        for result in results:
            assert isinstance(result, DaemonUnavailable) and "restarted without a journal" in str(result)

    waiting = in_thread(lambda: asyncio.run(asyncio.wait_for(client_life(), 120)))
    kill_and_restart_when(r, 2, "both sleeps to run")
    waiting.result(timeout=130)


def test_when_no_parad_comes_back_the_client_says_how_long_it_waited(restarts) -> None:
    r = restarts("off")

    def client_life() -> None:
        with Client(r.current.runtime_dir, timeout=1.0, reconnect=1.5) as c:
            c.run("bash", command="sleep 30")

    waiting = in_thread(client_life)
    with r.current.client() as c:
        wait_running(c)
    r.kill()
    with pytest.raises(DaemonUnavailable, match=r"not answering at .*silent for .*none answered there within 1.5s"):
        waiting.result(timeout=120)


# ---- with a journal: every wait completes --------------------------------------------------

def test_a_run_survives_a_restart_and_returns_its_result(restarts, tmp_path: Path) -> None:
    r = restarts("batched")
    marks = tmp_path / "marks"

    def client_life():
        with Client(r.current.runtime_dir, **FAST_CLIENT) as c:
            return c.run("bash", command=f"echo start >> {marks}; sleep 3; echo end >> {marks}; echo ok", retries=1)

    waiting = in_thread(client_life)
    wait_until(lambda: marks.exists() and marks.read_text() == "start\n", 30, "the command to start")
    r.kill()
    r.start()
    result = waiting.result(timeout=120)
    assert (result.status, result.stdout, result.attempts) == ("succeeded", "ok\n", 2)
    assert marks.read_text() == "start\nstart\nend\n"   # killed once with parad, then run to its end once


def test_a_wait_by_id_survives_a_restart(restarts) -> None:
    r = restarts("batched")
    with r.current.client() as c:
        task_id = c.submit("bash", command="sleep 2; echo by-id", retries=1).id

    connected = threading.Event()

    def client_life():
        with Client(r.current.runtime_dir, **FAST_CLIENT) as c:
            connected.set()
            return c.result(task_id)

    waiting = in_thread(client_life)
    # Greeted first: a Hello that the kill cuts off fails the Client as any unanswered request does.
    assert connected.wait(30)
    kill_and_restart_when(r, 1, "the sleep to run")
    assert waiting.result(timeout=120).stdout == "by-id\n"


def test_a_map_in_progress_completes_across_a_restart(restarts, tmp_path: Path, monkeypatch) -> None:
    # 128 tasks (one Submit) finish at the first parad, which is killed; the other 72 are sent while
    # no parad runs. The client, with autostart, starts the next parad itself (same config and state
    # dir), which never knew the 72: the client submits them again, and they run there once.
    r = restarts("batched")
    first = r.current
    autostarted_from(first, tmp_path, monkeypatch)
    halfway, killed = threading.Event(), threading.Event()

    def args() -> Iterator[dict[str, int]]:
        for i in range(200):
            if i == 150:
                halfway.set()
                killed.wait(60)
            yield {"i": i}

    def client_life():
        with Client(first.runtime_dir, timeout=1.0, reconnect=60.0, autostart=True) as c:
            return [result.value for result in c.map("echo", args())]

    waiting = in_thread(client_life)
    try:
        assert halfway.wait(60)
        with first.client() as c:
            wait_until(lambda: c.status()["tasks"].get("succeeded", 0) >= 128, 30, "the first 128 tasks to finish")
        r.kill()
        killed.set()
        assert waiting.result(timeout=120) == [{"i": i} for i in range(200)]
        with first.client() as c:   # the autostarted parad ran only the 72 it never knew
            assert c.status()["tasks"].get("succeeded") == 72
    finally:
        killed.set()
        stop_autostarted(first.runtime_dir)


def autostarted_from(d: Daemon, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make a parad that a client autostarts run as `d` does: its config, its state dir."""
    config, state = tmp / "xdg-config" / "para", tmp / "xdg-state"
    config.mkdir(parents=True)
    state.mkdir()
    shutil.copy(d.config_path, config / "parad.yaml")
    (state / "para").symlink_to(d.state_dir)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config.parent))
    monkeypatch.setenv("XDG_STATE_HOME", str(state))


def stop_autostarted(runtime_dir: Path) -> None:
    """Stop the parad a client started on `runtime_dir`, and wait until its tree has gone."""
    for pid in daemons_serving(runtime_dir):
        pids = [pid, *(p.pid for p in psutil.Process(pid).children(recursive=True))]
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not any(alive(p) for p in pids), 30, "the autostarted parad and its processes to exit")


def test_an_async_run_survives_a_restart(restarts) -> None:
    r = restarts("batched")

    async def client_life():
        async with AsyncClient(r.current.runtime_dir, **FAST_CLIENT) as c:
            run = asyncio.create_task(c.run("bash", command="sleep 3; echo async", retries=1))
            await asyncio.get_running_loop().run_in_executor(None, kill_and_restart_when, r, 1, "the sleep to run")
            return await run

    result = asyncio.run(asyncio.wait_for(client_life(), 120))
    assert (result.stdout, result.attempts) == ("async\n", 2)


def test_a_batch_in_progress_completes_across_a_restart(restarts) -> None:
    r = restarts("batched")
    spec = {"tasks": [
        {"id": "first", "tool": "bash", "args": {"command": "sleep 2; echo first"}, "retries": 1},
        {"id": "then", "tool": "echo", "args": {"got": "${first.stdout}"}, "after": ["first"]},
    ]}

    def client_life():
        with Client(r.current.runtime_dir, **FAST_CLIENT) as c:
            return c.batch(spec).results(timeout=120)

    waiting = in_thread(client_life)
    kill_and_restart_when(r, 1, "the batch's first task to run")
    results = waiting.result(timeout=130)
    assert results["first"].stdout == "first\n" and results["first"].attempts == 2
    assert results["then"].value == {"got": "first"}   # references are stripped of the trailing newline


def test_a_submit_that_failed_is_not_submitted_again_by_a_later_resume(restarts) -> None:
    r = restarts("batched")
    with Client(r.current.runtime_dir, **FAST_CLIENT) as c:
        os.kill(r.current.pid, signal.SIGSTOP)   # the Submit waits in its socket, never read
        with pytest.raises(DaemonUnavailable, match=f"waited {FAST_CLIENT['timeout']:g}s for the daemon's answer"):
            c.submit("echo", orphan=True)
        r.kill()
        r.start()
        # Quiet long enough to ping: the Pong names the new parad, and the client resumes.
        assert c.run("bash", command="sleep 2; echo ok").stdout == "ok\n"
        assert c.ps() == [] and c.status()["tasks"].get("succeeded") == 1   # the failed submit never ran
