"""A para client written from docs/PROTOCOL.md alone: pyzmq, msgpack and the standard library.

It imports nothing of para, so that it shows whether the document is enough
to write a client in another language. tests/test_protocol_doc.py runs it
against a real parad, with `para` made unimportable:

    python foreign_client.py run RUNTIME_DIR WORKSPACE      # tasks, refusals, a query, events, stdin
    python foreign_client.py resume RUNTIME_DIR BOOT ID...  # after a restart: results by id

Each prints one JSON object, the report the test checks.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any, Callable

import msgpack
import zmq

# ---- Frames and encoding (PROTOCOL.md: Frames, Encoding, Constants) ----------

VERSION = 1
MAGIC, BATCH_MAGIC = 0xA7, 0xA8
REQUIRED = object()   # "—" in the document's tables: the field has no default

# The messages a client sends or receives, by tag, with their fields in wire order.
FIELDS: dict[int, tuple[str, list[tuple[str, Any]]]] = {
    1: ("TaskSpec", [("id", REQUIRED), ("tool", REQUIRED), ("args", REQUIRED), ("timeout", None), ("priority", 2),
                     ("session", None), ("retries", None), ("stream", False), ("retry_on", None),
                     ("retry_backoff", None), ("idempotency_key", None), ("workspace", None)]),
    2: ("Hello", [("client", REQUIRED), ("pid", REQUIRED), ("token", None)]),
    3: ("Welcome", [("daemon_version", REQUIRED), ("protocol", REQUIRED), ("pid", REQUIRED), ("tools", REQUIRED),
                    ("max_message_size", REQUIRED), ("workspace_tools", []), ("owner_tools", []), ("boot", ""),
                    ("durable", False)]),
    4: ("Submit", [("req", REQUIRED), ("tasks", REQUIRED), ("ack", True)]),
    5: ("Accepted", [("req", REQUIRED), ("ids", REQUIRED)]),
    6: ("Cancel", [("req", REQUIRED), ("task_ids", REQUIRED), ("session", None), ("everything", False)]),
    7: ("Query", [("req", REQUIRED), ("what", REQUIRED), ("arg", None)]),
    8: ("Reply", [("req", REQUIRED), ("body", REQUIRED)]),
    10: ("Ping", [("req", REQUIRED)]),
    11: ("Pong", [("req", REQUIRED), ("boot", "")]),
    12: ("ErrorReply", [("req", REQUIRED), ("code", REQUIRED), ("message", REQUIRED), ("task_id", None)]),
    13: ("Chunk", [("task_id", REQUIRED), ("stream", REQUIRED), ("data", REQUIRED), ("seq", REQUIRED)]),
    14: ("TaskResult", [("id", REQUIRED), ("tool", REQUIRED), ("status", REQUIRED), ("exit_code", None),
                        ("signal", None), ("stdout", b""), ("stderr", b""), ("truncated", False), ("value", None),
                        ("duration", 0.0), ("attempts", 1), ("worker", None), ("error", None),
                        ("error_code", None), ("limit", None), ("rusage", {}), ("stdout_bytes", 0),
                        ("stderr_bytes", 0)]),
    15: ("Done", [("result", REQUIRED)]),
    20: ("TaskEvent", [("task_id", REQUIRED), ("worker", REQUIRED), ("kind", REQUIRED), ("info", {})]),
    33: ("Input", [("req", REQUIRED), ("task_id", REQUIRED), ("data", REQUIRED), ("eof", False)]),
    34: ("InputAck", [("task_id", REQUIRED), ("written", REQUIRED), ("closed", False), ("error", None)]),
    35: ("Await", [("req", REQUIRED), ("task_ids", REQUIRED)]),
}
TAGS = {name: tag for tag, (name, _) in FIELDS.items()}


class Message(dict):
    """A decoded message: its fields by name, and its type's name in `type`."""

    def __init__(self, type_: str, fields: dict[str, Any]) -> None:
        super().__init__(fields)
        self.type = type_


def message(type_: str, **values: Any) -> Message:
    return Message(type_, values)


def _ext(msg: Message) -> msgpack.ExtType:
    tag = TAGS[msg.type]
    values = []
    for name, default in FIELDS[tag][1]:
        value = msg.get(name, default)
        if value is REQUIRED:
            raise ValueError(f"{msg.type}.{name} is required")
        values.append(_nested(value))
    return msgpack.ExtType(tag, msgpack.packb(values, use_bin_type=True))


def _nested(value: Any) -> Any:
    if isinstance(value, Message):
        return _ext(value)
    if isinstance(value, list):
        return [_nested(v) for v in value]
    return value


def encode(msg: Message) -> bytes:
    """A single frame: the header, then the message as a msgpack extension object."""
    return bytes([MAGIC, VERSION]) + msgpack.packb(_ext(msg), use_bin_type=True)


def _ext_hook(tag: int, data: bytes) -> Message:
    if tag not in FIELDS:
        raise ValueError(f"unknown message tag {tag}")
    name, fields = FIELDS[tag]
    values = msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)
    decoded = {}
    for i, (field, default) in enumerate(fields):   # values past the fields we know: ignored
        if i < len(values):
            decoded[field] = values[i]
        elif default is REQUIRED:
            raise ValueError(f"{name} lacks its field {field}")
        else:
            decoded[field] = default.copy() if isinstance(default, (list, dict)) else default
    return Message(name, decoded)


def decode(frame: bytes) -> list[Message]:
    """The messages in one frame: itself, or every frame inside a batch frame."""
    if len(frame) < 2 or frame[0] not in (MAGIC, BATCH_MAGIC):
        raise ValueError("not a para frame")
    if frame[1] != VERSION:
        raise ValueError(f"parad speaks protocol {frame[1]}, this client {VERSION}")
    if frame[0] == BATCH_MAGIC:
        return [m for single in msgpack.unpackb(frame[2:], raw=False) for m in decode(single)]
    return [msgpack.unpackb(frame[2:], ext_hook=_ext_hook, raw=False, strict_map_key=False)]


# ---- Sockets (PROTOCOL.md: Sockets) -----------------------------------------

def default_runtime_dir() -> Path:
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return Path(xdg) / "para"
    return Path(f"/tmp/para-{os.getuid()}")


def parad_running(runtime_dir: Path) -> bool:
    """The pid in parad.lock is a live process, and control.sock exists."""
    try:
        pid = int((runtime_dir / "parad.lock").read_text().strip())
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except (OSError, ValueError, IndexError):
        return False
    return state not in (b"Z", b"X") and (runtime_dir / "control.sock").exists()


class Connection:
    """One DEALER on control.sock; what parad sends waits in `inbox` until asked for."""

    def __init__(self, runtime_dir: Path, timeout: float = 60.0) -> None:
        if not parad_running(runtime_dir):
            raise SystemExit(f"no parad at {runtime_dir}")
        self.runtime_dir, self.timeout = runtime_dir, timeout
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(f"ipc://{runtime_dir / 'control.sock'}")
        self.events: zmq.Socket | None = None
        self.published: list[tuple[str, Message]] = []
        self.inbox: list[Message] = []
        self.reqs = 0
        self.welcome: Message | None = None

    def close(self) -> None:
        if self.events is not None:
            self.events.close()
        self.sock.close()
        self.ctx.term()

    def send(self, msg: Message) -> None:
        self.sock.send(encode(msg))

    def request(self, type_: str, **fields: Any) -> int:
        """Send a request with the next request number; that number."""
        self.reqs += 1
        self.send(message(type_, req=self.reqs, **fields))
        return self.reqs

    def wait_for(self, match: Callable[[Message], bool], what: str) -> Message:
        """The first message (received or still to come) that `match`es, taken from the inbox."""
        deadline = time.monotonic() + self.timeout
        while True:
            for i, msg in enumerate(self.inbox):
                if match(msg):
                    return self.inbox.pop(i)
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000) + 1):
                raise SystemExit(f"no {what} from parad within {self.timeout:g}s; got {self.inbox!r:.2000}")
            self.inbox += decode(self.sock.recv())

    def answer(self, req: int) -> Message:
        return self.wait_for(lambda m: m.get("req") == req and m.type in ("Accepted", "Reply", "Pong", "ErrorReply"),
                             f"answer to request {req}")

    def hello(self) -> Message:
        self.send(message("Hello", client="foreign-client", pid=os.getpid()))
        welcome = self.wait_for(lambda m: m.type == "Welcome" or (m.type == "ErrorReply" and m["req"] == 0),
                                "Welcome")
        if welcome.type != "Welcome" or welcome["protocol"] != VERSION:
            raise SystemExit(f"parad did not welcome us: {welcome!r}")
        self.welcome = welcome
        return welcome

    def query(self, what: str, arg: str | None = None) -> Any:
        reply = self.answer(self.request("Query", what=what, arg=arg))
        if reply.type != "Reply":
            raise SystemExit(f"query {what} refused: {reply!r}")
        return reply["body"]

    def done(self, task_id: str) -> Message:
        return self.wait_for(lambda m: m.type == "Done" and m["result"]["id"] == task_id, f"Done of {task_id}")

    def subscribe(self, topics: list[str]) -> None:
        """A SUB on events.sock; returns once parad counts the subscriptions (status: daemon.watchers)."""
        self.events = self.ctx.socket(zmq.SUB)
        self.events.setsockopt(zmq.LINGER, 0)
        for topic in topics:
            self.events.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self.events.connect(f"ipc://{self.runtime_dir / 'events.sock'}")
        deadline = time.monotonic() + self.timeout
        while self.query("status")["daemon"]["watchers"] < len(topics):
            if time.monotonic() > deadline:
                raise SystemExit("parad never counted our event subscriptions")
            self.events.poll(20)   # nothing comes before parad applies them: a pause between queries

    def event(self, match: Callable[[str, Message], bool], what: str) -> tuple[str, Message]:
        """The first event (received or still to come) that `match`es; the others wait in `published`."""
        deadline = time.monotonic() + self.timeout
        while True:
            for i, (topic, msg) in enumerate(self.published):
                if match(topic, msg):
                    return self.published.pop(i)
            left = deadline - time.monotonic()
            if left <= 0 or not self.events.poll(int(left * 1000) + 1):
                raise SystemExit(f"no event {what} within {self.timeout:g}s; got {self.published!r:.2000}")
            topic, frame = self.events.recv_multipart()
            self.published += [(topic.decode(), msg) for msg in decode(frame)]


# ---- What the test asks of it ------------------------------------------------

def task(task_id: str, tool: str, args: dict[str, Any], **options: Any) -> Message:
    return message("TaskSpec", id=task_id, tool=tool, args=args, **options)


def result_of(done: Message) -> dict[str, Any]:
    r = done["result"]
    return {**r, "stdout": r["stdout"].decode(), "stderr": r["stderr"].decode()}


def run(runtime_dir: Path, workspace: str) -> dict[str, Any]:
    conn = Connection(runtime_dir)
    try:
        welcome = conn.hello()
        prefix = secrets.token_hex(4)
        conn.subscribe(["results"])

        # A bash task (with the caller's workspace, cwd and environment) and an echo task, in one Submit.
        bash_id, echo_id = f"{prefix}-1", f"{prefix}-2"
        bash = task(bash_id, "bash", {"command": "echo hi", "cwd": workspace, "caller_env": dict(os.environ)},
                    workspace=workspace, stream=True)
        echo = task(echo_id, "echo", {"greeting": "hello", "n": [1, 2]})
        accepted = conn.answer(conn.request("Submit", tasks=[bash, echo]))
        bash_done, echo_done = conn.done(bash_id), conn.done(echo_id)
        chunks = [c for c in conn.inbox if c.type == "Chunk" and c["task_id"] == bash_id]

        # Refusals: an unknown tool, and an argument of the wrong type, each named by its task.
        req = conn.request("Submit", tasks=[task(f"{prefix}-3", "no-such-tool", {}),
                                            task(f"{prefix}-4", "bash", {"command": 5})])
        refusals = []
        while (answer := conn.answer(req)).type == "ErrorReply":
            refusals.append(dict(answer))
        # A frame that is no para frame: refused with request number 0.
        conn.sock.send(b"\x00\x01 not para")
        bad_frame = conn.wait_for(lambda m: m.type == "ErrorReply" and m["req"] == 0, "refusal of a bad frame")

        # Streamed stdin: input once the first InputAck says the command started, then EOF.
        stdin_id = f"{prefix}-5"
        conn.request("Submit", tasks=[task(stdin_id, "bash", {"command": "tr a-z A-Z", "stdin_stream": True})],
                     ack=False)
        opened = conn.wait_for(lambda m: m.type == "InputAck" and m["task_id"] == stdin_id, "first InputAck")
        conn.request("Input", task_id=stdin_id, data=b"shout\n", eof=True)
        stdin_done = conn.done(stdin_id)

        status = conn.query("status")
        pong = conn.answer(conn.request("Ping"))
        events = {}
        for task_id in (bash_id, echo_id):
            events[task_id] = conn.event(lambda t, m, i=task_id: m.type == "TaskEvent" and m["task_id"] == i,
                                         f"for task {task_id}")[1]
        return {
            "welcome": dict(welcome), "accepted": dict(accepted),
            "bash": result_of(bash_done), "echo": result_of(echo_done), "stdin": result_of(stdin_done),
            "chunks": [{**c, "data": c["data"].decode()} for c in chunks],
            "refusals": refusals, "refusals_accepted": dict(answer), "bad_frame": dict(bad_frame),
            "input_opened": dict(opened), "status_pid": status["daemon"]["pid"], "pong": dict(pong),
            "events": {i: dict(e) for i, e in events.items()},
        }
    finally:
        conn.close()


def resume(runtime_dir: Path, old_boot: str, ids: list[str]) -> dict[str, Any]:
    """After parad restarted: a new connection asks for the earlier tasks by id."""
    conn = Connection(runtime_dir)
    try:
        welcome = conn.hello()
        pong = conn.answer(conn.request("Ping"))
        never = f"{secrets.token_hex(4)}-never"
        reply = conn.answer(conn.request("Await", task_ids=[*ids, never]))
        results = {task_id: result_of(conn.done(task_id)) for task_id in reply["body"]["finished"]}
        return {"restarted": welcome["boot"] != old_boot, "pong": dict(pong), "welcome": dict(welcome),
                "await": reply["body"], "never": never, "results": results}
    finally:
        conn.close()


def main(argv: list[str]) -> None:
    if len(argv) >= 3 and argv[0] == "run":
        report = run(Path(argv[1]), argv[2])
    elif len(argv) >= 3 and argv[0] == "resume":
        report = resume(Path(argv[1]), argv[2], argv[3:])
    else:
        raise SystemExit(__doc__)
    print(json.dumps(report, default=repr))


if __name__ == "__main__":
    main(sys.argv[1:] if len(sys.argv) > 1 else [])
