"""While a worker's data channel to parad is full, its commands' clocks stay honest.

The worker stops reading its commands' pipes then (their output waits in
them), but a command that ends is still seen ending, and one that writes on
is not taken for silent. parad is held stopped (SIGSTOP) while a sibling
streams, which fills the channel at once.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from para.testing import wait_running, wait_until

# parad stops reading for seconds here: no worker may be taken for hung meanwhile.
PATIENT = {"failure_detection_timeout": 60, "heartbeat_interval": 0.1}
ONE_WORKER = {"bash": {"min_workers": 1, "max_workers": 1, "credit": 4}}


@pytest.mark.parametrize("command, limits", [
    # Ends 0.5 s in, well before its timeout, which passes while parad is stopped.
    ("sleep 0.5; echo fine", {"timeout": 2}),
    # Writes every 0.1 s for 3 s; silent for 1 s would end it.
    ("for i in $(seq 30); do echo $i; sleep 0.1; done; echo fine", {"timeout": 60, "no_output_timeout": 1}),
], ids=["timeout", "no_output"])
def test_a_command_is_judged_by_what_it_did_not_by_what_was_read(start_daemon, tmp_path: Path, command: str,
                                                                  limits: dict) -> None:
    d = start_daemon(pools=ONE_WORKER, daemon=PATIENT)
    flag = tmp_path / "go"
    wait_flag = f"until [ -e {flag} ]; do sleep 0.01; done"
    with d.client() as flooder, d.client() as c:
        flood = flooder.submit("bash", stream=True, command=f"{wait_flag}; cat /dev/zero", timeout=120)
        judged = c.submit("bash", command=f"{wait_flag}; {command}", **limits)
        wait_running(c, count=1, what="the judged command to run")
        os.kill(d.proc.pid, signal.SIGSTOP)
        try:
            flag.touch()
            # Past the judged command's end and past the limit it must not be charged with.
            held_until = time.monotonic() + 4
            wait_until(lambda: time.monotonic() > held_until, timeout=10, what="parad's pause to pass its limit")
        finally:
            os.kill(d.proc.pid, signal.SIGCONT)
        result = judged.result(timeout=60)
        flooder.cancel(flood)
        assert flood.result(timeout=60).status == "cancelled"
    assert (result.status, result.error, result.stdout.split()[-1]) == ("succeeded", None, "fine")
