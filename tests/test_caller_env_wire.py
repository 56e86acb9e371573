"""A task's caller_env on the wire: packed once while it repeats, decoded once per distinct value,
and every task still running with its own caller's environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from para.ipc import codec
from para.ipc import messages as m
from para.testing import wait_until


def _assign(task_id: str, env: dict[str, str] | None) -> m.Assign:
    return m.Assign(m.TaskSpec(task_id, "bash", {"command": "true", "caller_env": env}), 1)


def _to_worker(msg: m.Assign) -> m.Assign:
    return codec.decode(codec.encode(msg, env_ext=True))


def test_an_environment_that_repeats_decodes_to_one_dict_and_a_changed_one_to_its_new_value() -> None:
    env = {"HOME": "/home/a", "X": "1"}
    first = _to_worker(_assign("a", env)).task.args["caller_env"]
    second = _to_worker(_assign("b", dict(env))).task.args["caller_env"]
    assert first == env and second is first   # decoded once: parad and the worker check it once
    env["X"] = "2"   # the caller's dict changed after it was sent: what goes next is the new value
    assert _to_worker(_assign("c", env)).task.args["caller_env"] == {"HOME": "/home/a", "X": "2"}
    assert _to_worker(_assign("d", {"Y": "3"})).task.args["caller_env"] == {"Y": "3"}
    assert _to_worker(_assign("e", None)).task.args["caller_env"] is None


def _caller_env_sent(spec: m.TaskSpec, env_ext: bool) -> object:
    outer = msgpack.unpackb(codec.encode(spec, env_ext=env_ext)[2:])
    return msgpack.unpackb(outer.data)[2]["caller_env"]


def test_the_environment_is_an_extension_of_its_own_to_workers_only_and_a_plain_map_is_taken_too() -> None:
    spec = m.TaskSpec("a", "bash", {"command": "true", "caller_env": {"X": "1"}})
    assert _caller_env_sent(spec, env_ext=True) == msgpack.ExtType(m.ENV_TAG, msgpack.packb({"X": "1"}))
    # To anyone else (a client's Submit, a journal row) a plain map: a parad or a journal reader
    # of an earlier release does not know the extension.
    assert _caller_env_sent(spec, env_ext=False) == {"X": "1"}
    assert _caller_env_sent(m.TaskSpec("b", "bash", {"caller_env": {"X": "1"}}), env_ext=False) == {"X": "1"}
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


def test_an_environment_goes_to_a_worker_as_given_not_as_an_equal_looking_earlier_one() -> None:
    # True == 1 == 1.0 and a list may change in place: only a map of str to str is remembered.
    def sent(env: dict) -> object:
        return _to_worker(_assign("t", env)).task.args["caller_env"]
    got = [sent({"n": v})["n"] for v in (1, True, 1.0, 0, False)]
    assert [type(v) for v in got] == [int, bool, float, int, bool], got
    env = {"paths": ["/a"]}
    assert sent(env) == {"paths": ["/a"]}
    env["paths"].append("/b")
    assert sent(env) == {"paths": ["/a", "/b"]}


def test_tasks_that_run_again_after_a_crash_keep_their_callers_environment(start_daemon, tmp_path: Path) -> None:
    # The journal drops caller_env from a row once its task cannot run again: a started task with
    # retries left, and a queued one, can, and must run with their own environment after a crash.
    pools = {"bash": {"min_workers": 1, "max_workers": 1, "credit": 1}, "echo": {"min_workers": 1, "max_workers": 1}}
    d = start_daemon(pools=pools)
    out = tmp_path / "out"
    base = {"PATH": "/usr/bin:/bin"}
    with d.client() as c:
        first = c.submit("bash", command=f'echo "first $X" >> {out}; sleep 3', retries=1, caller_env={**base, "X": "one"})
        wait_until(lambda: out.exists() and out.read_text() == "first one\n", 20, "the first to start")
        queued = c.submit("bash", command=f'echo "queued $X" >> {out}', caller_env={**base, "X": "two"})
        wait_until(lambda: c.task(queued.id)["task"]["state"] == "queued", 20, "queued")
    d.kill()
    d.restart()
    with d.client() as c:
        wait_until(lambda: c.task(queued.id)["task"]["state"] == "succeeded"
                   and c.task(first.id)["task"]["state"] == "succeeded", 40, "both to end after the restart")
    assert sorted(out.read_text().splitlines()) == ["first one", "first one", "queued two"]


def test_clients_in_other_processes_with_other_environments_each_get_theirs(daemon) -> None:
    script = ("import sys; from para.client import Client\n"
              "with Client(sys.argv[1]) as c:\n"
              "    rs = c.map('bash', [{'command': 'echo $WIRE_V', 'cwd': '/'} for _ in range(60)])\n"
              "    print(sorted({r.stdout for r in rs}))\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(daemon.runtime_dir)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "WIRE_V": v}) for v in ("aaa", "bbb", "ccc")]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert outs == ["['aaa\\n']", "['bbb\\n']", "['ccc\\n']"], outs
