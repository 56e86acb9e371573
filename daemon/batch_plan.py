"""A batch's plan, checked and resolved without running anything: its graph and its references.

The graph: duplicate ids, unknown dependencies and cycles are refused with the
offending ids named (`check_graph`).

References: a string argument may use an earlier task's output, if that task
is in its `after` list:

    ${NAME.stdout}   ${NAME.stderr}   ${NAME.exit_code}
    ${NAME.value}    ${NAME.value.KEY.KEY}     (a field of a tool's answer)

`${cwd}` is the directory the batch was submitted from (tools want absolute
paths), substituted before anything is checked.

A string that is one reference and nothing else becomes the referenced value
itself (a list stays a list); inside a longer string it is interpolated
(stdout with its trailing newline removed, other values as JSON).
"""

from __future__ import annotations

import collections
import json
import re
from typing import Any

from para.ipc import messages as m

REFERENCE = re.compile(r"\$\{([A-Za-z0-9_.-]+?)\.(stdout|stderr|exit_code|value)((?:\.[A-Za-z0-9_-]+)*)\}")


class BatchError(Exception):
    """A batch refused before anything ran."""


def check_graph(batch_id: str, ids: list[str], after: dict[str, list[str]]) -> None:
    """BatchError naming the duplicate, unknown or cyclic ids, if any."""
    dupes = sorted(i for i, n in collections.Counter(ids).items() if n > 1)
    if dupes:
        raise BatchError(f"batch {batch_id}: duplicate task ids {_names(dupes)}")
    known = set(ids)
    strangers = sorted({d for i in ids for d in after.get(i, []) if d not in known} | (set(after) - known))
    if strangers:
        raise BatchError(f"batch {batch_id}: 'after' names unknown task ids {_names(strangers)}")
    indegree = {i: len(set(after.get(i, []))) for i in ids}
    dependents: dict[str, list[str]] = {i: [] for i in ids}
    for i in ids:
        for d in set(after.get(i, [])):
            dependents[d].append(i)
    ready = [i for i, n in indegree.items() if n == 0]
    while ready:
        for j in dependents[ready.pop()]:
            indegree[j] -= 1
            if indegree[j] == 0:
                ready.append(j)
    cyclic = sorted(i for i, n in indegree.items() if n > 0)
    if cyclic:
        raise BatchError(f"batch {batch_id}: dependency cycle among {_names(cyclic)}")


def _names(ids: list[str]) -> str:
    return ", ".join(i.split(":", 1)[-1] for i in ids)


def references(value: Any) -> set[str]:
    """Names of the tasks that `value` (arguments, nested) refers to."""
    if isinstance(value, str):
        return {match.group(1) for match in REFERENCE.finditer(value)}
    if isinstance(value, dict):
        return set().union(*(references(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(references(v) for v in value)) if value else set()
    return set()


def substitute_cwd(value: Any, cwd: str) -> Any:
    if isinstance(value, str):
        return value.replace("${cwd}", cwd)
    if isinstance(value, dict):
        return {k: substitute_cwd(v, cwd) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_cwd(v, cwd) for v in value]
    return value


def resolve(value: Any, results: dict[str, m.TaskResult]) -> Any:
    """`value` with every reference replaced by what it names (see the module docstring)."""
    if isinstance(value, dict):
        return {k: resolve(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, results) for v in value]
    if not isinstance(value, str) or "${" not in value:
        return value
    whole = REFERENCE.fullmatch(value)
    if whole:
        return _lookup(whole, results)
    return REFERENCE.sub(lambda match: _as_text(_lookup(match, results)), value)


def _lookup(match: re.Match, results: dict[str, m.TaskResult]) -> Any:
    name, what, path = match.group(1), match.group(2), match.group(3)
    result = results[name]
    if what in ("stdout", "stderr"):
        data = getattr(result, what)
        text = data.decode(errors="replace") if isinstance(data, bytes) else (data or "")
        return text[:-1] if text.endswith("\n") else text
    if what == "exit_code":
        return result.exit_code
    value = result.value
    for key in filter(None, path.split(".")):
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            raise BatchError(f"{match.group(0)}: task {name}'s value has no {key!r}")
    return value


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
