"""parad's memory is bounded by bytes: a client that does not read stops its
own commands (backpressure) instead of growing parad, and finished results
are retained up to a byte cap."""

from __future__ import annotations

import sys
import threading
import time

import psutil
import pytest
import zmq

from para.client import InvalidRequest, QueueFull
from para.daemon.outbox import BATCH_BYTES
from para.ipc import codec
from para.ipc.channels import DATA_HWM
from para.ipc import messages as m
from para.sandbox.command import READ_SIZE
from para.testing import silent_client, wait_until

MB = 1_000_000
TASKS = 200
# What parad may hold here: the 16 MB budget, 16 running results, 16 MB of data frames in
# flight from workers and 4 MB queued in zmq; twice that for copies and the allocator.
RSS_GROWTH_CAP = 100 << 20


class RssSampler:
    """Samples a process's resident memory every 20 ms on a thread; `peak` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.NoSuchProcess:
                return
            self._stop.wait(0.02)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and line[len(name)] in " {")


def _finished_in(scrape: str) -> int:
    return int(_metric(scrape, 'para_tasks_total{pool="bash",status="succeeded"}'))


def _finished(c) -> int:
    return _finished_in(c.metrics())


def test_a_client_that_does_not_read_stops_its_commands_not_parad(start_daemon) -> None:
    # Results of a client's running tasks still arrive while it is over budget: what parad
    # may hold for it is its budget plus workers x credit results (the outbox's docstring).
    # Credit 4 on 4 workers keeps that part at 16 MB; the default 32 would allow 128 MB.
    d = start_daemon(pools={"echo": {"min_workers": 1, "max_workers": 2},
                            "bash": {"min_workers": 2, "max_workers": 4, "credit": 4}})
    ctx = zmq.Context()
    slow = silent_client(ctx, d.runtime_dir)
    ids = [f"slow-{i}" for i in range(TASKS)]
    tasks = [m.TaskSpec(i, "bash", {"command": f"head -c {MB} /dev/zero"}, stream=True) for i in ids]
    try:
        with RssSampler(d.pid) as rss, d.client(timeout=30) as c:
            base = rss.proc.memory_info().rss
            slow.send(codec.encode(m.Submit(1, tasks)))
            # Today's parad runs all 200 and holds their 400 MB of output; a bounded
            # one pauses the slow client's commands with its budget full.
            wait_until(lambda: _finished(c) == TASKS or _metric(c.metrics(), "para_clients_over_budget") > 0,
                       60, "every task to finish, or the slow client to be over its output budget")
            # One scrape, one loop turn: what had finished, and what was running and so may still finish.
            scrape = c.metrics()
            held_while_paused = _finished_in(scrape)
            running_while_paused = int(_metric(scrape, 'para_tasks_running{pool="bash"}'))
            # Another client's calls go on meanwhile.
            for i in range(50):
                assert c.run("echo", i=i, timeout=10).value == {"i": i}
            finished_while_paused = _finished(c)
            peak_while_paused = rss.peak
            backlog = _metric(c.metrics(), "para_client_backlog_bytes")
            # Now the slow client reads: every result comes, complete.
            chunks = {i: 0 for i in ids}
            done: dict[str, m.TaskResult] = {}
            deadline = time.monotonic() + 60
            while len(done) < TASKS:
                if time.monotonic() > deadline:
                    pytest.fail(f"the slow client received {len(done)} of {TASKS} results within 60s")
                if not slow.poll(1000):
                    continue
                for part in codec.split(slow.recv()):
                    msg = codec.decode(part)
                    if isinstance(msg, m.Chunk):
                        chunks[msg.task_id] += len(msg.data)
                    elif isinstance(msg, m.Done):
                        done[msg.result.id] = msg.result
            peak = rss.peak
    finally:
        slow.close()
        ctx.term()
    print(f"parad RSS: {base / 2**20:.0f} MiB at start, peak {peak_while_paused / 2**20:.0f} MiB "
          f"while the slow client did not read, {peak / 2**20:.0f} MiB in all")
    assert peak - base < RSS_GROWTH_CAP, f"parad's RSS grew by {(peak - base) / 2**20:.0f} MiB"
    assert finished_while_paused < TASKS, "parad ran every task for a client that reads nothing"
    # Only the tasks already running (up to each worker's credit, most of them paused) may finish.
    assert finished_while_paused - held_while_paused <= running_while_paused, \
        "tasks went on starting for an over-budget client"
    assert 0 < backlog < 64 << 20
    assert all(r.status == "succeeded" and r.stdout_bytes == MB and len(r.stdout) == MB for r in done.values())
    assert chunks == {i: MB for i in ids}, "streamed output was lost"


def test_finished_results_are_retained_up_to_a_byte_cap(start_daemon) -> None:
    """With durability off, in memory (with the journal: test_journal.py)."""
    cap = 1 << 20
    # One worker: results finish in submission order, so the newest finished is the last submitted.
    d = start_daemon(daemon={"finished_task_bytes": cap, "journal": {"durability": "off"}},
                     pools={"echo": {"min_workers": 1, "max_workers": 1}})
    blob = "x" * 100_000
    with d.client() as c:
        futures = [c.submit("echo", n=i, blob=blob) for i in range(40)]
        for f in futures:
            assert f.result(timeout=30).value["n"] == futures.index(f)
        kept = c.status()["retained"]
        assert 0 < kept["bytes"] <= cap and kept["results"] < 40
        assert c.task(futures[-1].id)["result"].value["n"] == 39   # the newest stay queryable
        with pytest.raises(InvalidRequest, match="finished_task_bytes") as refused:
            c.task(futures[0].id)                                     # the oldest are not
        assert refused.value.code == "not_found"


def test_a_client_that_leaves_frees_what_was_held_and_its_commands_finish(start_daemon) -> None:
    d = start_daemon()
    ctx = zmq.Context()
    slow = silent_client(ctx, d.runtime_dir)
    tasks = [m.TaskSpec(f"gone-{i}", "bash", {"command": f"head -c {MB} /dev/zero"}, stream=True) for i in range(40)]
    try:
        slow.send(codec.encode(m.Submit(1, tasks)))
        with d.client() as c:
            wait_until(lambda: c.status()["output"]["clients_over_budget"], 30, "the slow client to be over budget")
            slow.close()
            # Its paused commands resume and its queued tasks run; their output has nobody to go to.
            wait_until(lambda: _finished(c) == len(tasks), 60, "every task of the departed client to finish")
            wait_until(lambda: c.status()["output"] == {"backlog_bytes": 0, "clients_over_budget": 0, "paused_tasks": 0},
                       10, "what was held for the departed client to be freed")
            assert c.task("gone-39")["result"].stdout_bytes == MB   # results stay queryable by id
    finally:
        slow.close()
        ctx.term()


def test_tasks_of_an_over_budget_client_wait_without_holding_workers(start_daemon) -> None:
    """Results alone (no streaming) fill a budget too; the client's queued tasks then wait,
    and the pool does not keep workers for them: it shrinks to min_workers when idle."""
    d = start_daemon(pools={"echo": {"min_workers": 1, "max_workers": 1},
                            "bash": {"min_workers": 1, "max_workers": 4, "idle_timeout": 0.5}})
    ctx = zmq.Context()
    slow = silent_client(ctx, d.runtime_dir)
    tasks = [m.TaskSpec(f"r-{i}", "bash", {"command": f"head -c {MB} /dev/zero"}) for i in range(100)]
    try:
        slow.send(codec.encode(m.Submit(1, tasks)))
        with d.client() as c:
            bash = lambda: next(p for p in c.status()["pools"] if p["name"] == "bash")  # noqa: E731
            wait_until(lambda: c.status()["output"]["clients_over_budget"] and bash()["running"] == 0, 30,
                       "the slow client to be over budget with none of its tasks running")
            wait_until(lambda: bash()["workers"] == 1, 20, "the bash pool to shrink to min_workers")
            assert bash()["queued"] > 0 and c.run("bash", command="echo hi").stdout == "hi\n"
    finally:
        slow.close()
        ctx.term()


def test_a_client_that_fell_behind_gets_its_many_small_answers_in_batches_it_can_decode(start_daemon) -> None:
    """Thousands of small results held for one client go out in batches no larger than a
    receiver accepts (codec.MAX_BATCH_FRAMES), however few bytes they are."""
    d = start_daemon(pools={"echo": {"min_workers": 1, "max_workers": 2}})
    count = codec.MAX_BATCH_FRAMES + 2000
    ctx = zmq.Context()
    late = silent_client(ctx, d.runtime_dir)   # it reads nothing until every result is held for it
    try:
        for start in range(0, count, 128):
            late.send(codec.encode(m.Submit(start, [m.TaskSpec(f"small-{i}", "echo", {"i": i})
                                                    for i in range(start, min(count, start + 128))], ack=False)))
        with d.client() as c:
            wait_until(lambda: _metric(c.metrics(), 'para_tasks_total{pool="echo",status="succeeded"}') >= count,
                       120, f"{count} echo tasks to finish")
        done = set()
        while len(done) < count and late.poll(10_000):
            for part in codec.split(late.recv()):   # raises ProtocolError on a batch over the bound
                msg = codec.decode(part)
                assert isinstance(msg, m.Done), msg
                done.add(msg.result.id)
        assert len(done) == count
    finally:
        late.close()
        ctx.term()


def test_a_client_that_does_not_read_is_not_answered_past_twice_its_budget(start_daemon) -> None:
    """Replies are the one thing a client multiplies at will: 300 queries for one finished
    1 MB result would hold 300 MB for it. Past twice its budget its requests are dropped."""
    d = start_daemon(pools={"echo": {"min_workers": 1, "max_workers": 1}, "bash": {"min_workers": 1, "max_workers": 1}})
    ctx = zmq.Context()
    slow = silent_client(ctx, d.runtime_dir)
    queries = 300
    try:
        with RssSampler(d.pid) as rss, d.client(timeout=30) as c:
            big = c.run("bash", command=f"head -c {MB} /dev/zero")
            assert big.stdout_bytes == MB
            base = rss.proc.memory_info().rss
            for i in range(queries):
                slow.send(codec.encode(m.Query(i + 1, "task", big.id)))
            dropped = lambda: _metric(c.metrics(), "para_client_requests_dropped_total")  # noqa: E731
            # Today's parad answers all 300 into the slow client's outbox; a bounded one stops at ~32 MB.
            wait_until(lambda: dropped() >= queries - 64 or _metric(c.metrics(), "para_client_backlog_bytes") > 128 * MB,
                       30, "the slow client's queries to be dropped, or answered")
            assert c.run("echo", i=1, timeout=10).value == {"i": 1}   # others are served meanwhile
            backlog = _metric(c.metrics(), "para_client_backlog_bytes")
            grown = rss.peak - base
        answered = 0
        while slow.poll(2000):   # it reads now: what was answered arrives, then it is served again
            answered += sum(isinstance(codec.decode(p), m.Reply) for p in codec.split(slow.recv()))
        slow.send(codec.encode(m.Ping(queries + 1)))
        assert slow.poll(10_000), "a client that has read what it was owed is not served again"
        assert [type(codec.decode(p)) for p in codec.split(slow.recv())] == [m.Pong]
    finally:
        slow.close()
        ctx.term()
    print(f"parad RSS grew {grown / 2**20:.0f} MiB; backlog {backlog / 2**20:.0f} MiB; {answered} of {queries} answered")
    assert backlog <= 2 * (16 << 20) + 2 * MB
    assert grown < 64 << 20, f"parad's RSS grew by {grown / 2**20:.0f} MiB for a client that reads nothing"
    assert 0 < answered < queries - 200


def test_many_clients_that_do_not_read_hold_about_the_total_budget_not_one_budget_each(start_daemon) -> None:
    total = 32 << 20
    d = start_daemon(daemon={"client_output_budget": 8 << 20, "output_budget_total": total},
                     pools={"echo": {"min_workers": 1, "max_workers": 1}, "bash": {"min_workers": 4, "max_workers": 4}})
    ctx = zmq.Context()
    clients, tasks = 16, 6
    socks = [silent_client(ctx, d.runtime_dir) for _ in range(clients)]
    try:
        with d.client(timeout=30) as c:
            for n, sock in enumerate(socks):
                sock.send(codec.encode(m.Submit(1, [m.TaskSpec(f"c{n}-{k}", "bash", {"command": f"head -c {3 * MB} /dev/zero"},
                                                               stream=True) for k in range(tasks)])))
            # Each is owed 18 MB. Without a total, a dozen of them hold their own 8 MiB budget
            # (about 130 MiB); with one, those that come after the total passed 32 MiB hold
            # about a message each. It settles when every running command is paused (a worker
            # whose next tasks all belong to clients over budget sits idle) and nothing moves.
            seen: list[tuple] = []

            def settled() -> bool:
                status = c.status()
                running = next(p for p in status["pools"] if p["name"] == "bash")["running"]
                seen.append((status["output"], running))
                return (len(seen) > 1 and seen[-1] == seen[-2] and running > 0
                        and status["output"]["paused_tasks"] == running)
            wait_until(lambda: settled() or _finished(c) == clients * tasks, 60,
                       "every running command to be paused, and the backlog to settle")
            assert c.run("echo", i=1, timeout=10).value == {"i": 1}
            held = c.status()["output"]
    finally:
        for sock in socks:
            sock.close()
        ctx.term()
    print(f"held for {clients} silent clients: {held}")
    # The total, a message for each client, and what was in flight when the commands paused: each
    # of the 4 workers' data channels queues DATA_HWM frames of output (READ_SIZE each) on each side.
    # Seen: 38-71 MiB in 20 runs, with or without the journal; 16 clients at their own budgets: ~130.
    in_flight = 4 * 2 * DATA_HWM * READ_SIZE
    bound = total + clients * BATCH_BYTES + in_flight
    assert held["backlog_bytes"] < bound, f"{held['backlog_bytes'] / 2**20:.0f} MiB held, past {bound / 2**20:.0f}"


def test_queued_tasks_are_bounded_by_bytes(start_daemon) -> None:
    d = start_daemon(pools={"echo": {"min_workers": 1, "max_workers": 1},
                            "bash": {"min_workers": 1, "max_workers": 1, "credit": 1, "max_queue_bytes": 16 << 20}})
    pad = "#" + "x" * MB
    with RssSampler(d.pid) as rss, d.client(timeout=30) as c:
        base = rss.proc.memory_info().rss
        blocker = c.submit("bash", command="sleep 60")
        wait_until(lambda: c.task(blocker.id)["task"]["state"] == "running", 20, "the blocking task to run")
        accepted, refused = [], []
        for _ in range(100):
            try:
                accepted.append(c.submit("bash", command="true " + pad))
            except QueueFull as exc:
                refused.append(str(exc))
        grown = rss.peak - base
        c.cancel(blocker, *accepted)
    assert 10 <= len(accepted) <= 16, f"{len(accepted)} tasks of 1 MB queued against max_queue_bytes 16 MiB"
    assert refused and "max_queue_bytes" in refused[0] and "put large inputs in a file" in refused[0]
    assert grown < 64 << 20, f"parad's RSS grew by {grown / 2**20:.0f} MiB"


def test_batch_tasks_waiting_for_dependencies_count_toward_the_queue_bytes(start_daemon) -> None:
    d = start_daemon(pools={"echo": {"min_workers": 1, "max_workers": 1},
                            "bash": {"min_workers": 1, "max_workers": 1, "credit": 1, "max_queue_bytes": 8 << 20}})
    pad = "#" + "x" * MB
    with d.client(timeout=30) as c:
        h = c.batch({"tasks": [{"id": "first", "tool": "bash", "args": {"command": "sleep 60"}}]
                     + [{"id": f"then{i}", "tool": "bash", "after": ["first"], "args": {"command": "true " + pad}}
                        for i in range(7)]})
        with pytest.raises(QueueFull, match="max_queue_bytes"):
            for _ in range(3):   # 7 MB of batch over 8 tasks: 6.1 MB pending, and room for 2 more of 1 MB
                c.submit("bash", command="true " + pad)
        h.cancel()   # its pending tasks end: their bytes no longer count
        wait_until(lambda: h.progress()["complete"], 20, "the cancelled batch to settle")
        blocker = c.submit("bash", command="sleep 60")
        wait_until(lambda: c.task(blocker.id)["task"]["state"] == "running", 20, "the blocking task to run")
        queued = [c.submit("bash", command="true " + pad) for _ in range(3)]
        c.cancel(blocker, *queued)


NESTED_BIG = '''
import os, zmq
from para.ipc import codec, messages as m
ctx = zmq.Context()
def client():
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(os.environ["PARA_CHILD_ENDPOINT"])
    sock.send(codec.encode(m.Hello("big", os.getpid(), os.environ["PARA_CHILD_TOKEN"])))
    assert sock.poll(60_000), "no answer to Hello"
    sock.recv()
    return sock
big = client()
monitor = big.get_monitor_socket(zmq.EVENT_DISCONNECTED)
big.send(b"\\xa7\\x01" + bytes(64 << 20))
poller = zmq.Poller()
poller.register(big, zmq.POLLIN)
poller.register(monitor, zmq.POLLIN)
ready = dict(poller.poll(60_000))
print("answered" if big in ready else "cut off" if monitor in ready else "nothing")
again = client()   # the relay still serves a client that behaves
again.send(codec.encode(m.Ping(7)))
assert again.poll(60_000)
print(type(codec.decode(again.recv())).__name__)
big.disable_monitor()
ctx.destroy(linger=0)
'''


def test_a_nested_client_frame_past_max_message_size_is_cut_off_at_the_relay(start_daemon, tmp_path) -> None:
    # The worker's relay took a frame of any size and parad held it whole
    # (1.2 GB for a 300 MB frame) before answering too_large.
    d = start_daemon(pools={"bash": {"min_workers": 1, "max_workers": 1}})
    script = tmp_path / "big.py"
    script.write_text(NESTED_BIG)
    with RssSampler(d.pid) as rss, d.client(timeout=30) as c:
        base = rss.proc.memory_info().rss
        r = c.run("bash", command=f"{sys.executable} {script}", timeout=120)
        peak = rss.peak
        after = c.run("bash", command="true", timeout=60)
    print(f"parad RSS {base / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB around a 64 MiB nested frame")
    assert r.ok, r.stderr
    assert peak - base < 32 << 20, f"parad grew by {(peak - base) / 2**20:.0f} MiB for one 64 MiB frame"
    assert r.stdout.split() == ["cut", "off", "Pong"], r.stdout
    assert after.ok and after.worker == r.worker, "the worker that relayed was replaced"
