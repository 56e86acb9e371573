"""The msgpack encoding of para messages: the only module that knows the bytes.

A frame is a two-byte header (magic, protocol version) followed by msgpack.
A batch frame (magic BATCH_MAGIC) carries a list of encoded single frames, so
a busy peer pays one socket send for many messages and a relay can forward a
message's bytes without encoding it again. Each message dataclass is a msgpack
extension object whose payload is the list of its field values in declaration
order, so nested messages (a TaskSpec inside a Submit) round-trip as the same
types.

Decoding is bounded, because frames come from peers nobody vouches for (any
client, a command inside a task): messages nest at most MAX_DEPTH deep (each
level is a recursive unpack on the C stack), every length is bounded by the
bytes actually there, and a batch holds at most MAX_BATCH_FRAMES frames.
"""

from __future__ import annotations

import operator
from dataclasses import fields
from typing import Any

import msgpack

from para.ipc import PROTOCOL_VERSION
from para.ipc.messages import ENV_TAG, WIRE_TAGS, TaskSpec

MAGIC = 0xA7
BATCH_MAGIC = 0xA8
_HEADER = bytes([MAGIC, PROTOCOL_VERSION])
_BATCH_HEADER = bytes([BATCH_MAGIC, PROTOCOL_VERSION])
# Real messages nest 2 deep (Submit > TaskSpec, Done > TaskResult, Reply >
# TaskResult); the spare levels are for messages a caller puts in arguments.
MAX_DEPTH = 8
# Every sender puts at most BATCH_FRAMES frames in one batch (a batch of more
# goes out as several); receivers refuse past MAX_BATCH_FRAMES, a margin that
# lets a sender of an older release with a different batch size through.
BATCH_FRAMES = 1024
MAX_BATCH_FRAMES = 4 * BATCH_FRAMES

_FIELDS: dict[type, tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls)) for cls in WIRE_TAGS
}
# Each message's field values as a tuple, in one C call.
_VALUES: dict[type, Any] = {
    cls: operator.attrgetter(*names) if len(names) > 1 else (lambda message, name=names[0]: (getattr(message, name),))
    for cls, names in _FIELDS.items()
}
_BY_TAG: dict[int, type] = {tag: cls for cls, tag in WIRE_TAGS.items()}
_NAMES = {cls.__name__ for cls in WIRE_TAGS}
# Positions of fields declared to hold messages (Submit.tasks, Assign.task,
# Done.result): packed directly, which is several times faster than msgpack's
# `default` hook. The hook stays for messages nested anywhere else.
_NESTED: dict[type, tuple[int, ...]] = {
    cls: tuple(i for i, f in enumerate(fields(cls)) if any(n in str(f.type) for n in _NAMES))
    for cls in WIRE_TAGS
}


class ProtocolError(ValueError):
    """A frame that is not a para message of this protocol version."""


def _default(obj: Any) -> msgpack.ExtType:
    # msgpack's hook for messages nested where _NESTED does not look (a
    # TaskResult inside a Reply body); the shared packer is mid-pack here, so
    # the payload gets a packer of its own.
    return _ext(obj, msgpack.Packer(default=_default, use_bin_type=True))


def _hook_at(depth: int, newer_ok: bool = False) -> Any:
    """The ext hook for a message `depth` levels inside the frame's outer one; `newer_ok`: values
    past the fields this release knows (a newer peer appended them) are left out, not refused."""
    hooks = _NEWER_HOOKS if newer_ok else _HOOKS
    def hook(tag: int, payload: bytes) -> Any:
        cls = _BY_TAG.get(tag)
        if cls is None:
            if tag == ENV_TAG:
                return _env_of(payload)
            raise ProtocolError(f"unknown message type tag {tag}")
        if depth >= MAX_DEPTH:
            raise ProtocolError(f"messages nested more than {MAX_DEPTH} deep")
        values = msgpack.unpackb(payload, ext_hook=hooks[depth + 1], raw=False, strict_map_key=False)
        if not isinstance(values, list):
            raise ProtocolError(f"{cls.__name__}: body is not a list")
        try:
            return cls(*values)
        except TypeError as exc:
            known = len(_FIELDS[cls])
            if newer_ok and len(values) > known:
                try:
                    return cls(*values[:known])
                except TypeError:
                    pass
            raise ProtocolError(f"{cls.__name__}: {exc}") from None
    return hook


# One hook per level, so the depth needs no shared counter (clients decode in several threads). A hook
# finds the next level's in the list of its kind, which it holds: each list exists before it is filled.
_HOOKS: list[Any] = []
_NEWER_HOOKS: list[Any] = []
_HOOKS.extend(_hook_at(depth) for depth in range(MAX_DEPTH + 1))
_NEWER_HOOKS.extend(_hook_at(depth, newer_ok=True) for depth in range(MAX_DEPTH + 1))

# A task's caller_env (some 40 variables) travels with each of its tasks, and parad, then the
# worker, checked and filtered each copy. So on parad's way to its workers (`encode(...,
# env_ext=True)`) it goes as an extension of its own (ENV_TAG), packed once while it repeats, and
# decoded once per distinct environment: equal bytes give back the very dict decoded before, which
# the bash tool's checks remember. Nobody may change a decoded environment. Clients and the
# journal send a plain map: a parad (or a journal read by one) of an earlier release does not
# know the extension, and would drop the frame.
ENV_CACHE = 8                 # distinct environments remembered (clients with different ones)
ENV_CACHE_BYTES = 128 << 10   # larger ones are not kept (parad takes no larger one)
_envs_seen: tuple[tuple[bytes, dict[str, Any]], ...] = ()
_env_sent: tuple[dict[str, Any], msgpack.ExtType] | None = None


def _env_of(payload: bytes) -> dict[str, Any]:
    global _envs_seen
    seen = _envs_seen
    for packed, env in seen:
        if packed == payload:
            return env
    env = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    if not isinstance(env, dict):
        raise ProtocolError("an environment (extension type %d) is not a map" % ENV_TAG)
    if len(payload) <= ENV_CACHE_BYTES:
        _envs_seen = ((payload, env), *seen[:ENV_CACHE - 1])   # one assignment: safe across threads
    return env


def _env_ext(env: dict[str, Any], packer: msgpack.Packer) -> msgpack.ExtType | dict[str, Any]:
    global _env_sent
    sent = _env_sent
    # A C comparison, cheaper than packing. Only a map of str to str is remembered: then equal
    # means the same bytes (True == 1 == 1.0, and a list may change in place).
    if sent is not None and env == sent[0]:
        return sent[1]
    if not all(type(k) is str and type(v) is str for k, v in env.items()):
        return env
    ext = _new_ext(msgpack.ExtType, (ENV_TAG, packer.pack(env)))
    _env_sent = (dict(env), ext)   # a copy: the caller's dict may change afterwards
    return ext


def _spec_values(spec: TaskSpec, packer: msgpack.Packer) -> Any:
    values = _VALUES[TaskSpec](spec)
    args = values[2]   # TaskSpec.args
    env = args.get("caller_env") if type(args) is dict else None
    if type(env) is not dict or not env:
        return values
    values = list(values)
    values[2] = {**args, "caller_env": _env_ext(env, packer)}
    return values


_packer = msgpack.Packer(default=_default, use_bin_type=True)


# ExtType's own constructor checks its arguments in Python; ours are right by construction.
_new_ext = tuple.__new__


def _ext(message: Any, packer: msgpack.Packer = _packer, env_ext: bool = False) -> msgpack.ExtType:
    cls = type(message)
    tag = WIRE_TAGS.get(cls)
    if tag is None:
        raise TypeError(f"cannot encode {cls.__name__} on the para wire")
    values = _spec_values(message, packer) if env_ext and cls is TaskSpec else _VALUES[cls](message)
    nested = _NESTED[cls]
    if nested:
        values = list(values)
        for i in nested:
            value = values[i]
            if type(value) is list:
                values[i] = [_ext(v, packer, env_ext) if type(v) in WIRE_TAGS else v for v in value]
            elif type(value) in WIRE_TAGS:
                values[i] = _ext(value, packer, env_ext)
    # Inner payloads are packed before the outer one starts, so one Packer serves all.
    return _new_ext(msgpack.ExtType, (tag, packer.pack(values)))


def encode(message: Any, env_ext: bool = False) -> bytes:
    """Serialise one message dataclass to a frame. `env_ext`: a task's caller_env as ENV_TAG, for
    parad's own workers only (see above); anyone else gets a plain map."""
    return _HEADER + _packer.pack(_ext(message, _packer, env_ext))


def encode_batch(frames: list[bytes]) -> bytes:
    """Pack already-encoded frames into one; a single frame is returned as it is.

    At most BATCH_FRAMES of them: chunk longer lists with `chunks`."""
    if len(frames) == 1:
        return frames[0]
    return _BATCH_HEADER + msgpack.packb(frames, use_bin_type=True)


def chunks(items: list[Any], size: int = BATCH_FRAMES) -> list[list[Any]]:
    """`items` cut in runs of at most `size`, in order: one batch frame each."""
    return [items[start:start + size] for start in range(0, len(items), size)]


def split(frame: bytes) -> list[bytes]:
    """The single frames inside `frame` (itself, unless it is a batch)."""
    if len(frame) < 2 or frame[0] != BATCH_MAGIC:
        return [frame]
    _check_version(frame)
    body = frame[2:]
    size = len(body)
    try:
        frames = msgpack.unpackb(body, raw=False, max_array_len=MAX_BATCH_FRAMES, max_bin_len=size,
                                 max_str_len=0, max_map_len=0, max_ext_len=0)
    except Exception as exc:
        raise ProtocolError(f"malformed batch frame (at most {MAX_BATCH_FRAMES} frames): {exc}") from None
    if not isinstance(frames, list) or not all(isinstance(f, bytes) for f in frames):
        raise ProtocolError("batch frame must hold a list of frames")
    return frames


def _check_version(frame: bytes) -> None:
    if frame[1] != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version {frame[1]} is not supported (this side speaks "
            f"{PROTOCOL_VERSION}); upgrade para so client and daemon match"
        )


def request_number(frame: bytes) -> int:
    """The request number of a frame that does not decode (or is too large to), read without
    decoding the rest: a message's first field, when that is an integer; 0 if it cannot be told.
    The refusal then reaches the request, or the tasks of a Submit, that the frame was."""
    if len(frame) < 3 or frame[0] != MAGIC:
        return 0
    unpacker = msgpack.Unpacker(max_buffer_size=len(frame))
    unpacker.feed(frame[2:])
    try:
        ext = unpacker.unpack()
        if not isinstance(ext, msgpack.ExtType):
            return 0
        fields_of = msgpack.Unpacker(max_buffer_size=len(ext.data))
        fields_of.feed(ext.data)
        if fields_of.read_array_header() < 1:
            return 0
        first = fields_of.unpack()
    except Exception:   # whatever is wrong with it, this frame's number cannot be told
        return 0
    return first if type(first) is int and 0 < first < 1 << 63 else 0


def decode(frame: bytes, newer_ok: bool = False) -> Any:
    """Parse a single frame into its message dataclass; ProtocolError says what is wrong.

    parad refuses a message with more values than its fields (the sender must not send what it
    lacks); a client decodes with `newer_ok`, leaving such values out, so that a newer parad that
    appended a field to a message does not break it (docs/PROTOCOL.md, Encoding)."""
    if len(frame) < 2 or frame[0] != MAGIC:
        raise ProtocolError("not a para frame (bad magic byte); is this a para client?")
    _check_version(frame)
    body = frame[2:]
    size = len(body)
    try:
        # msgpack >= 1.0 derives these bounds from the buffer too; stated so that
        # no version or default lets a 5-byte header claim 4 GiB. Nested payloads
        # are slices of this body, so the same bounds hold for them.
        message = msgpack.unpackb(body, ext_hook=(_NEWER_HOOKS if newer_ok else _HOOKS)[0], raw=False,
                                  strict_map_key=False,
                                  max_str_len=size, max_bin_len=size, max_ext_len=size,
                                  max_array_len=size, max_map_len=size // 2)
    except ProtocolError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"malformed msgpack body: {exc}") from None
    if type(message) not in WIRE_TAGS:
        raise ProtocolError("frame body is not a para message")
    return message
