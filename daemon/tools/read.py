"""read: a file's lines, with offset and limit, a byte cap and binary detection."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from para.daemon.tools.base import Finished, StrictModel, TaskContext, ToolFailure
from para.daemon.tools.reader import ReadOnlyTool
from para.sandbox.policy import ReadOnlySandbox

SNIFF = 8192


class ReadArgs(StrictModel):
    path: str = Field(min_length=1, description="absolute path of the file (~ allowed)")
    offset: int = Field(0, ge=0, description="lines to skip")
    limit: int | None = Field(None, gt=0, description="lines to return at most")
    max_bytes: int | None = Field(None, gt=0, description="bytes to return at most; may only lower the pool's cap")


class ReadOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_bytes: int = Field(256 << 10, gt=0, description="bytes of lines returned at most per read")
    sandbox: ReadOnlySandbox = Field(default_factory=ReadOnlySandbox)


class Read(ReadOnlyTool):
    """Lines of a text file. A binary file (a NUL byte in its first 8 KiB) gives
    `binary: true` and no lines rather than an error, so a caller can tell."""

    name = "read"
    description = ("Reads a text file's lines (with an offset, a line limit and a byte cap), as the owner of the "
                   "workspace; a binary file answers `binary: true` and no lines.")
    Args = ReadArgs
    Options = ReadOptions

    def run(self, args: ReadArgs, options: ReadOptions, ctx: TaskContext) -> Finished:
        ids = self.read_as(options, ctx)  # this thread reads as the task's identity (see reader.py)
        path = Path(os.path.expanduser(args.path))
        if not path.is_absolute():
            raise ToolFailure(f"path {args.path!r} is not absolute; pass a full path")
        cap = min(options.max_bytes, args.max_bytes or options.max_bytes)
        try:
            # O_NONBLOCK: opening a FIFO must not hang the worker; only regular files are read.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                os.close(fd)
                if stat.S_ISDIR(info.st_mode):
                    raise IsADirectoryError
                raise ToolFailure(f"{path} is not a regular file (a FIFO, socket or device); read only reads files")
            os.set_blocking(fd, True)
            with os.fdopen(fd, "rb") as f:
                size = info.st_size
                if b"\0" in f.read(SNIFF):
                    return Finished(value={"path": str(path), "size": size, "binary": True, "lines": [],
                                           "offset": args.offset, "truncated": False, "eof": True})
                f.seek(0)
                lines, truncated, eof = _lines(f, args.offset, args.limit, cap)
        except FileNotFoundError:
            raise ToolFailure(f"{path}: no such file") from None
        except IsADirectoryError:
            raise ToolFailure(f"{path} is a directory; use glob to list it") from None
        except PermissionError:
            raise ToolFailure(f"{path}: permission denied{self.denied_hint(options, ids)}") from None
        return Finished(value={"path": str(path), "size": size, "binary": False, "lines": lines,
                               "offset": args.offset, "truncated": truncated, "eof": eof})


def _lines(f, offset: int, limit: int | None, cap: int) -> tuple[list[str], bool, bool]:
    """Read lines lazily: skip `offset`, stop at `limit` lines or `cap` bytes."""
    lines: list[str] = []
    used = 0
    for number, raw in enumerate(f):
        if number < offset:
            continue
        if limit is not None and len(lines) >= limit:
            return lines, False, False
        if used + len(raw) > cap:
            return lines, True, False
        used += len(raw)
        lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
    return lines, False, True
