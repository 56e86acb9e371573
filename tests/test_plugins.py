"""Plugin tools: the example package installed for real with pip and run through paractl, tools
loaded by module path, and plugins that raise, hang, crash their worker or cannot be loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from para.client import TaskError
from para.ipc import channels
from para.ipc.endpoints import Endpoints
from para.testing import Daemon, FAST, paractl, stop_and_check, wait_until

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "plugins" / "para-wordcount"

# Tools a test loads by module path: one per way a tool can fail, and one that runs long but reports.
FAULTY = '''
import os, time
from pydantic import BaseModel, ConfigDict
from para.daemon.tools.base import Finished, Tool

class NoArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

class SecondsArgs(BaseModel):
    seconds: float

class Boom(Tool):
    name = "boom"
    Args = NoArgs
    def run(self, args, options, ctx):
        raise RuntimeError("the plugin broke on purpose")

class Hang(Tool):
    name = "hang"
    Args = NoArgs
    def run(self, args, options, ctx):
        while True:          # silent: no report, so no heartbeat
            time.sleep(1)

class Crash(Tool):
    name = "crash"
    Args = NoArgs
    def run(self, args, options, ctx):
        os._exit(3)

class Reporting(Tool):
    name = "reporting"
    Args = SecondsArgs
    def run(self, args, options, ctx):
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:   # as long as it reports, it is alive
            ctx.progress(0, None, "still working")
            time.sleep(0.05)
        return Finished(value="done")

class FakeBash(Tool):
    name = "bash"
    Args = NoArgs

NotATool = 42
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the example plugin pip-installed into it, and the test's own plugin modules."""
    target = tmp_path_factory.mktemp("plugins")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(EXAMPLE)], check=True, capture_output=True, text=True, timeout=300)
    (target / "para_faulty_tools.py").write_text(FAULTY)
    (target / "para_broken_plugin.py").write_text("import no_such_module_anywhere\n")
    return target


POOLS = {
    "echo": {"min_workers": 1, "max_workers": 1},
    "wordcount": {},   # the entry point's tool, sized by its own pool_defaults
    "boom": {"tool": "para_faulty_tools:Boom", "min_workers": 1, "max_workers": 1},
    "hang": {"tool": "para_faulty_tools:Hang", "min_workers": 1, "max_workers": 1},
    "crash": {"tool": "para_faulty_tools:Crash", "min_workers": 1, "max_workers": 1},
    "reporting": {"tool": "para_faulty_tools:Reporting", "min_workers": 1, "max_workers": 1},
    "broken": {"tool": "para_broken_plugin:Tool"},
    "notatool": {"tool": "para_faulty_tools:NotATool"},
    "clash": {"tool": "para_faulty_tools:FakeBash"},
}


@pytest.fixture(scope="module")
def parad(site: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    d = Daemon({"daemon": FAST, "pools": POOLS}, tmp_path_factory.mktemp("parad"), env=env)
    yield d
    stop_and_check(d)


def test_installed_plugin_runs_through_paractl(parad: Daemon, tmp_path: Path) -> None:
    out = paractl(parad, "--json", "run", "wordcount", "text=one two three\nfour")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["value"]["words"] == 4
    pool = parad.pool("wordcount")
    # The tool's own pool_defaults sized the pool the config left unsized.
    assert (pool["state"], pool["tool"], pool["max_workers"]) == ("ok", "wordcount", 4)


def test_installed_plugin_is_described_like_a_builtin(parad: Daemon) -> None:
    listed = paractl(parad, "tools")
    assert listed.returncode == 0 and "wordcount" in listed.stdout and "like wc" in listed.stdout
    with parad.client() as c:
        entry = next(t for t in c.tools() if t["name"] == "wordcount")
    assert entry["read_only"] and entry["retry_safe"]
    assert entry["input_schema"]["properties"]["paths"]["description"].startswith("files to count")


def test_plugin_streams_output_and_reports_progress(parad: Daemon, tmp_path: Path) -> None:
    for name, text in (("a.txt", "alpha beta\n"), ("b.txt", "gamma\ndelta epsilon\n")):
        (tmp_path / name).write_text(text)
    paths = [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]
    watcher = channels.subscribe(zmq.Context.instance(), Endpoints(parad.runtime_dir), ("progress",))
    try:
        with parad.client() as c:
            wait_until(lambda: c.status()["daemon"]["watchers"] >= 1, 10, "parad to see the watcher")
            future = c.submit("wordcount", paths=paths, stream=True)
            streamed = b"".join(chunk.data for chunk in c.stream(future))
            assert future.result().value["words"] == 5
        assert [line.split()[-1] for line in streamed.decode().splitlines()] == paths
        progress = []
        def seen() -> bool:
            while watcher.poll(0):
                topic, event = channels.receive_event(watcher)
                if event.task_id == future.id and event.kind == "progress":
                    progress.append((event.info["done"], event.info["total"]))
            return len(progress) == 2
        wait_until(seen, 10, "both progress events")
        assert progress == [(1, 2), (2, 2)]
    finally:
        watcher.close(linger=0)


def test_plugin_that_raises_fails_its_task_with_the_message(parad: Daemon) -> None:
    out = paractl(parad, "run", "boom")
    assert out.returncode != 0
    assert "boom raised RuntimeError: the plugin broke on purpose" in out.stderr
    assert parad.pool("boom")["state"] == "ok"   # the worker lives on


def test_plugin_that_reports_is_not_taken_for_hung(parad: Daemon) -> None:
    # Three times failure_detection_timeout, reporting all along: the heartbeats go out with the reports.
    with parad.client(timeout=60) as c:
        result = c.run("reporting", seconds=3 * FAST["failure_detection_timeout"], timeout=60)
    assert result.value == "done" and result.attempts == 1


def test_plugin_that_hangs_is_killed_as_hung(parad: Daemon) -> None:
    with parad.client(timeout=60) as c:
        with pytest.raises(TaskError) as info:
            c.run("hang", timeout=60)
    assert info.value.result.status == "lost" and "heartbeat" in info.value.result.error
    wait_until(lambda: parad.pool("hang")["ready"] == 1, 30, "a new hang worker")


def test_plugin_that_crashes_its_worker_loses_its_task(parad: Daemon) -> None:
    with parad.client(timeout=60) as c:
        with pytest.raises(TaskError) as info:
            c.run("crash")
        assert info.value.result.status == "lost" and "exited with code 3" in info.value.result.error
        assert c.run("echo", x=1).value == {"x": 1}   # parad serves on


@pytest.mark.parametrize("pool, words", [
    ("broken", "cannot be loaded: ModuleNotFoundError: No module named 'no_such_module_anywhere'"),
    ("notatool", "is 42, not a subclass of para.daemon.tools.base.Tool"),
    ("clash", "is named 'bash', like a built-in tool; rename it"),
])
def test_plugin_that_cannot_load_fails_its_pool_only(parad: Daemon, pool: str, words: str) -> None:
    summary = parad.pool(pool)
    assert summary["state"] == "failed" and words in summary["error"]
    assert words in parad.log()
    status = paractl(parad, "status")
    assert f"{pool}: " in status.stdout and words in status.stdout
    refused = paractl(parad, "run", pool)
    assert refused.returncode == 75 and words in refused.stderr
    assert paractl(parad, "run", "wordcount", "text=still here").returncode == 0
    with parad.client() as c:
        assert pool not in [t["name"] for t in c.tools()]   # agents are not offered a tool that cannot run


def test_installed_plugin_is_offered_to_agents_over_mcp(parad: Daemon, tmp_path: Path) -> None:
    """Every pool parad runs is an MCP tool, a plugin's as a built-in's, with its schema and hints."""
    import anyio
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(command=sys.executable, cwd=str(tmp_path), env=dict(os.environ), args=[
        "-m", "para.mcp_server.main", "--runtime-dir", str(parad.runtime_dir), "--no-autostart"])

    async def scenario() -> tuple[dict, object]:
        with anyio.fail_after(60):
            async with Client(params) as agent:
                tools = {t.name: t for t in (await agent.list_tools()).tools}
                return tools, await agent.call_tool("wordcount", {"text": "one two three"})

    tools, reply = anyio.run(scenario)
    assert "wordcount" in tools and "boom" in tools and "broken" not in tools   # a pool that cannot load is not offered
    assert tools["wordcount"].annotations.read_only_hint is True
    assert tools["wordcount"].input_schema["properties"]["paths"]["description"].startswith("files to count")
    assert not reply.is_error and reply.structured_content["value"]["words"] == 3, reply
