"""docs/PROTOCOL.md against the code, and a client written from it alone against a real parad.

The document's tables are parsed and compared with `ipc/`: every message tag,
who sends what, every field of every message a client sends or receives (in
wire order, with its default), every Query `what`, error code, task state and
constant, and the hex frames it shows. So the document cannot fall behind the
code without a test failing. tests/foreign_client.py, written from the
document with pyzmq, msgpack and the standard library only, then runs tasks,
refusals, a query, streamed output and stdin, events, and results by id after
a restart, on a real parad, in an interpreter where `para` cannot be imported.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from para.daemon import admission, clients
from para.daemon.config import DaemonSection
from para.ipc import PROTOCOL_VERSION, channels, codec
from para.ipc import messages as m
from para.testing import Daemon

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "PROTOCOL.md").read_text()
FOREIGN = Path(__file__).with_name("foreign_client.py")

CLIENT_TO_PARAD = "client → parad"
PARAD_TO_CLIENT = "parad → client"
# What parad sends a client on the control socket (nested: TaskResult), and a watcher on the events socket.
ANSWERS = {m.Welcome, m.Accepted, m.ErrorReply, m.Reply, m.Pong, m.Done, m.TaskResult, m.Chunk, m.InputAck}
EVENTS = {m.TaskEvent, m.ErrorReport, m.Heartbeat}


def section(title: str) -> str:
    """The text under the heading `title` (any level), up to the next heading."""
    found = re.search(rf"^#+ {re.escape(title)}\n(.*?)(?=^#+ |\Z)", DOC, re.M | re.S)
    assert found, f"docs/PROTOCOL.md has no section {title!r}"
    return found.group(1)


def table(text: str) -> list[dict[str, str]]:
    """The first Markdown table in `text`: a dict per row, by lower-cased header, cells without backticks."""
    lines = [line.strip() for line in text.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip().replace("`", "") for cell in line.strip("|").split("|")])
    header = [h.lower() for h in rows[0]]
    return [dict(zip(header, row)) for row in rows[2:]]


def tags() -> dict[str, tuple[int, str]]:
    return {row["message"]: (int(row["tag"]), row["direction"]) for row in table(section("Message tags"))}


def documented_default(f: dataclasses.Field) -> str:
    """A field's default as the document writes it."""
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    elif f.default is dataclasses.MISSING:
        return "—"
    else:
        value = f.default
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, bytes):
        return 'b' + json.dumps(value.decode())
    if isinstance(value, str):
        return json.dumps(value)
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


# ---- the document against the code ------------------------------------------------------------

def test_the_tag_table_lists_every_message_with_its_tag() -> None:
    assert {name: tag for name, (tag, _) in tags().items()} == {cls.__name__: tag for cls, tag in m.WIRE_TAGS.items()}


def test_the_doc_says_which_messages_a_client_sends_and_receives() -> None:
    by_direction: dict[str, set[str]] = {}
    for name, (_, direction) in tags().items():
        by_direction.setdefault(direction, set()).add(name)
    assert set(by_direction) <= {CLIENT_TO_PARAD, PARAD_TO_CLIENT, "events", "internal"}
    assert by_direction[CLIENT_TO_PARAD] == {cls.__name__ for cls in channels.CLIENT_REQUESTS} | {"TaskSpec"}
    assert by_direction[PARAD_TO_CLIENT] == {cls.__name__ for cls in ANSWERS}
    assert by_direction["events"] == {cls.__name__ for cls in EVENTS}


@pytest.mark.parametrize("cls", sorted(set(channels.CLIENT_REQUESTS) | {m.TaskSpec} | ANSWERS | EVENTS,
                                       key=lambda c: m.WIRE_TAGS[c]), ids=lambda c: c.__name__)
def test_each_message_a_client_sees_has_its_fields_in_wire_order_with_their_defaults(cls: type) -> None:
    rows = table(section(cls.__name__))
    expected = [(str(i), f.name, documented_default(f)) for i, f in enumerate(dataclasses.fields(cls))]
    assert [(row["#"], row["field"], row["default"]) for row in rows] == expected
    assert all(row["type"] and row["meaning"] for row in rows)


def _queries_served() -> set[str]:
    """Every `what` the daemon compares a Query's `what` with (daemon/clients.py)."""
    tree = ast.parse(Path(clients.__file__).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Attribute) and node.left.attr == "what":
            for right in node.comparators:
                constants = right.elts if isinstance(right, (ast.Tuple, ast.List, ast.Set)) else [right]
                found |= {c.value for c in constants if isinstance(c, ast.Constant) and isinstance(c.value, str)}
    return found


def test_every_query_is_in_the_query_table() -> None:
    served = _queries_served()
    assert {"status", "workers", "ps", "metrics", "task", "batch"} <= served   # the parse still finds them
    documented = {row["what"] for row in table(section("Queries"))}
    assert served <= documented, f"undocumented queries: {served - documented}"


def test_every_error_code_is_in_the_error_table() -> None:
    codes = {value for name, value in vars(m).items() if name.startswith("E_")}
    assert {row["code"] for row in table(section("Errors"))} == codes


def test_every_task_state_is_in_the_state_table() -> None:
    states = {m.QUEUED, m.RUNNING, m.RETRY_WAIT, m.PENDING} | m.FINAL_STATES
    rows = table(section("Task states"))
    assert {row["state"] for row in rows} == states
    assert {row["state"] for row in rows if row["final"] == "yes"} == m.FINAL_STATES


def test_the_constants_table_gives_the_code_s_values() -> None:
    values = {row["name"]: row["value"] for row in table(section("Constants"))}
    assert values == {
        "PROTOCOL_VERSION": str(PROTOCOL_VERSION), "MAGIC": f"0x{codec.MAGIC:X}",
        "BATCH_MAGIC": f"0x{codec.BATCH_MAGIC:X}", "BATCH_FRAMES": str(codec.BATCH_FRAMES),
        "MAX_BATCH_FRAMES": str(codec.MAX_BATCH_FRAMES), "MAX_DEPTH": str(codec.MAX_DEPTH),
        "max_message_size": str(DaemonSection().max_message_size), "INPUT_WINDOW": str(channels.INPUT_WINDOW),
        "INPUT_CHUNK": str(channels.INPUT_CHUNK), "MAX_AWAIT": str(clients.MAX_AWAIT),
        "ID_PATTERN": admission.ID_PATTERN,
    }


def _hex_blocks() -> list[bytes]:
    return [bytes.fromhex(block) for block in re.findall(r"```text\n([0-9a-f ]+)\n```", DOC)]


def test_the_frames_shown_are_the_codec_s() -> None:
    submit = m.Submit(7, [m.TaskSpec("t-1", "echo", {"x": 1})])
    ping, full, short, batch = _hex_blocks()
    assert ping == codec.encode(m.Ping(1))
    assert full == codec.encode(submit)
    assert len(short) < len(full) and codec.decode(short) == submit   # trailing defaults left out
    assert batch == codec.encode_batch([codec.encode(m.Pong(1, "b")), codec.encode(m.Pong(2, "b"))])


# ---- a client written from the document -------------------------------------------------------

def test_the_foreign_client_imports_nothing_but_pyzmq_msgpack_and_the_standard_library() -> None:
    imported = set()
    for node in ast.walk(ast.parse(FOREIGN.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported - set(sys.stdlib_module_names) == {"zmq", "msgpack"}


def _foreign_module() -> Any:
    spec = importlib.util.spec_from_file_location("foreign_client", FOREIGN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_foreign_client_encodes_a_submit_as_the_doc_shows() -> None:
    fc = _foreign_module()
    submit = fc.message("Submit", req=7, tasks=[fc.message("TaskSpec", id="t-1", tool="echo", args={"x": 1})])
    assert fc.encode(submit) == _hex_blocks()[1]


def _foreign(*args: str) -> dict[str, Any]:
    """Run the foreign client in a fresh interpreter where `import para` fails."""
    blocker = ("import runpy, sys; sys.modules['para'] = None; sys.argv = sys.argv[1:]; "
               "runpy.run_path(sys.argv[0], run_name='__main__')")
    proc = subprocess.run([sys.executable, "-I", "-c", blocker, str(FOREIGN), *args],
                          capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_a_client_written_from_the_doc_runs_tasks_and_gets_them_back_after_a_restart(
        start_daemon: Any, tmp_path: Path) -> None:
    d: Daemon = start_daemon()
    project = tmp_path / "project"
    project.mkdir()
    got = _foreign("run", str(d.runtime_dir), str(project))

    welcome = got["welcome"]
    assert welcome["protocol"] == PROTOCOL_VERSION and welcome["pid"] == got["status_pid"] == d.pid
    assert {"bash", "echo"} <= set(welcome["tools"]) and welcome["boot"] and welcome["durable"]
    bash_id, echo_id = got["accepted"]["ids"]
    assert got["bash"]["id"] == bash_id and got["bash"]["status"] == m.SUCCEEDED
    assert got["bash"]["exit_code"] == 0 and got["bash"]["stdout"] == "hi\n"
    assert "".join(c["data"] for c in got["chunks"]) == "hi\n"
    assert [c["seq"] for c in got["chunks"]] == list(range(1, len(got["chunks"]) + 1))
    assert got["echo"]["status"] == m.SUCCEEDED and got["echo"]["value"] == {"greeting": "hello", "n": [1, 2]}

    refusals = got["refusals"]
    assert [r["code"] for r in refusals] == [m.E_UNKNOWN_TOOL, m.E_INVALID]
    assert [r["task_id"].rsplit("-", 1)[1] for r in refusals] == ["3", "4"]
    assert "no-such-tool" in refusals[0]["message"] and "command" in refusals[1]["message"]
    assert got["refusals_accepted"]["ids"] == []
    assert got["bad_frame"]["code"] == m.E_PROTOCOL

    assert got["input_opened"]["written"] == 0 and got["stdin"]["stdout"] == "SHOUT\n"
    assert got["pong"]["boot"] == welcome["boot"]
    assert {e["kind"] for e in got["events"].values()} == {"result"}
    assert {e["info"]["status"] for e in got["events"].values()} == {m.SUCCEEDED}

    d.stop()
    d.restart()
    again = _foreign("resume", str(d.runtime_dir), welcome["boot"], bash_id, echo_id)
    assert again["restarted"] and again["pong"]["boot"] == again["welcome"]["boot"]
    assert again["await"] == {"finished": [bash_id, echo_id], "waiting": [], "unknown": [again["never"]]}
    assert again["results"][bash_id]["stdout"] == "hi\n"
    assert again["results"][echo_id]["value"] == {"greeting": "hello", "n": [1, 2]}
