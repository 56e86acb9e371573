"""Streamed stdin: `paractl bash` forwards a stdin that is not a terminal, as it arrives,
and the clients' write_stdin does the same; memory stays bounded by the input window
whatever the command does with its stdin, and input reaches only the sender's own task."""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import zmq

from para.client import AsyncClient, InvalidRequest
from para.ipc import codec
from para.ipc import messages as m
from para.ipc.channels import INPUT_WINDOW
from para.testing import Daemon, paractl, paractl_argv, silent_client, wait_until

MB = 1_000_000
POOLS = {"bash": {"min_workers": 1, "max_workers": 1}, "echo": {"min_workers": 1}}


@pytest.fixture
def parad(start_daemon) -> Daemon:
    return start_daemon(pools=POOLS)


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and line[len(name)] in " {")


def _piped(parad: Daemon, producer: str, *paractl_args: str, cwd: Path | None = None) -> subprocess.Popen:
    """`PRODUCER | paractl ARGS` in a shell, running."""
    command = shlex.join(paractl_argv("--runtime-dir", str(parad.runtime_dir), "--no-autostart", *paractl_args))
    return subprocess.Popen(["bash", "-c", f"set -o pipefail; {producer} | {command}"], cwd=cwd,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class Peaks:
    """The highest RSS of parad and of its bash worker (from its heartbeats) seen by `sample()`, over their start."""

    def __init__(self, parad: Daemon, client) -> None:
        self.parad = psutil.Process(parad.pid)
        self.client = client
        self.worker = lambda: max(w["rss"] for w in client.workers() if w["pool"] == "bash")  # noqa: E731
        wait_until(self.worker, 20, "the bash worker's first heartbeat")
        self.base, self.worker_base = self.parad.memory_info().rss, self.worker()
        self.peak, self.worker_peak = self.base, self.worker_base

    def sample(self) -> None:
        self.peak = max(self.peak, self.parad.memory_info().rss)
        self.worker_peak = max(self.worker_peak, self.worker())

    def grown(self) -> tuple[float, float]:
        """(parad's, the worker's) growth in MiB."""
        return (self.peak - self.base) / 2**20, (self.worker_peak - self.worker_base) / 2**20


def _run_sampled(proc: subprocess.Popen, peaks: Peaks, timeout: float = 120) -> tuple[str, str]:
    def over() -> bool:
        peaks.sample()
        return proc.poll() is not None
    try:
        wait_until(over, timeout, "paractl to finish")
        return proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# ---- paractl ---------------------------------------------------------------------

def test_piped_stdin_reaches_the_command(parad: Daemon, tmp_path: Path) -> None:
    proc = _piped(parad, "echo hi", "bash", "--", "cat", cwd=tmp_path)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out) == (0, "hi\n"), err
    r = paractl(parad, "bash", "--", 'read a; read b; echo "$b $a"', input="one\ntwo\n", cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, "two one\n"), r.stderr
    # A file on stdin goes too; -n (as ssh -n) keeps it back.
    (tmp_path / "in.txt").write_text("from a file\n")
    with open(tmp_path / "in.txt") as f:
        assert paractl(parad, "bash", "--", "cat", stdin=f, cwd=tmp_path).stdout == "from a file\n"
    with open(tmp_path / "in.txt") as f:
        r = paractl(parad, "bash", "-n", "--", "wc", "-c", stdin=f, cwd=tmp_path)
    assert (r.returncode, r.stdout.strip()) == (0, "0"), r.stderr


def test_20mb_of_stdin_arrive_whole_and_parad_stays_small(parad: Daemon, tmp_path: Path) -> None:
    with parad.client() as c:
        peaks = Peaks(parad, c)
        proc = _piped(parad, f"head -c {20 * MB} /dev/zero", "bash", "--", "wc", "-c", cwd=tmp_path)
        out, err = _run_sampled(proc, peaks)
        forwarded = _metric(c.metrics(), "para_input_bytes_total")
    grown, worker_grown = peaks.grown()
    print(f"20 MB through wc -c: parad grew {grown:.1f} MiB, the worker {worker_grown:.1f} MiB")
    assert (proc.returncode, out.strip()) == (0, str(20 * MB)), err
    assert forwarded == 20 * MB
    assert grown < 16, f"parad's RSS grew {grown:.0f} MiB passing on 20 MB of stdin"
    assert worker_grown < 16, f"the worker's RSS grew {worker_grown:.0f} MiB"


def test_a_command_that_never_reads_stdin_holds_back_the_sender_not_memory(parad: Daemon, tmp_path: Path) -> None:
    with parad.client() as c:
        peaks = Peaks(parad, c)
        proc = _piped(parad, f"head -c {50 * MB} /dev/zero", "bash", "--", "sleep", "2", cwd=tmp_path)
        out, err = _run_sampled(proc, peaks)
        text = c.metrics()
    grown, worker_grown = peaks.grown()
    forwarded = _metric(text, "para_input_bytes_total")
    print(f"50 MB into sleep 2: {forwarded / 2**20:.2f} MiB passed on; parad grew {grown:.1f} MiB, "
          f"the worker {worker_grown:.1f} MiB")
    # SIGPIPE ends the producer (head) once paractl leaves: the pipeline's status is 141, paractl's 0.
    assert proc.returncode in (0, 141) and "paractl" not in err, err
    # What crossed is the window and what the pipe holds (the command never read): not 50 MB.
    assert 0 < forwarded <= INPUT_WINDOW + (1 << 20)
    assert grown < 16, f"parad's RSS grew {grown:.0f} MiB"
    assert worker_grown < 16, f"the worker's RSS grew {worker_grown:.0f} MiB"
    assert _metric(text, 'para_tasks_total{pool="bash",status="succeeded"}') >= 1


def test_stdin_from_a_terminal_is_not_forwarded_but_a_pipe_is(parad: Daemon, tmp_path: Path) -> None:
    try:
        leader, follower = os.openpty()
    except OSError as exc:
        pytest.skip(f"no pseudo-terminal on this host: {exc}")
    try:
        os.write(leader, b"typed at the terminal\n")
        # Forwarded, `wc -c` would wait for an EOF that a terminal never sends here.
        r = paractl(parad, "bash", "--", "wc", "-c", stdin=follower, cwd=tmp_path, timeout=60)
    finally:
        os.close(follower)
        os.close(leader)
    assert (r.returncode, r.stdout.strip()) == (0, "0"), r.stderr
    r = paractl(parad, "bash", "--", "wc", "-c", input="abc", cwd=tmp_path)
    assert (r.returncode, r.stdout.strip()) == (0, "3"), r.stderr


def test_a_nested_paractl_forwards_its_piped_stdin_through_its_parent(start_daemon, tmp_path: Path) -> None:
    # Inside a command, the child client's Input goes through its worker's relay. Started
    # where paractl runs, so parent and child share parad's workspace and its warm workers.
    parad = start_daemon(pools={"bash": {"min_workers": 2, "max_workers": 2}}, cwd=tmp_path)
    inner = shlex.join(paractl_argv("bash", "--", "tr", "a-z", "A-Z"))
    r = paractl(parad, "bash", "--", f"printf 'from the parent\\n' | {inner}", cwd=tmp_path, timeout=120)
    assert (r.returncode, r.stdout) == (0, "FROM THE PARENT\n"), r.stderr


# ---- the clients ---------------------------------------------------------------------

def test_client_write_stdin_in_chunks_then_eof(parad: Daemon) -> None:
    with parad.client() as c:
        future = c.submit("bash", command="wc -c; echo done", stdin_stream=True)
        for _ in range(5):
            assert c.write_stdin(future, b"x" * (3 * MB)) is True
        assert c.write_stdin(future, b"", eof=True) is True
        assert future.result().stdout == f"{15 * MB}\ndone\n"
        with pytest.raises(ValueError, match="stdin_stream=True"):
            c.write_stdin(c.submit("bash", command="true"), b"x")


def test_client_stream_forwards_a_file_as_it_is_read(parad: Daemon, tmp_path: Path) -> None:
    source = tmp_path / "lines"
    source.write_bytes(b"".join(b"line %d\n" % i for i in range(100_000)))
    with parad.client() as c, open(source, "rb") as f:
        future = c.submit("bash", command="tr a-z A-Z", stdin_stream=True, stream=True)
        got = b"".join(chunk.data for chunk in c.stream(future, stdin=f))
        assert future.result().exit_code == 0
    assert got == source.read_bytes().upper()


def test_input_waits_in_the_client_until_the_command_starts(parad: Daemon) -> None:
    with parad.client() as c:
        busy = c.submit("bash", command="sleep 1")   # the pool's one worker: the next task queues
        future = c.submit("bash", command="cat", stdin_stream=True)
        assert c.write_stdin(future, b"early\n", eof=True) is True
        assert busy.result().ok
        assert future.result().stdout == "early\n"


def test_write_stdin_to_a_command_that_ends_returns_false(parad: Daemon) -> None:
    with parad.client() as c:
        future = c.submit("bash", command="sleep 2", stdin_stream=True)
        # 50 MB: the window fills, the command never reads; once it ends the rest is dropped.
        assert c.write_stdin(future, bytes(50 * MB), eof=True) is False
        assert future.result().ok
        assert _metric(c.metrics(), "para_input_bytes_total") <= INPUT_WINDOW + (1 << 20)


def test_async_client_write_stdin(parad: Daemon) -> None:
    async def main() -> tuple[str, bool]:
        async with AsyncClient(parad.runtime_dir) as c:
            task = await c.submit("bash", command="wc -c", stdin_stream=True)
            for _ in range(4):
                assert await c.write_stdin(task, b"y" * (5 * MB)) is True
            assert await c.write_stdin(task, eof=True) is True
            out = (await task).stdout
            ended = await c.submit("bash", command="true", stdin_stream=True)
            await ended
            return out, await c.write_stdin(ended, b"late", eof=True)
    out, late = asyncio.run(main())
    assert out == f"{20 * MB}\n"
    assert late is False   # the task ended: nothing is sent


# ---- refusals ---------------------------------------------------------------------

def _raw_client(ctx: zmq.Context, parad: Daemon) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"ipc://{parad.runtime_dir}/control.sock")
    sock.send(codec.encode(m.Hello("raw", os.getpid())))
    assert isinstance(_answer(sock, lambda msg: True), m.Welcome)
    return sock


def _answer(sock: zmq.Socket, wanted: Callable[[object], bool]) -> object:
    def read() -> object | None:
        if not sock.poll(100):
            return None
        return next((msg for msg in map(codec.decode, codec.split(sock.recv())) if wanted(msg)), None)
    return wait_until(read, 20, "parad's answer")


def test_input_for_another_clients_task_is_refused_and_counted(parad: Daemon) -> None:
    ctx = zmq.Context()
    other = _raw_client(ctx, parad)
    try:
        with parad.client() as c:
            future = c.submit("bash", command="cat", stdin_stream=True)
            assert c.write_stdin(future, b"mine\n") is True   # its stdin is open: input would be taken
            other.send(codec.encode(m.Input(7, future.id, b"theirs\n", eof=True)))
            ack = _answer(other, lambda msg: isinstance(msg, m.InputAck))
            assert ack.task_id == future.id and ack.written == 0 and ack.error
            assert "no such task of this client" in ack.error
            assert c.write_stdin(future, eof=True) is True
            assert future.result().stdout == "mine\n"
            assert _metric(c.metrics(), 'para_input_refused_total{reason="not_owner"}') == 1
    finally:
        other.close()
        ctx.term()


def test_hostile_input_frames_are_refused_with_a_reason(start_daemon) -> None:
    parad = start_daemon(pools={"bash": {"min_workers": 2, "max_workers": 2}})
    ctx = zmq.Context()
    raw = _raw_client(ctx, parad)
    try:
        with parad.client() as c:
            # Wrong types: the frame is refused whole, as a protocol error.
            raw.send(codec.encode(m.Input(1, "t", "text, not bytes")))   # type: ignore[arg-type]
            reply = _answer(raw, lambda msg: isinstance(msg, m.ErrorReply))
            assert reply.code == m.E_PROTOCOL and "Input.data is str" in reply.message
            # Input for a task that is not running, or that does not stream its stdin.
            raw.send(codec.encode(m.Input(2, "no-such-task", b"x")))
            assert "no such task" in _answer(raw, lambda msg: isinstance(msg, m.InputAck)).error
            raw.send(codec.encode(m.Submit(3, [m.TaskSpec("plain", "bash", {"command": "sleep 30"})])))
            wait_until(lambda: any(t["id"] == "plain" and t["state"] == "running" for t in c.ps()), 20, "plain to run")
            raw.send(codec.encode(m.Input(4, "plain", b"x")))
            assert "stdin_stream" in _answer(raw, lambda msg: isinstance(msg, m.InputAck)).error
            # Past the window: more than INPUT_WINDOW bytes unacknowledged.
            raw.send(codec.encode(m.Submit(5, [m.TaskSpec("streamed", "bash", {"command": "sleep 30", "stdin_stream": True})])))
            assert _answer(raw, lambda msg: isinstance(msg, m.InputAck)).written == 0   # its stdin is open
            raw.send(codec.encode(m.Input(6, "streamed", bytes(INPUT_WINDOW + 1))))
            ack = _answer(raw, lambda msg: isinstance(msg, m.InputAck) and msg.error)
            assert f"more than {INPUT_WINDOW} bytes" in ack.error
            # A streamed stdin cannot be retried: the first attempt consumed it.
            with pytest.raises(InvalidRequest, match="cannot be retried"):
                c.run("bash", command="cat", stdin_stream=True, retries=1)
            with pytest.raises(InvalidRequest, match="not both"):
                c.run("bash", command="cat", stdin="x", stdin_stream=True)
            text = c.metrics()
            c.cancel("plain", "streamed")
        for reason in ("not_running", "not_streaming", "window"):
            assert _metric(text, f'para_input_refused_total{{reason="{reason}"}}') == 1, reason
        assert _metric(text, 'para_bad_frames_total{socket="control"}') >= 1
    finally:
        raw.close()
        ctx.term()


def test_input_still_flows_from_a_client_that_is_no_longer_answered(start_daemon) -> None:
    """Past twice its output budget a client's requests go unanswered (outbox.py), but an
    Input dropped would cut its command's stdin short: it is still passed on."""
    d = start_daemon(daemon={"client_output_budget": 1 << 20}, pools=POOLS)
    ctx = zmq.Context()
    slow = silent_client(ctx, d.runtime_dir)
    try:
        with d.client() as c:
            big = c.run("bash", command=f"head -c {MB} /dev/zero")
            slow.send(codec.encode(m.Submit(1, [m.TaskSpec("counted", "bash", {"command": "wc -c", "stdin_stream": True})])))
            assert _answer(slow, lambda msg: isinstance(msg, m.InputAck)).written == 0   # its stdin is open
            queries = iter(range(2, 10_000))
            last = {"backlog": 0.0, "since": time.monotonic()}

            def held_past_twice_its_budget() -> bool:
                # Answers it will not read fill its socket's queues, then its outbox; once those
                # queues are full the outbox stops changing, and stays past twice its budget.
                backlog = _metric(c.metrics(), "para_client_backlog_bytes")
                if backlog != last["backlog"]:
                    last.update(backlog=backlog, since=time.monotonic())
                if backlog <= 2 << 20:
                    for _ in range(5):
                        slow.send(codec.encode(m.Query(next(queries), "task", big.id)))
                    return False
                return time.monotonic() - last["since"] > 0.5
            wait_until(held_past_twice_its_budget, 60, "the silent client to hold twice its budget unread, steadily")
            dropped = _metric(c.metrics(), "para_client_requests_dropped_total")
            slow.send(codec.encode(m.Input(1, "counted", b"x" * 1000, eof=True)))
            result = wait_until(lambda: c.task("counted")["result"], 30, "the task to end on its EOF")
            assert _metric(c.metrics(), "para_client_requests_dropped_total") > dropped   # still not answered
        assert result.stdout == "1000\n"
    finally:
        slow.close()
        ctx.term()
