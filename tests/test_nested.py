"""Nested tasks: a command submits child tasks through its worker and waits for them."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

from para.testing import marked, wait_running, wait_until

PARACTL = f"{sys.executable} -m para.client.paractl"


def test_parents_filling_the_pool_do_not_deadlock_on_children_in_the_same_pool(start_daemon) -> None:
    d = start_daemon(pools={"bash": {"min_workers": 2, "max_workers": 2, "credit": 1}})
    # Each parent holds one of the pool's two workers (and its only slot) while
    # it waits for two children that need a bash worker too.
    parent = f'for i in 1 2; do {PARACTL} --json run bash command="echo child-$i"; done'
    with d.client() as c:
        parents = [c.submit("bash", command=parent, timeout=120) for _ in range(2)]
        results = [p.result(timeout=120) for p in parents]
        children = [json.loads(chunk) for r in results for chunk in _json_objects(r.stdout)]
        tasks = {child["id"]: c.task(child["id"])["task"] for child in children}
    assert all(r.ok for r in results), results
    assert [ch["stdout"] for ch in children] == ["child-1\n", "child-2\n"] * 2
    # The pool grew past max_workers for them: more than two workers ran tasks.
    assert len({ch["worker"] for ch in children} | {r.worker for r in results}) > 2
    assert {t["parent"] for t in tasks.values()} == {p.id for p in parents}


def _json_objects(text: str) -> list[str]:
    """Split concatenated pretty-printed JSON objects."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "{":
            depth, start = depth + 1, (i if depth == 0 else start)
        elif ch == "}":
            depth -= 1
            if depth == 0:
                out.append(text[start:i + 1])
    return out


def test_nesting_deeper_than_the_limit_is_refused(start_daemon, tmp_path: Path) -> None:
    d = start_daemon(daemon={"nested_max_depth": 2}, pools={"bash": {"min_workers": 2, "max_workers": 2}})
    script = tmp_path / "nest.sh"
    script.write_text(f'echo "level $1"\n[ "$1" -lt 5 ] && exec {PARACTL} bash -- bash {script} $(($1 + 1))\n')
    with d.client() as c:
        r = c.run("bash", command=f"bash {script} 0", timeout=120)
    assert r.stdout.split("\n")[:3] == ["level 0", "level 1", "level 2"] and "level 3" not in r.stdout
    assert "nested too deep" in r.stderr and r.exit_code == 2


def test_cancelling_a_parent_cancels_its_children(start_daemon) -> None:
    d = start_daemon(pools={"bash": {"min_workers": 2, "max_workers": 2}})
    tag = f"para-child-{uuid.uuid4().hex[:8]}"
    with d.client() as c:
        parent = c.submit("bash", command=f"{PARACTL} bash -- exec -a {tag} sleep 300")
        child = wait_running(c, parent=parent.id, timeout=30, what="the child to run")[0]
        c.cancel(parent)
        assert parent.result(timeout=30).status == "cancelled"
        wait_until(lambda: c.task(child["id"])["task"]["state"] == "cancelled", 30, "the child to be cancelled")
    wait_until(lambda: not marked(tag), 10, "the child's process to end")


def test_a_child_client_cannot_see_or_cancel_other_tasks(start_daemon) -> None:
    d = start_daemon(pools={"bash": {"min_workers": 2, "max_workers": 2}})
    with d.client() as c:
        other = c.submit("bash", command="sleep 300")
        r = c.run("bash", command=f"{PARACTL} cancel {other.id}; {PARACTL} status", timeout=60)
        assert not other.done()
        c.cancel(other)
    assert "not running" in r.stdout and "not available inside a task" in r.stderr and r.exit_code == 2, r


def test_an_async_client_inside_a_command_submits_children(start_daemon, tmp_path: Path) -> None:
    d = start_daemon(pools={"bash": {"min_workers": 2, "max_workers": 2}})
    script = tmp_path / "kids.py"
    script.write_text(
        "import asyncio\n"
        "from para.client import AsyncClient\n"
        "async def main():\n"
        "    async with AsyncClient() as c:\n"
        "        rs = await asyncio.gather(*(c.run('bash', command=f'echo kid{i}') for i in range(3)))\n"
        "        print(' '.join(r.stdout.strip() for r in rs))\n"
        "asyncio.run(main())\n")
    with d.client() as c:
        r = c.run("bash", command=f"{sys.executable} {script}", timeout=120)
    assert r.ok and r.stdout == "kid0 kid1 kid2\n", r
