"""Whether a decoded message's fields hold the types its dataclass declares.

The codec builds a message from whatever values a frame carries (a Heartbeat
whose rss is a string decodes fine), and the hot paths read fields without
checking them. Where a peer is not parad's own code, its messages pass
`check` first: top-level fields and nested messages, not the insides of
lists and dicts, which cost more than they protect.
"""

from __future__ import annotations

import operator
from dataclasses import fields
from typing import Any

from para.ipc.codec import ProtocolError
from para.ipc.messages import WIRE_TAGS

_BY_NAME: dict[str, tuple[type, ...]] = {
    "str": (str,), "bytes": (bytes,), "bool": (bool,), "int": (int,), "float": (float, int),
    "None": (type(None),), "list": (list,), "dict": (dict,),
} | {cls.__name__: (cls,) for cls in WIRE_TAGS}


def _allowed(annotation: str) -> tuple[type, ...] | None:
    """`str | None` -> (str, NoneType); None where anything goes (Any)."""
    allowed: list[type] = []
    for part in annotation.split("|"):
        name = part.strip().split("[", 1)[0]
        if name == "Any":
            return None
        allowed += _BY_NAME[name]
    return tuple(allowed)


_SHAPES: dict[type, tuple[tuple[str, tuple[type, ...]], ...]] = {
    cls: tuple((f.name, t) for f in fields(cls) if (t := _allowed(str(f.type))) is not None)
    for cls in WIRE_TAGS
}
# Fields declared to hold one message (Done.result, Assign.task): checked in turn.
_NESTED: dict[type, tuple[str, ...]] = {
    cls: tuple(name for name, allowed in shape if allowed[0] in WIRE_TAGS) for cls, shape in _SHAPES.items()
}


def check(message: Any, expected: tuple[type, ...]) -> None:
    """Raise ProtocolError unless `message` is one of `expected` with every field of its declared type."""
    if type(message) not in expected:
        raise ProtocolError(f"{type(message).__name__} is not expected here (expected "
                            f"{' or '.join(cls.__name__ for cls in expected)})")
    _check_fields(message)


# Per message type: its checked fields' values in one C call, and their allowed types in the same order.
_CHECKS: dict[type, tuple[Any, tuple[tuple[type, ...], ...]]] = {
    cls: (operator.attrgetter(*(name for name, _ in shape)), tuple(allowed for _, allowed in shape))
    for cls, shape in _SHAPES.items() if len(shape) > 1
}


def _check_fields(message: Any) -> None:
    cls = type(message)
    check = _CHECKS.get(cls)
    # Every field at once (isinstance mapped in C); the slow loop only finds which one is wrong.
    if check is None or not all(map(isinstance, check[0](message), check[1])):
        for name, allowed in _SHAPES[cls]:
            if not isinstance(getattr(message, name), allowed):
                raise ProtocolError(f"{cls.__name__}.{name} is {type(getattr(message, name)).__name__}, "
                                    f"expected {' or '.join(t.__name__ for t in allowed)}")
    for name in _NESTED[cls]:
        _check_fields(getattr(message, name))
