"""A task's options: what a caller may set beside a task's id, tool and arguments.

`TaskSpec` (messages.py) is their one definition: every field after `args`
is an option, with its type and default there. The client's split of
keyword arguments into options and tool arguments, a batch spec's task keys,
`paractl run`'s key=value options and the daemon's check of a submitted task
(`TaskEnvelope`, which adds the bounds) are all derived from it or tested
against it, so an option added in one place and not the others fails a test.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any

from para.ipc.messages import TaskSpec

TASK_FIELDS = ("id", "tool", "args")
"""What every task has; everything else in a TaskSpec is an option."""

TASK_OPTIONS: tuple[str, ...] = tuple(f.name for f in fields(TaskSpec) if f.name not in TASK_FIELDS)
"""Every task option, in TaskSpec's (wire) order."""

DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(TaskSpec)
                            if f.name in TASK_OPTIONS and f.default is not MISSING}
"""Each option's value when a caller names none."""


def options_except(*excluded: str) -> tuple[str, ...]:
    """TASK_OPTIONS without `excluded`: a documented subset. ValueError if one of them is no option,
    so renaming an option cannot leave a stale exclusion behind."""
    unknown = [name for name in excluded if name not in TASK_OPTIONS]
    if unknown:
        raise ValueError(f"not task options: {', '.join(unknown)}; the options are {', '.join(TASK_OPTIONS)}")
    return tuple(name for name in TASK_OPTIONS if name not in excluded)

