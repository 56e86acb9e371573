"""Whose file permissions a root worker reads with: Linux's per-thread filesystem ids.

A worker of a read-only tool (read, glob, grep) reads files itself. When
parad runs as root it must not read them as root: `as_reader` makes the
calling thread's file permission checks use another user's ids (setfsuid,
setfsgid; the kernel drops the thread's file-access capabilities with it),
while the worker's other threads (ZeroMQ's, started earlier) keep reaching
parad's root-only sockets, and the process keeps CAP_SETUID to start its
commands (rg) as that user.
"""

from __future__ import annotations

import ctypes
import os
import pwd

_libc = ctypes.CDLL(None, use_errno=True)
_QUERY = ctypes.c_uint(0xFFFFFFFF)  # an invalid id: the call only reports the current one


def run_as_ids(name: str | None) -> tuple[int, int] | None:
    """(uid, gid) of user `name` when this process is root; None when it is not root or `name` is None.

    KeyError, with a message naming the setting, when the user does not exist.
    """
    if os.geteuid() != 0 or name is None:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise KeyError(f"sandbox.run_as user {name!r} does not exist; create it or change the pool's policy") from None
    return entry.pw_uid, entry.pw_gid


def as_reader(uid: int, gid: int) -> None:
    """From now on this thread opens, lists and stats files as `uid`/`gid`, with no supplementary groups.

    OSError if the kernel did not take the ids (no CAP_SETUID/CAP_SETGID):
    the caller must not go on reading as root.
    """
    os.setgroups([])  # glibc applies it to every thread
    _libc.setfsgid(ctypes.c_uint(gid))
    _libc.setfsuid(ctypes.c_uint(uid))
    if _libc.setfsgid(_QUERY) != gid or _libc.setfsuid(_QUERY) != uid:
        raise OSError(f"cannot read files as uid {uid}/gid {gid}: setfsuid/setfsgid refused (no CAP_SETUID/CAP_SETGID?)")


def reader_ids() -> tuple[int, int]:
    """This thread's filesystem (uid, gid)."""
    return _libc.setfsuid(_QUERY), _libc.setfsgid(_QUERY)
