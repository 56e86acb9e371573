"""Denied paths that stay hidden for a sandbox's whole life: sealed directories.

A mount over a denied path hides only what is there when the sandbox is
built. A credential created later (`~/.kube/config` after the worker
started) shows through, and so does one written over by rename, as most
tools save files: the kernel drops a mount whose mount point is renamed
over or unlinked on the host.

So the directory holding a denied path is *sealed* instead: inside the
sandbox it is an empty read-only tmpfs into which each of its entries is
bound back, except the denied ones. A denied name that appears there later
has no entry in the sandbox. The price: an entry created later directly in
a sealed directory (a new file in `~`) is not visible until the worker is
replaced, a file there replaced by rename keeps its old content until then,
and each sandbox costs a mount per entry of each sealed directory.

A directory is sealed only where that cannot take anything away: never '/',
a writable root or anything inside one, nor a host path under a private
/tmp (it is not visible anyway); there, and under a read-write root, a
denied path that exists is covered by a mount as before (until it is saved
over by rename), and one that does not exist cannot be hidden.
"""

from __future__ import annotations

import fnmatch
import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

from para.sandbox.policy import resolve_path


@dataclass(slots=True)
class Seal:
    """A directory replaced by a tmpfs holding all its entries but `hidden` (names or patterns)."""
    dir: Path
    hidden: set[str] = field(default_factory=set)

    def hides(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.hidden)


@dataclass(slots=True)
class Plan:
    seals: list[Seal]   # shallowest first: a deeper one is sealed inside a shallower one's copy
    covers: list[str]   # existing denied paths to cover with a mount, as before

    def visible(self, path: Path) -> bool:
        """Whether `path` is still in the sandbox (not in an entry a seal leaves out): only those can be covered."""
        return not _inside_hidden(path, self.seals)


def plan(deny: list[str], writable: list[Path], targets: list[Path], private_tmp: bool,
         read_only_root: bool) -> Plan:
    """How to hide `deny`: which directories to seal, which paths to cover.

    `writable` are the writable roots; `targets` every path mounted after the
    seals (writable roots, read-only paths, kept code): an entry holding one
    is never left out, or its mount would have no mount point.
    """
    seals: dict[Path, Seal] = {}
    covers: list[str] = []
    for entry in deny:
        path = Path(resolve_path(entry))
        matches = _matches(path)
        covers.extend(str(m) for m in matches if _elsewhere(m))  # a symlink's target lies elsewhere
        if glob.has_magic(str(path.parent)):
            covers.extend(str(m) for m in matches)  # patterns are sealed only in their last part
            continue
        where = _sealable(path, writable, targets, private_tmp, read_only_root)
        if where is None:
            covers.extend(str(m) for m in matches)
        else:
            seals.setdefault(where[0], Seal(where[0])).hidden.add(where[1])
    kept = [s for s in seals.values() if not _inside_hidden(s.dir, seals.values())]
    return Plan(sorted(kept, key=lambda s: len(s.dir.parts)), covers)


def _matches(path: Path) -> list[Path]:
    if glob.has_magic(str(path)):
        return [Path(p) for p in sorted(glob.glob(str(path)))]
    return [path] if path.exists() or path.is_symlink() else []


def _elsewhere(path: Path) -> bool:
    return path.exists() and path.resolve() != path.parent.resolve() / path.name


def _sealable(path: Path, writable: list[Path], targets: list[Path], private_tmp: bool,
              read_only_root: bool) -> tuple[Path, str] | None:
    """(directory to seal, name to leave out of it) for a denied path, or None where sealing is not safe."""
    if not read_only_root:
        return None  # a writable directory replaced by a tmpfs would lose what commands write in it
    name, parent = path.name, path.parent
    while not parent.exists():  # the nearest existing ancestor; the missing name below it stays out
        name, parent = parent.name, parent.parent
    try:
        parent = parent.resolve(strict=True)
    except OSError:
        return None
    if parent == Path("/") or not parent.is_dir() or not os.access(parent, os.R_OK | os.X_OK):
        return None
    if any(parent == w or w in parent.parents for w in writable):
        return None
    if private_tmp and (parent == Path("/tmp") or Path("/tmp") in parent.parents):
        return None
    for target in targets:
        if parent in target.parents and fnmatch.fnmatchcase(target.relative_to(parent).parts[0], name):
            return None  # leaving `name` out would take the mount point of `target` with it
    return parent, name


def _inside_hidden(path: Path, seals) -> bool:
    """Whether `path` lies in an entry some seal leaves out (it is not in the sandbox at all)."""
    return any(s.dir in path.parents and s.hides(path.relative_to(s.dir).parts[0]) for s in seals)


def mount_args(seals: list[Seal]) -> list[str]:
    """bubblewrap arguments that seal each directory: tmpfs, its entries bound back, read-only."""
    args: list[str] = []
    for seal in seals:
        d = str(seal.dir)
        try:
            mode = seal.dir.stat().st_mode & 0o7777
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            continue  # gone or unreadable since planning: its denied paths are left as they are
        args += ["--perms", f"{mode:04o}", "--tmpfs", d]
        for entry in entries:
            if seal.hides(entry.name):
                continue
            if entry.is_symlink():
                args += ["--symlink", os.readlink(entry.path), entry.path]
            else:
                args += ["--ro-bind", entry.path, entry.path]
        args += ["--remount-ro", d]
    return args
