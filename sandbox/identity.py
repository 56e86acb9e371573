"""Whose ids a command runs with, and whose file permissions a root worker reads with.

When parad runs as root, a pool's `sandbox.run_as` decides a task's identity
(`ids_for`): `owner` (the default) is the owner of the task's workspace, a
user name pins that user, null keeps parad's own (root). A workspace owned
by root runs as root only where the pool's `allow_root` lets it: with every
capability dropped and NO_NEW_PRIVS, inside the pool's namespaces.

A worker of a read-only tool (read, glob, grep) reads files itself: `as_reader`
makes the calling thread's file permission checks use another user's ids
(setfsuid, setfsgid; the kernel drops the thread's file-access capabilities
with it), while the worker's other threads (ZeroMQ's, started earlier) keep
reaching parad's root-only sockets, and the process keeps CAP_SETUID to switch
again for the next task and start its commands (rg) as that user.
"""

from __future__ import annotations

import ctypes
import os
import pwd

OWNER = "owner"   # sandbox.run_as: the owner of the task's workspace
ROOT = (0, 0)

_libc = ctypes.CDLL(None, use_errno=True)
_QUERY = ctypes.c_uint(0xFFFFFFFF)  # an invalid id: the call only reports the current one


class IdentityError(ValueError):
    """A task may not run as its workspace's owner (root, where the policy does not allow it)."""


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


def pinned(run_as: str | None) -> bool:
    """Whether `run_as` names a fixed user (one that runs nothing else), not the owner nor parad's own."""
    return run_as is not None and run_as != OWNER


def ids_for(run_as: str | None, workspace: str | None, allow_root: str, confined: bool) -> tuple[int, int] | None:
    """(uid, gid) a task in `workspace` runs (or reads) as; None: this process's own ids (not root, or run_as null).

    `confined`: the pool's workers live in namespaces, so a root command holds
    no capability and sees a read-only root. IdentityError when the workspace
    is root's and `allow_root` ("namespaces", "always", "never") refuses it;
    KeyError when a pinned user does not exist.
    """
    if os.geteuid() != 0 or run_as is None:
        return None
    if run_as != OWNER:
        return run_as_ids(run_as)
    if workspace is None:
        raise IdentityError("the task has no workspace, and sandbox.run_as is 'owner'")
    st = os.stat(workspace)
    if st.st_uid != 0:
        return st.st_uid, st.st_gid
    if allow_root == "always" or (allow_root == "namespaces" and confined):
        return ROOT
    why = "the pool's sandbox.allow_root is 'never'" if allow_root == "never" else \
        "this pool has no namespace isolation, so a root command would be unconfined"
    raise IdentityError(f"workspace {workspace!r} belongs to root and {why}; run from a project a user owns, "
                        f"pin sandbox.run_as to a user, or set sandbox.allow_root: always")


def as_reader(uid: int, gid: int) -> None:
    """From now on this thread opens, lists and stats files as `uid`/`gid`, with no supplementary groups.

    OSError if the kernel did not take the ids (no CAP_SETUID/CAP_SETGID):
    the caller must not go on reading as root.
    """
    if os.getgroups():
        os.setgroups([])  # glibc applies it to every thread
    if reader_ids() == (uid, gid):
        return
    _libc.setfsgid(ctypes.c_uint(gid))
    _libc.setfsuid(ctypes.c_uint(uid))
    if _libc.setfsgid(_QUERY) != gid or _libc.setfsuid(_QUERY) != uid:
        raise OSError(f"cannot read files as uid {uid}/gid {gid}: setfsuid/setfsgid refused (no CAP_SETUID/CAP_SETGID?)")


def reader_ids() -> tuple[int, int]:
    """This thread's filesystem (uid, gid)."""
    return _libc.setfsuid(_QUERY), _libc.setfsgid(_QUERY)
