"""Chaos: parad and its workers killed with real signals, and what is left afterwards."""

from __future__ import annotations

import pytest

from para.testing import marked, wait_until

# A command, a background child, and a grandchild that left for a session of its own:
# each found by its argv[0] tag, whatever pid namespace it runs in.
TAGS = ("chaos-main", "chaos-child", "chaos-grandchild")
TREE = ("(setsid bash -c 'exec -a chaos-grandchild sleep 300' &); (exec -a chaos-child sleep 300) & "
        "exec -a chaos-main sleep 300")


def _tagged() -> dict[str, list[int]]:
    return {tag: marked(tag) for tag in TAGS if marked(tag)}


@pytest.mark.parametrize("isolation", ["namespaces", "none"])
def test_sigkilled_parad_takes_every_command_tree_with_it_and_a_new_one_serves(start_daemon, isolation: str) -> None:
    d = start_daemon(pools={"bash": {"min_workers": 2, "max_workers": 2,
                                     "options": {"sandbox": {"isolation": isolation}}}})
    with d.client() as c:
        c.submit("bash", command=TREE)
        wait_until(lambda: len(_tagged()) == len(TAGS), 30, f"{', '.join(TAGS)} to run")
        d.kill()   # raises unless the fork server, the workers and all they ran are gone
    wait_until(lambda: not _tagged(), 20, "every tagged command to die with parad")
    d.restart()   # its stale sockets and lock file left where they were
    with d.client() as c:
        assert c.run("bash", command="echo again").stdout == "again\n"
