"""Thin ctypes wrappers over the Linux prctl(2) and capset(2) calls para needs."""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_SET_DUMPABLE = 4
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_CAPBSET_DROP = 24
CAP_KILL, CAP_SETGID, CAP_SETUID = 5, 6, 7

_LINUX_CAPABILITY_VERSION_3 = 0x20080522  # two 32-bit words per set

_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _call(option: int, arg: int) -> None:
    if _prctl(option, arg, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


def set_child_subreaper() -> None:
    """Orphaned descendants (setsid, double fork) are reparented to us, so we can end them."""
    _call(PR_SET_CHILD_SUBREAPER, 1)


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """Receive `sig` when the parent exits, so nothing outlives a dead supervisor."""
    _call(PR_SET_PDEATHSIG, sig)


def set_no_new_privs() -> None:
    """setuid binaries and file capabilities grant nothing from here on."""
    _call(PR_SET_NO_NEW_PRIVS, 1)


def set_not_dumpable() -> None:
    """Processes of the same user can no longer ptrace us or read /proc/PID/{mem,environ,fd}.

    A worker sets this so the commands it runs (which get dumpable back at exec)
    cannot reach into it.
    """
    _call(PR_SET_DUMPABLE, 0)


def clear_ambient_capabilities() -> None:
    """Nothing we exec keeps a capability just because we hold it (bubblewrap's --cap-add sets them ambient)."""
    _call(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)


def clear_inheritable_capabilities() -> None:
    """Empty the calling thread's inheritable set; its effective and permitted sets stay.

    bubblewrap's --cap-add puts a capability in the inheritable set as well,
    and exec keeps that set: a command would carry it, ready to be granted by
    any program with file capabilities. Emptying it empties the ambient set too.
    """
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if _libc.capget(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capget: {os.strerror(err)}")
    for word in data:
        word.inheritable = 0
    if _libc.capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")


def drop_capabilities() -> None:
    """Hold no capability from here on, nor gain one by exec (as root too, with NO_NEW_PRIVS set).

    The bounding set goes first, while CAP_SETPCAP may still be held (where it is
    not, NO_NEW_PRIVS keeps exec from granting what the bounding set still has).
    """
    for cap in range(64):
        if _prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() == 22:   # EINVAL: past the last one
            break
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if _libc.capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")


def keep_capabilities(caps: tuple[int, ...]) -> None:
    """The calling thread keeps only `caps` (effective and permitted), nothing inheritable."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for cap in caps:
        word = data[cap // 32]
        word.effective |= 1 << (cap % 32)
        word.permitted |= 1 << (cap % 32)
    if _libc.capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")
