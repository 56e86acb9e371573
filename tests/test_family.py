"""Several commands side by side in one process (a worker driving many): each acts on its own processes only.

Each test runs a driver in a process of its own that is a child subreaper,
as a worker is: a Command kills and reaps children of its owner, and
pytest's children include the daemons other tests share.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PRELUDE = r"""
import json, os, select, sys, time
from para.sandbox import prctl, tree
from para.sandbox.command import Command, CommandSpec
from para.testing import wait_until

prctl.set_child_subreaper()
END = time.monotonic() + 60


def drive(cmds, until, what):
    # The worker's loop, for a few commands: their pipes, pidfds and timers.
    while not until():
        if time.monotonic() > END:
            raise SystemExit(f"timed out waiting for {what}")
        live = [c for c in cmds if not c.done]
        fds = {fd: c for c in live for fd in c.fds()}
        deadlines = [d for c in live if (d := c.next_deadline())]
        timeout = min([0.05] + [max(0.0, d - time.monotonic()) for d in deadlines])
        for fd in select.select(list(fds), [], [], timeout)[0]:
            fds[fd].on_readable(fd)
        for c in live:
            c.on_timer(time.monotonic())


def out(cmd):
    return [int(x) for x in cmd.outcome().stdout.split()]


def state(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2:][:1].decode()


def alive(pid):
    return state(pid) not in (None, "Z", "X")


def waiting(argv, **kw):
    # A command that runs until its stdin is closed.
    return Command(CommandSpec(argv=argv, stdin_stream=True, **kw))


report = {}
cmds = []
try:
    SCENARIO
    for c in cmds:
        c.close()
    report["children_left"] = tree.has_children()   # no process, no zombie
finally:
    print(json.dumps(report))
    tree.kill_tree(os.getpid(), include_root=False)  # whatever a failed run left
    tree.reap_children()
"""


def _run(scenario: str, *args: str) -> dict:
    code = PRELUDE.replace("    SCENARIO", "\n".join("    " + line for line in scenario.strip().splitlines()))
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


ENDING_ONE = r"""
mode = sys.argv[1]
b = waiting(["bash", "-c", "sleep 62 & echo $!; read x; exit 7"])
# A double-forked orphan that kept the session, and a plain background child.
a = Command(CommandSpec(argv=["bash", "-c", "(sleep 61 & echo $!); sleep 60 & echo $!; wait"],
                        kill_grace=0.2, timeout=5 if mode == "timeout" else None))
cmds += [b, a]
drive(cmds, lambda: (len(out(a)) == 2 or a.done) and len(out(b)) == 1, "both commands up")
report["a_pids"] = len(out(a))
if mode == "cancel":
    a.cancel()
drive(cmds, lambda: a.done, "the first command's end")
o = a.outcome()
report.update(a_left=[p for p in out(a) if state(p)], a_limit=o.limit, a_cancelled=o.cancelled,
              b_running=not b.done and alive(b.pid), b_child=alive(out(b)[0]))
b.stdin_pipe.close()
drive(cmds, lambda: b.done, "the second command's end")
o = b.outcome()
report.update(b_exit=o.exit_code, b_signal=o.signal, b_child_after=state(out(b)[0]))
"""


@pytest.mark.parametrize("mode", ["cancel", "timeout"])
def test_ending_one_command_kills_its_whole_tree_and_spares_its_sibling(mode: str) -> None:
    """Cancel or time out one of two commands: its tree goes (a double-forked orphan too), the
    other and its background child run on, and the other's exit status is its own."""
    report = _run(ENDING_ONE, mode)
    assert report["a_pids"] == 2, report
    assert report["a_left"] == [], report
    assert report["a_cancelled"] == (mode == "cancel") and report["a_limit"] == (mode == "timeout" and "timeout" or None)
    assert report["b_running"] and report["b_child"], report
    assert report["b_exit"] == 7 and report["b_signal"] is None, report
    assert report["b_child_after"] is None, report   # what it left running went when it ended
    assert report["children_left"] is False, report


LEFT_BEHIND = r"""
import subprocess
from para.sandbox.limits import Limits
helper = subprocess.Popen(["sleep", "65"])   # the owner's own child, in its session: no command's
b = waiting(["bash", "-c", "sleep 62 & echo $!; read x; exit 7"])
# Held limits: started by posix_spawn, where b is started by subprocess; both in a session of their own.
a = Command(CommandSpec(argv=["bash", "-c", "sleep 63 >/dev/null 2>&1 & echo $!"]), held=Limits())
cmds += [b, a]
report["own_sessions"] = [os.getsid(c.pid) == c.pid for c in cmds]
drive(cmds, lambda: a.done and len(out(b)) == 1, "the first command's end")
report.update(a_exit=a.outcome().exit_code, a_child=state(out(a)[0]),
              b_running=not b.done and alive(b.pid), b_child=alive(out(b)[0]))
a.close()   # as the worker does with a command that is done
report["b_running_after_close"] = not b.done and alive(b.pid) and alive(out(b)[0])
b.stdin_pipe.close()
drive(cmds, lambda: b.done, "the second command's end")
report.update(b_exit=b.outcome().exit_code)
for c in cmds:
    c.close()
report["helper"] = helper.poll() is None
helper.kill()
helper.wait()
"""


def test_what_a_command_leaves_running_is_killed_when_it_ends_but_not_its_siblings() -> None:
    """Nor the owner's own children: only processes in a command's session, or orphans
    that left it, are any command's."""
    report = _run(LEFT_BEHIND)
    assert report["own_sessions"] == [True, True], report
    assert report["helper"], report
    assert report["a_exit"] == 0 and report["a_child"] is None, report
    assert report["b_running"] and report["b_child"] and report["b_running_after_close"], report
    assert report["b_exit"] == 7, report
    assert report["children_left"] is False, report


# A process that leaves its command's session and is orphaned (setsid after a
# double fork); the command ends once it is up, so it cannot be caught mid-way.
ESCAPE = r"""
import os
r, w = os.pipe()
middle = os.fork()
if middle == 0:
    os.setsid()
    if os.fork() == 0:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.write(w, b"x")
        os.execvp("sleep", ["sleep", "64"])
    os._exit(0)
os.waitpid(middle, 0)   # its child is an orphan now, the driver's
os.read(r, 1)
"""

SETSID_STRAY = r"""
def strays():
    with open(f"/proc/{os.getpid()}/task/{os.getpid()}/children") as f:
        return [int(p) for p in f.read().split() if int(p) not in {c.pid for c in cmds}]

older = waiting(["bash", "-c", "read x; exit 0"])
maker = Command(CommandSpec(argv=[sys.executable, "-c", sys.argv[1]]))
cmds += [older, maker]
drive(cmds, lambda: maker.done, "the escaping command's end")
found = strays()
report["strays"] = len(found)
stray = found[0] if found else -1   # none: killed with the command that made it
report["own_session"] = bool(found) and os.getsid(stray) not in (maker.pid, older.pid)
# A command that started before it still runs, and could be its ancestor: it stays.
report["kept_while_older_runs"] = alive(stray) and alive(older.pid)
maker.close()
report["kept_after_close"] = alive(stray)
if stray > 0:
    # Start times are compared in clock ticks, with slack on the safe side: a command
    # started within a few ticks of the stray could be its owner, for all one can tell.
    with open(f"/proc/{stray}/stat", "rb") as f:
        born = int(f.read().rsplit(b")", 1)[1].split()[19])
    tick = os.sysconf("SC_CLK_TCK")
    wait_until(lambda: time.clock_gettime(time.CLOCK_BOOTTIME) * tick > born + 3, 10, "three ticks past the stray's start")
newer = waiting(["bash", "-c", "read x; exit 0"])   # started after it: cannot be its owner
cmds.append(newer)
older.stdin_pipe.close()
drive(cmds, lambda: older.done, "the older command's end")
report.update(older_exit=older.outcome().exit_code, stray_after_older=state(stray),
              newer_running=not newer.done and alive(newer.pid))
newer.stdin_pipe.close()
drive(cmds, lambda: newer.done, "the newer command's end")
report["newer_exit"] = newer.outcome().exit_code
"""


def test_a_stray_that_left_its_session_is_killed_once_no_running_command_can_own_it() -> None:
    report = _run(SETSID_STRAY, ESCAPE)
    assert report["strays"] == 1 and report["own_session"], report
    assert report["kept_while_older_runs"] and report["kept_after_close"], report
    assert report["older_exit"] == 0, report
    assert report["stray_after_older"] is None, report   # killed and reaped: no zombie either
    assert report["newer_running"] and report["newer_exit"] == 0, report
    assert report["children_left"] is False, report


SAMPLING = r"""
crowd = waiting(["bash", "-c", "for i in $(seq 12); do sleep 60 & done; echo up; read x; exit 0"])
capped = waiting(["bash", "-c", "sleep 60 & echo up; read x; exit 0"], processes=4)
over = waiting(["bash", "-c", "for i in 1 2 3 4 5 6; do sleep 60 & done; echo up; read x; exit 0"], processes=4)
cmds += [crowd, capped, over]
up = lambda c: c.outcome().stdout == b"up\n"
drive(cmds, lambda: up(crowd) and up(capped) and over.done, "the crowd up and the command over its limit ended")
report.update(over_limit=over.outcome().limit, crowd_processes=len(tree.subtree(crowd.pid)))
# Ten more sampling rounds with the crowd's dozen processes beside it.
until = time.monotonic() + 10 * 0.05
drive(cmds, lambda: time.monotonic() > until or capped.done, "ten sampling rounds")
report.update(capped_done=capped.done, capped_limit=capped.outcome().limit)
for c in (crowd, capped):
    c.stdin_pipe.close()
drive(cmds, lambda: crowd.done and capped.done, "both ends")
report.update(capped_exit=capped.outcome().exit_code)
"""


def test_process_sampling_counts_only_the_commands_own_processes() -> None:
    """A sibling with many processes does not push a command over its own process limit;
    a command over it on its own is still ended."""
    report = _run(SAMPLING)
    assert report["over_limit"] == "pids", report
    assert report["crowd_processes"] >= 12, report
    assert not report["capped_done"] and report["capped_limit"] is None, report
    assert report["capped_exit"] == 0, report
    assert report["children_left"] is False, report
