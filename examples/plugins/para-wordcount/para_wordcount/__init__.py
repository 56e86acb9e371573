"""wordcount: an example para plugin tool (README: Plugin tools).

Counts the lines, words and bytes of some text or of files in the task's
workspace, like `wc`. It shows the whole tool API: a described pydantic
argument model, pool options, retry_safe and read_only, its own pool
defaults, and a run that streams one line per input (ctx.output) and
reports progress (ctx.progress) as it goes.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from para.daemon.tools.base import Finished, TaskContext, Tool, ToolFailure


class WordCountArgs(BaseModel):
    # Arguments arrive over the wire: no unknown keys, no silent coercion.
    model_config = ConfigDict(extra="forbid", strict=True)
    text: str | None = Field(None, description="text to count")
    paths: list[str] = Field(default_factory=list, description="files to count, relative to the task's workspace")


class WordCountOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_file_bytes: int = Field(64 << 20, ge=1, description="files larger than this are refused")


class WordCount(Tool):
    name = "wordcount"
    description = "Counts the lines, words and bytes of text or of files in the workspace, like wc."
    Args = WordCountArgs
    Options = WordCountOptions
    retry_safe = True     # it only reads: running it again after a lost worker is harmless
    read_only = True
    default_credit = 4
    pool_defaults = {"min_workers": 1, "max_workers": 4, "default_timeout": 60}

    def run(self, args: WordCountArgs, options: WordCountOptions, ctx: TaskContext) -> Finished:
        if args.text is None and not args.paths:
            raise ToolFailure("give text or paths to count")
        inputs = ([("<text>", args.text.encode())] if args.text is not None else []) + [(p, None) for p in args.paths]
        counts: list[dict[str, Any]] = []
        for done, (label, data) in enumerate(inputs):
            if data is None:
                data = _read(label, ctx.workspace, options.max_file_bytes)
            entry = {"name": label, "lines": data.count(b"\n"), "words": len(data.split()), "bytes": len(data)}
            counts.append(entry)
            ctx.output(f"{entry['lines']:8} {entry['words']:8} {entry['bytes']:8} {label}\n")
            ctx.progress(done + 1, len(inputs), label)
        return Finished(value={"counts": counts, "words": sum(c["words"] for c in counts)})


def _read(path: str, workspace: str | None, cap: int) -> bytes:
    full = os.path.join(workspace or os.getcwd(), path)
    try:
        if os.path.getsize(full) > cap:
            raise ToolFailure(f"{path}: larger than max_file_bytes ({cap}); raise the pool's option or count a smaller file")
        with open(full, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ToolFailure(f"{path}: {exc.strerror}") from None
