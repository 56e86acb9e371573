"""Ray and Dask as peers of the bench, each driven from a child process of its own.

The framework's driver lives in a child (bench/peers_ray.py, bench/peers_dask.py),
not in the bench process: its threads would otherwise count as the para
client's CPU, and a framework that hangs or leaves processes behind is easier
to clean up from outside. The child speaks a line protocol on stdin/stdout:

    -> "ready VERSION" once the cluster is up, or "skip WHY" (not installed)
    <- "tput N"  -> "SECONDS"      N `subprocess.run(["bash", "-c", "true"])` tasks
    <- "lat N"   -> "P50 P99"      N no-op remote calls, one at a time (seconds)
    <- EOF       -> it shuts the cluster down and exits

`FrameworkPeer.stop` closes stdin, waits, then kills whatever is left of the
child's process tree (recorded while it ran: the framework's daemons and
workers), so no process outlives the bench.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from stats import percentile

HERE = Path(__file__).resolve().parent
START_DEADLINE = 120.0   # seconds for a cluster to come up
REPLY_DEADLINE = 600.0   # seconds for one round's answer
STOP_DEADLINE = 30.0     # seconds for a clean shutdown before the tree is killed


class FrameworkPeer:
    """One framework's driver child; `skipped` says why it is not measured, else None."""

    def __init__(self, module: str, workers: int, tmp: Path) -> None:
        self.name = module
        self.version = ""
        self.skipped: str | None = None
        self._seen: dict[int, object] = {}
        self._busy = True   # starting, or a request is out: stopped now, it is interrupted, not shut down
        self._stderr_path = tmp / f"{module}.stderr"
        with open(self._stderr_path, "wb") as err:
            # A session of its own: what the framework starts stays findable as one tree.
            self.proc = subprocess.Popen([sys.executable, str(HERE / f"{module}.py"), str(workers), str(tmp)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                         start_new_session=True, env={**os.environ, **QUIET_ENV})
        try:
            line = self._reply(START_DEADLINE)
        except BaseException:
            self.stop()
            raise
        self._busy = False
        kind, _, rest = line.partition(" ")
        if kind == "skip":
            self.skipped = rest
            self.stop()
        elif kind == "ready":
            self.version = rest
        else:
            self.stop()
            raise RuntimeError(f"{module}: unexpected start line {line!r}; {self.stderr_tail()}")

    def tput_round(self, n: int) -> float:
        """Seconds for n `bash -c true` tasks, all submitted at once."""
        return float(self._ask(f"tput {n}"))

    def latency_round(self, n: int) -> tuple[float, float]:
        """(p50, p99) seconds of n no-op round trips, one at a time."""
        p50, p99 = self._ask(f"lat {n}").split()
        return float(p50), float(p99)

    def _ask(self, request: str) -> str:
        self._remember_tree()
        self.proc.stdin.write(request.encode() + b"\n")
        self.proc.stdin.flush()
        self._busy = True
        answer = self._reply(REPLY_DEADLINE)
        self._busy = False
        return answer

    def _reply(self, deadline: float) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], deadline)
        line = self.proc.stdout.readline().decode().strip() if ready else ""
        if not line:
            raise RuntimeError(f"{self.name}: no answer within {deadline:g}s (exit {self.proc.poll()}); "
                               f"{self.stderr_tail()}")
        if line.startswith("error "):
            raise RuntimeError(f"{self.name}: {line[6:]}")
        return line

    def _remember_tree(self) -> None:
        import psutil
        try:
            for p in psutil.Process(self.proc.pid).children(recursive=True):
                self._seen.setdefault(p.pid, p)
        except psutil.NoSuchProcess:
            pass

    def stderr_tail(self, n: int = 5) -> str:
        """The child's last stderr lines, for an error message."""
        try:
            lines = self._stderr_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no stderr"
        return "stderr: " + " | ".join(lines[-n:]) if lines else "no stderr"

    def stop(self) -> list[str]:
        """Shut the cluster down; returns the processes that had to be killed (none when clean)."""
        import psutil
        self._remember_tree()
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        killed = []
        try:
            # Interrupted mid-round (an error, Ctrl-C): the driver reads EOF only after the round, so do not wait.
            self.proc.wait(0.1 if self._busy else STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            killed.append(f"{self.name} driver {self.proc.pid}")
            os.killpg(self.proc.pid, signal.SIGKILL)   # its session: whatever it started and we did not see
            self.proc.wait()
        # A helper may outlive the driver by a moment (multiprocessing's resource tracker): give it that.
        # A Process checks its start time, so a reused pid is not taken for it.
        _, alive = psutil.wait_procs(list(self._seen.values()), timeout=3)
        for p in alive:
            try:
                killed.append(f"{p.name()} {p.pid}")
                p.kill()
            except psutil.NoSuchProcess:
                pass
        self.proc.stdout.close()
        return killed


# Telemetry off, no prompts: the bench measures, it does not phone home. No token auth for a
# cluster that lives a minute: Ray would write a token into ~/.ray that outlives the bench.
QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_IMPORT_WARNING": "1", "RAY_AUTH_MODE": "disabled",
             "DASK_DISTRIBUTED__LOGGING__DISTRIBUTED": "error"}


def serve(start: Callable[[int, Path], tuple[str, Callable[[int], None], Callable[[], None], Callable[[], None]]]) -> None:
    """The child's side: `start(workers, tmp)` brings the cluster up and returns
    (version, run_tasks(n), noop_call(), shutdown); then answer requests until EOF."""
    try:
        version, run_tasks, noop, shutdown = start(int(sys.argv[1]), Path(sys.argv[2]))
    except ImportError as exc:
        print(f"skip not installed ({exc.name or exc}); see bench/README.md", flush=True)
        return
    try:
        print(f"ready {version}", flush=True)
        for line in sys.stdin:
            op, n = line.split()
            try:
                print(_answer(op, int(n), run_tasks, noop), flush=True)
            except Exception as exc:  # the parent says it, and stops us
                print(f"error {op}: {type(exc).__name__}: {exc}".replace("\n", " "), flush=True)
    finally:
        shutdown()


def _answer(op: str, n: int, run_tasks: Callable[[int], None], noop: Callable[[], None]) -> str:
    clock = time.perf_counter
    if op == "tput":
        t = clock()
        run_tasks(n)
        return f"{clock() - t:.6f}"
    samples = []
    for _ in range(n):
        t = clock()
        noop()
        samples.append(clock() - t)
    samples.sort()
    return f"{percentile(samples, 50):.9f} {percentile(samples, 99):.9f}"
