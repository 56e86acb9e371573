"""Owning a runtime directory: mode 0700, one parad at a time, no stale sockets."""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

from para.ipc.endpoints import Endpoints


# sun_path holds 108 bytes on Linux, the last one a NUL.
MAX_SOCKET_PATH = 107


class RuntimeDirError(Exception):
    """This runtime directory cannot be parad's: the message says why and what to do."""


class RuntimeDirBusy(RuntimeDirError):
    """Another parad owns this runtime directory."""


class RuntimeDir:
    """Holds an exclusive flock on `<dir>/parad.lock` while the daemon lives."""

    def __init__(self, endpoints: Endpoints) -> None:
        self.endpoints = endpoints
        self._lock_fd: int | None = None

    def acquire(self) -> None:
        path = self.endpoints.runtime_dir
        _check_socket_paths(self.endpoints)
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise RuntimeDirError(f"cannot create the runtime dir {path}: {exc.strerror}; make it a writable "
                                  f"directory or pick another with --runtime-dir DIR") from None
        info = path.stat()
        if info.st_uid != os.getuid():
            raise PermissionError(f"{path} belongs to uid {info.st_uid}, not to us; remove it or pick --runtime-dir")
        if stat.S_IMODE(info.st_mode) & 0o027:
            os.chmod(path, 0o700)
        fd = os.open(self.endpoints.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RuntimeDirBusy(
                f"another parad (pid {owner}) already owns {path}; stop it with "
                f"`paractl shutdown` or start this one with --runtime-dir DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        # Sockets left by a daemon that died without cleaning up: ours now.
        self.remove_sockets()
        self.endpoints.worker_dir.mkdir(mode=0o700, exist_ok=True)

    def remove_sockets(self) -> None:
        for sock in self.endpoints.socket_paths():
            sock.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove every file we made; the directory goes too if nothing else is in it."""
        self.remove_sockets()
        _rmdir_quiet(self.endpoints.worker_dir)
        if self._lock_fd is not None:
            self.endpoints.lock_path.unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None
        _rmdir_quiet(self.endpoints.runtime_dir)


def _check_socket_paths(endpoints: Endpoints) -> None:
    """Refuse a runtime dir whose socket paths do not fit a Unix socket address, before anything is made."""
    longest = max(endpoints.socket_paths(), key=lambda p: len(os.fsencode(p)))
    if len(os.fsencode(longest)) > MAX_SOCKET_PATH:
        raise RuntimeDirError(
            f"the runtime dir {endpoints.runtime_dir} is too deep: its socket path {longest} is "
            f"{len(os.fsencode(longest))} bytes, past the {MAX_SOCKET_PATH}-byte limit of Unix sockets; "
            f"pick a shorter one with --runtime-dir DIR")


def _rmdir_quiet(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass
