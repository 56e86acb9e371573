"""What a worker polls for its commands: a descriptor a command closes leaves the poll first.

The driver runs in a process of its own that is a child subreaper, as a
worker is (a Command reaps and kills children of its owner, and pytest's
children include the daemons other tests share).
"""

from __future__ import annotations

import json
import subprocess
import sys

SCENARIO = r"""
import json, os, time
import zmq
from para.daemon.pollset import PollSet
from para.sandbox import prctl, tree
from para.sandbox.command import Command, CommandSpec

prctl.set_child_subreaper()
polls = PollSet()
report = {}
try:
    cmd = Command(CommandSpec(argv=["true"]), on_close=polls.closing)
    polls.set("cmd", [(fd, zmq.POLLIN) for fd in cmd.fds()])
    # A copy of every descriptor of ours, as a child between its spawn and its exec holds
    # them: the files of the command's pipes outlive our closing them.
    gate, hold = os.pipe()
    holder = os.fork()
    if holder == 0:
        os.close(hold)
        os.read(gate, 1)
        os._exit(0)
    os.close(gate)
    end = time.monotonic() + 30
    while not cmd.done and time.monotonic() < end:
        for fd, _ in polls.poll(50):
            if polls.owner_of.get(fd) != "cmd":
                continue   # taken out earlier in this batch (its command reaped at its pipes' end)
            cmd.on_readable(fd)
            polls.set("cmd", [(fd, zmq.POLLIN) for fd in cmd.fds()])
    report["done"] = cmd.done
    polls.drop("cmd")
    cmd.close()
    report["stale"] = [fd for fd, _ in polls.poll(0)]   # reported though no longer ours, while the copies live
    os.close(hold)
    os.waitpid(holder, 0)
finally:
    print(json.dumps(report))
    tree.kill_tree(os.getpid(), include_root=False)
    tree.reap_children()
"""


def test_a_command_s_descriptors_leave_the_poll_before_they_close() -> None:
    # While a copy of a closed pipe lives (a command spawned meanwhile that has not exec'd
    # yet), its epoll entry lives too: a worker that took it out only after the close kept
    # being woken for a descriptor no longer there, at a number soon another command's.
    proc = subprocess.run([sys.executable, "-c", SCENARIO], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["done"], report
    assert report["stale"] == [], report
