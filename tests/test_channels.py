"""Separate channels: a 50 MB output flood delays neither heartbeats nor a cancel."""

from __future__ import annotations

from tests.conftest import wait_until

MB = 1 << 20


def test_flood_does_not_delay_heartbeats_or_cancel(start_daemon) -> None:
    d = start_daemon(
        daemon={"heartbeat_interval": 0.1, "failure_detection_timeout": 2.0},
        pools={"bash": {"min_workers": 2, "max_workers": 2, "options": {"sandbox": {"limits": {"output_bytes": 64 * MB}}}}},
    )
    with d.client(timeout=30) as c:
        sleeper = c.submit("bash", command="sleep 300")
        wait_until(lambda: [t for t in c.ps() if t["state"] == "running"], what="the sleeper to run")
        # 50 MiB in 1 MiB bursts: at least 2.5 s of flood, so the cancel below happens mid-flood.
        flood = c.submit("bash", stream=True,
                         command="for i in $(seq 50); do head -c 1048576 /dev/zero; sleep 0.05; done")
        flooder = wait_until(lambda: next((w for w in c.workers() if flood.id in w["tasks"]), None),
                             what="the flood to start")
        received = 0
        cancelled_mid_flood = False
        for chunk in c.stream(flood):
            received += len(chunk.data)
            if received >= 5 * MB and not cancelled_mid_flood:
                beats_before = next(w for w in c.workers() if w["id"] == flooder["id"])["heartbeats"]
                c.cancel(sleeper)
                assert sleeper.result(timeout=30).status == "cancelled"
                assert not flood.done(), "the cancel waited for the flood to finish"
                beats_during = wait_until(
                    lambda: (lambda n: n if n > beats_before else None)(
                        next(w for w in c.workers() if w["id"] == flooder["id"])["heartbeats"]),
                    what="a heartbeat from the flooding worker")
                assert not flood.done() and beats_during > beats_before
                cancelled_mid_flood = True
        result = flood.result()
    assert cancelled_mid_flood
    assert received == 50 * MB and result.stdout_bytes == 50 * MB and not result.truncated
    assert "sent no heartbeat" not in d.log()
    assert {w["id"] for w in d.workers("bash")} >= {flooder["id"]}  # never declared hung
