"""admission.py's checks of a well-formed task, without pydantic: the common case, fast.

parad admits every task of a map() on its one loop, and pydantic's model_validate
of a TaskSpec's attributes costs several microseconds a task. `envelope_ok` says
True only for a task that TaskEnvelope accepts too (the same types, exact, and
the same bounds); for anything else it says False and admission asks pydantic,
whose error message names what is wrong. So it may only make admission faster,
never more lenient: tests/test_admission_fast.py holds the two side by side.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from para.ipc import messages as m

# admission.ID_PATTERN without its anchors: fullmatch is what the pattern's ^...$ means to pydantic
# (Python's `$` would also match before a final newline).
_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_RETRY_ON = frozenset({"lost", "failed", "timed_out"})
_NUMBER = (int, float)   # exact types: a bool is not a number to the strict envelope


def envelope_ok(spec: m.TaskSpec) -> bool:
    """Whether TaskEnvelope (strict) surely accepts `spec`; False means: ask pydantic."""
    task_id, tool, timeout, session = spec.id, spec.tool, spec.timeout, spec.session
    if not (type(task_id) is str and _ID.fullmatch(task_id) is not None
            and type(tool) is str and 0 < len(tool) <= 64 and type(spec.args) is dict
            and type(spec.priority) is int and 0 <= spec.priority <= 4 and type(spec.stream) is bool
            and (timeout is None or (type(timeout) in _NUMBER and timeout > 0))
            and (session is None or (type(session) is str and len(session) <= 256))):
        return False
    retries, retry_on, backoff = spec.retries, spec.retry_on, spec.retry_backoff
    key, workspace = spec.idempotency_key, spec.workspace
    return ((retries is None or (type(retries) is int and 0 <= retries <= 100))
            and (retry_on is None or (type(retry_on) is list
                                      and all(type(s) is str and s in _RETRY_ON for s in retry_on)))
            and (backoff is None or (type(backoff) in _NUMBER and 0 <= backoff <= 3600))
            and (key is None or (type(key) is str and 0 < len(key) <= 256))
            and (workspace is None or (type(workspace) is str and 0 < len(workspace) <= 4096)))


def takes_any_args(model: type[BaseModel], admit: Any, base_admit: Any) -> bool:
    """Whether `model` takes any dict with string keys as it is (no fields, extra allowed, no
    validators) and the tool's own `admit` is the base one, which checks nothing: then a task's
    arguments need no model built (`any_args_ok`). echo's are such."""
    decorators = model.__pydantic_decorators__
    return (not model.model_fields and model.model_config.get("extra") == "allow"
            and not (decorators.validators or decorators.field_validators or decorators.root_validators
                     or decorators.model_validators)
            and admit is base_admit)


_STR_ONLY = frozenset({str})


def any_args_ok(args: dict[str, Any]) -> bool:
    """What such a model checks: every key a string. False means: ask pydantic (its message)."""
    return not args or _STR_ONLY.issuperset(map(type, args))
