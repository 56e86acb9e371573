"""paractl for scripts and agent frameworks, against a real parad: `paractl tools` (readable, JSON
Schemas, OpenAI and Anthropic tool definitions) and `--json` everywhere: errors as one JSON line on
stdout with the usual exit codes, streams (watch, batch) as JSON Lines that arrive as they happen."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from para.client.tool_defs import inline_refs
from para.testing import Daemon, paractl, paractl_argv, wait_until

try:
    import jsonschema
except ImportError:   # not a dependency of para: without it the schemas' structure is checked by hand
    jsonschema = None


@pytest.fixture(scope="module")
def parad(shared_daemon: Daemon) -> Daemon:
    return shared_daemon


def as_json(r: subprocess.CompletedProcess) -> Any:
    """stdout as JSON, from a run that wrote nothing on stderr (--json: stdout is the whole answer)."""
    assert r.stderr == "", r.stderr
    return json.loads(r.stdout)


def assert_valid(schema: dict[str, Any], good: dict[str, Any], bad: dict[str, Any]) -> None:
    """`schema` is a JSON Schema that takes `good` and refuses `bad`."""
    if jsonschema is None:
        assert schema["type"] == "object" and set(good) <= set(schema["properties"])
        assert not set(bad) <= set(schema["properties"]) and schema["additionalProperties"] is False
        return
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(good)
    assert not jsonschema.Draft202012Validator(schema).is_valid(bad)


class Lines:
    """A process's stdout, line by line as it arrives (a thread reads it), each within a deadline."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self._lines: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self._lines.put(line)

    def next(self, timeout: float = 30) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line within {timeout}s") from None
        return json.loads(line)   # one whole JSON object per line

    def rest(self) -> list[dict[str, Any]]:
        self._thread.join(30)
        return [json.loads(self._lines.get()) for _ in range(self._lines.qsize())]


def popen(parad: Daemon, *args: str, **kwargs: Any) -> subprocess.Popen:
    return subprocess.Popen(paractl_argv("--runtime-dir", str(parad.runtime_dir), "--no-autostart", "--json", *args),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


# ---- paractl tools -------------------------------------------------------------------

def test_tools_lists_each_tool_with_its_arguments(parad: Daemon) -> None:
    r = paractl(parad, "tools")
    assert r.returncode == 0, r.stderr
    blocks = {block.split()[0]: block for block in r.stdout.split("\n\n") if not block.startswith(" ")}
    assert set(parad.pools) <= set(blocks)
    assert "(read-only)" in blocks["grep"].splitlines()[0] and "read-only" not in blocks["bash"].splitlines()[0]
    rows = {line.split()[0]: line.split(None, 3) for line in r.stdout.splitlines() if line.startswith("  ") and
            len(line.split()) > 3}
    assert rows["pattern"][1:3] == ["string", "required"]
    assert rows["context"][1:3] == ["integer", "0"] and "lines of context" in rows["context"][3]
    assert rows["policy.limits.timeout"][1:3] == ["number", "null"]   # a nested model's fields, by path


def test_tools_json_gives_each_tools_json_schema(parad: Daemon) -> None:
    tools = as_json(paractl(parad, "--json", "tools"))
    with parad.client() as client:
        assert tools == client.tools()
    grep = {t["name"]: t for t in tools}["grep"]
    assert grep["read_only"] is True and grep["description"]
    assert_valid(grep["input_schema"], {"pattern": "TODO", "context": 2}, {"patern": "TODO"})


def test_tools_names_some_in_the_order_named(parad: Daemon) -> None:
    tools = as_json(paractl(parad, "tools", "read", "grep", "--json"))
    assert [t["name"] for t in tools] == ["read", "grep"]


def test_tools_as_openai_and_anthropic_definitions(parad: Daemon) -> None:
    openai = as_json(paractl(parad, "tools", "--format", "openai"))
    anthropic = as_json(paractl(parad, "tools", "--format", "anthropic"))
    assert [t["function"]["name"] for t in openai] == [t["name"] for t in anthropic] == sorted(parad.pools)
    for o, a in zip(openai, anthropic):
        assert o["type"] == "function" and set(o["function"]) == {"name", "description", "parameters"}
        assert set(a) == {"name", "description", "input_schema"}
        assert o["function"]["parameters"] == a["input_schema"]
    bash = {t["name"]: t["input_schema"] for t in anthropic}["bash"]
    assert "$ref" not in json.dumps(anthropic) and "$defs" not in bash   # self-contained schemas
    good = {"command": "make", "policy": {"limits": {"timeout": 5}}}
    assert_valid(bash, good, {"command": "make", "policy": {"limits": {"timeot": 5}}})
    policy = next(b for b in bash["properties"]["policy"]["anyOf"] if b.get("type") == "object")
    assert "timeout" in policy["properties"]["limits"]["properties"]


def test_tools_unknown_name_is_a_usage_error(parad: Daemon) -> None:
    r = paractl(parad, "tools", "grep", "nosuchtool")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("paractl: no tool named nosuchtool") and "grep" in r.stderr
    r = paractl(parad, "--json", "tools", "nosuchtool")
    assert r.returncode == 2
    assert as_json(r)["error"]["code"] == "unknown_tool"


def test_inlining_keeps_a_fields_description_and_leaves_a_recursive_schema_alone() -> None:
    class Leaf(BaseModel):
        """A leaf."""
        x: int = 0

    class Top(BaseModel):
        leaf: Leaf = Field(description="the leaf here")

    class Tree(BaseModel):
        children: list[Tree] = []

    inlined = inline_refs(Top.model_json_schema())
    assert "$defs" not in inlined
    assert inlined["properties"]["leaf"]["description"] == "the leaf here"
    assert inlined["properties"]["leaf"]["properties"]["x"]["type"] == "integer"
    assert inline_refs(Tree.model_json_schema()) == Tree.model_json_schema()


# ---- errors as JSON -------------------------------------------------------------------

@pytest.mark.parametrize("args, code", [
    (("run", "nosuchtool"), "unknown_tool"),
    (("task", "nosuchtask"), "not_found"),
    (("result", "nosuchtask"), "not_found"),
    (("batch",), "usage"),                  # argparse: FILE missing
    (("cancel",), "usage"),                 # paractl's own check
    (("nosuchcommand",), "usage"),
    (("--timeout", "soon", "status"), "usage"),
])
def test_json_errors_are_one_line_on_stdout_with_the_usual_exit_code(parad: Daemon, args: tuple[str, ...],
                                                                      code: str) -> None:
    plain = paractl(parad, *args)
    r = paractl(parad, "--json", *args)
    assert r.returncode == plain.returncode == 2
    assert r.stdout.count("\n") == 1
    error = as_json(r)["error"]
    assert error["code"] == code and error["message"] and error["message"] in plain.stderr


def test_json_error_when_no_daemon_answers(tmp_path: Path) -> None:
    r = paractl(None, "--json", "--no-autostart", "--runtime-dir", str(tmp_path), "status")
    assert r.returncode == 69
    error = as_json(r)["error"]
    assert error["code"] == "daemon_unavailable" and f"{tmp_path}/control.sock" in error["message"]


# ---- streams as JSON Lines ------------------------------------------------------------

def test_watch_json_prints_one_event_per_line_as_it_happens(parad: Daemon) -> None:
    with parad.client() as c:
        before = c.status()["daemon"]["watchers"]
        proc = popen(parad, "watch", "results", "--count", "2")
        try:
            lines = Lines(proc)
            wait_until(lambda: c.status()["daemon"]["watchers"] > before, 20, "the watcher to subscribe")
            first = c.run("echo", n=1)
            event = lines.next()   # before the second event: each line is flushed as it is printed
            assert proc.poll() is None
            second = c.run("bash", command="exit 3")
            proc.wait(30)
            rest = lines.rest()
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, proc.stderr.read()
    assert (event["topic"], event["event"]["task_id"], event["event"]["info"]["status"]) == \
        ("results", first.id, "succeeded")
    assert [(e["event"]["task_id"], e["event"]["info"]["exit_code"]) for e in rest] == [(second.id, 3)]


def test_batch_json_prints_each_task_as_it_finishes_then_the_totals(parad: Daemon, tmp_path: Path) -> None:
    (tmp_path / "plan.yaml").write_text(json.dumps({"on_failure": "continue", "tasks": [
        {"id": "first", "tool": "echo", "args": {"n": 1}},
        {"id": "then", "tool": "bash", "after": ["first"], "args": {"command": "echo ${first.value.n}; exit 3"}},
        {"id": "gated", "tool": "bash", "timeout": 60,
         "args": {"command": "until [ -e go ]; do sleep 0.05; done; echo through"}},
    ]}))
    proc = popen(parad, "batch", "plan.yaml", cwd=tmp_path)
    try:
        lines = Lines(proc)
        early = [lines.next(), lines.next()]   # printed while `gated` still waits for its file
        assert proc.poll() is None
        (tmp_path / "go").touch()
        proc.wait(60)
        rest = lines.rest()
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 1, proc.stderr.read()   # `then` failed
    *tasks, last = early + rest
    assert [(t["task"], t["done"], t["tasks"]) for t in tasks] == [("first", 1, 3), ("then", 2, 3), ("gated", 3, 3)]
    results = {t["task"]: t["result"] for t in tasks}
    assert (results["then"]["exit_code"], results["then"]["stdout"]) == (3, "1\n")
    assert results["gated"]["stdout"] == "through\n"
    assert last["batch"]["done"] == 3 and last["batch"]["failed"] == 1
