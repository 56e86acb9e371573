"""Commands run as an unprivileged user (run_as, parad as root): every start succeeds, and nothing privileged leaks.

tests/conftest.py runs the test pools' commands as root; these tests set
run_as themselves, so they need parad to run as root.
"""

from __future__ import annotations

import os
import pwd
from collections import Counter
from pathlib import Path

import pytest

from para.sandbox.probe import probe

HOST = probe()
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="run_as applies only when parad runs as root")
needs_namespaces = pytest.mark.skipif(not HOST.namespaces, reason=f"no namespace isolation here: {HOST.namespaces_error}")
needs_nobody = pytest.mark.skipif(not any(u.pw_name == "nobody" for u in pwd.getpwall()), reason="no user 'nobody' here")
STARTS = 300


def as_nobody(sandbox: dict | None = None, **pool) -> dict:
    return {"bash": {"min_workers": 2, "max_workers": 2, **pool,
                     "options": {"sandbox": {"run_as": "nobody", "isolation": "namespaces", **(sandbox or {})}}}}


def start_failures(d, pool: str = "bash", **args) -> Counter:
    """Run STARTS echo commands; count each that did not print its own echo, by what went wrong."""
    with d.client() as c:
        results = list(c.map(pool, [{"command": f"echo {i}", "cwd": "/", **args} for i in range(STARTS)],
                             return_exceptions=True))
    wrong = Counter()
    for i, r in enumerate(results):
        if isinstance(r, Exception):
            wrong[str(r)] += 1
        elif not (r.ok and r.stdout == f"{i}\n"):
            wrong[f"exit {r.exit_code}: {r.stderr}"] += 1
    return wrong


def cpu_limits(d, **args) -> str:
    """A command's soft and hard RLIMIT_CPU, as `ulimit` prints them."""
    with d.client() as c:
        r = c.run("bash", command="ulimit -St; ulimit -Ht", cwd="/", **args)
    assert r.ok, r
    return r.stdout


# ---- a CPU limit never makes a start fail ----------------------------------------------------

@needs_root
@needs_nobody
@needs_namespaces
def test_every_start_succeeds_under_a_pool_cpu_limit(start_daemon) -> None:
    d = start_daemon(pools=as_nobody({"limits": {"cpu_seconds": 5}}))
    assert start_failures(d) == Counter()
    assert cpu_limits(d) == "5\n6\n"  # soft, and hard one above it, so SIGXCPU comes first


@needs_root
@needs_nobody
@needs_namespaces
def test_every_start_succeeds_under_a_task_cpu_limit(start_daemon) -> None:
    d = start_daemon(pools=as_nobody())
    assert start_failures(d, policy={"limits": {"cpu_seconds": 5}}) == Counter()
    assert cpu_limits(d, policy={"limits": {"cpu_seconds": 5}}) == "5\n6\n"
    assert cpu_limits(d) == "unlimited\nunlimited\n"


@needs_root
@needs_nobody
@needs_namespaces
def test_a_cpu_limit_binds_where_the_worker_keeps_its_own_ids(start_daemon) -> None:
    """A pool outside a pid namespace runs commands as nobody too, so the namespaced
    pool's workers stay root (a fork and user switch per command, no lent ids)."""
    pools = {**as_nobody({"limits": {"cpu_seconds": 1}}),
             "plain": {"tool": "bash", "min_workers": 1, "max_workers": 1,
                       "options": {"sandbox": {"run_as": "nobody", "isolation": "none"}}}}
    d = start_daemon(pools=pools)
    assert start_failures(d) == Counter()
    assert cpu_limits(d) == "1\n2\n"
    with d.client() as c:
        r = c.run("bash", command="while :; do :; done", timeout=60, cwd="/")
    assert r.status == "failed" and r.limit == "cpu", r


@needs_root
@needs_nobody
@needs_namespaces
def test_a_cpu_spin_as_nobody_is_stopped_by_the_cpu_limit(start_daemon) -> None:
    d = start_daemon(pools=as_nobody({"limits": {"cpu_seconds": 1}}))
    with d.client() as c:
        r = c.run("bash", command="while :; do :; done", timeout=60, cwd="/")
        assert r.status == "failed" and r.limit == "cpu", r
        r = c.run("bash", command="while :; do :; done", timeout=60, cwd="/", policy={"limits": {"cpu_seconds": 1}})
    assert r.status == "failed" and r.limit == "cpu", r


# ---- no capability is inheritable ----------------------------------------------------------

def capabilities(status: str) -> dict[str, int]:
    """The Cap* sets of a /proc/PID/status text, as numbers."""
    return {line.split(":")[0]: int(line.split()[1], 16) for line in status.splitlines() if line.startswith("Cap")}


@needs_root
@needs_nobody
@needs_namespaces
def test_workers_and_their_commands_hold_no_inheritable_capability(start_daemon) -> None:
    # bubblewrap's --cap-add (what a root worker keeps to switch to run_as)
    # puts the capabilities in the inheritable set too, which exec preserves.
    d = start_daemon(pools=as_nobody())
    with d.client() as c:
        r = c.run("bash", command="cat /proc/self/status", cwd="/")
    assert r.ok, r
    caps = capabilities(r.stdout)
    assert {k: caps[k] for k in ("CapInh", "CapPrm", "CapEff", "CapAmb")} == dict.fromkeys(
        ("CapInh", "CapPrm", "CapEff", "CapAmb"), 0), caps
    tree = {p.pid for p in d.tree()}
    workers = [w["pid"] for w in d.workers("bash")]
    assert workers and set(workers) <= tree, (workers, tree)
    for pid in workers:
        # Capabilities are per thread: zmq's threads too.
        for task in Path(f"/proc/{pid}/task").iterdir():
            caps = capabilities((task / "status").read_text())
            assert caps["CapInh"] == 0 and caps["CapAmb"] == 0, (pid, task.name, caps)
            assert caps["CapEff"] != 0, (pid, task.name, caps)  # it still switches users and signals commands
