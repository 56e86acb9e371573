"""A task's caller_env on the wire: packed once while it repeats, decoded once per distinct value,
and every task still running with its own caller's environment."""

from __future__ import annotations

import msgpack
import pytest

from para.ipc import codec
from para.ipc import messages as m


def _assign(task_id: str, env: dict[str, str] | None) -> m.Assign:
    return m.Assign(m.TaskSpec(task_id, "bash", {"command": "true", "caller_env": env}), 1)


def test_an_environment_that_repeats_decodes_to_one_dict_and_a_changed_one_to_its_new_value() -> None:
    env = {"HOME": "/home/a", "X": "1"}
    first = codec.decode(codec.encode(_assign("a", env))).task.args["caller_env"]
    second = codec.decode(codec.encode(_assign("b", dict(env)))).task.args["caller_env"]
    assert first == env and second is first   # decoded once: parad and the worker check it once
    env["X"] = "2"   # the caller's dict changed after it was sent: what goes next is the new value
    assert codec.decode(codec.encode(_assign("c", env))).task.args["caller_env"] == {"HOME": "/home/a", "X": "2"}
    assert codec.decode(codec.encode(_assign("d", {"Y": "3"}))).task.args["caller_env"] == {"Y": "3"}
    assert codec.decode(codec.encode(_assign("e", None))).task.args["caller_env"] is None


def test_the_environment_is_an_extension_of_its_own_and_a_plain_map_is_taken_too() -> None:
    spec = m.TaskSpec("a", "bash", {"command": "true", "caller_env": {"X": "1"}})
    outer = msgpack.unpackb(codec.encode(spec)[2:])
    args = msgpack.unpackb(outer.data)[2]
    assert args["caller_env"] == msgpack.ExtType(m.ENV_TAG, msgpack.packb({"X": "1"}))
    # What an older client (or one written from docs/PROTOCOL.md alone) sends: a map.
    plain = msgpack.ExtType(m.WIRE_TAGS[m.TaskSpec], msgpack.packb(["a", "bash", {"command": "true", "caller_env": {"X": "1"}}]))
    frame = bytes([codec.MAGIC, codec.PROTOCOL_VERSION]) + msgpack.packb(plain)
    assert codec.decode(frame) == spec


def test_an_environment_that_is_no_map_is_a_protocol_error() -> None:
    env = msgpack.ExtType(m.ENV_TAG, msgpack.packb([1, 2]))
    body = msgpack.ExtType(m.WIRE_TAGS[m.TaskSpec], msgpack.packb(["a", "bash", {"caller_env": env}]))
    with pytest.raises(codec.ProtocolError, match="environment"):
        codec.decode(bytes([codec.MAGIC, codec.PROTOCOL_VERSION]) + msgpack.packb(body))


def test_tasks_with_different_environments_each_see_their_own(daemon) -> None:
    # More distinct environments than the decoder remembers, interleaved, with the pool's own
    # (None) among them: no check or filter remembered for one may serve another.
    envs = [{"PATH": "/usr/bin:/bin", "X": str(i), "MY_TOKEN": "secret"} for i in range(codec.ENV_CACHE + 3)] + [None]
    tasks = [{"command": 'echo "${X-unset} ${MY_TOKEN-dropped}"', "cwd": "/", "caller_env": envs[i % len(envs)]}
             for i in range(3 * len(envs))]
    with daemon.client() as c:
        got = [r.stdout for r in c.map("bash", tasks)]
    want = [f"{env['X'] if env else 'unset'} dropped\n" for env in (t["caller_env"] for t in tasks)]
    assert got == want
