"""cgroup v2: the subtree parad manages when systemd delegates one (Delegate=yes).

Layout under the delegated root (the no-internal-processes rule puts every
process in a leaf):

    <root>/supervisor/                 parad and its fork server
    <root>/pool-<name>/                cpu.weight per pool
    <root>/pool-<name>/<worker>/worker/         the worker process
    <root>/pool-<name>/<worker>/command/        no process: the controllers, for the leaves below
    <root>/pool-<name>/<worker>/command/<n>/    one running command: memory.max, pids.max, cpu.max; cgroup.kill

A worker drives several commands at once, each in a leaf of its own under
`command/` (CommandCgroup), taken from a free list of emptied leaves or made.

Every function takes paths, so the tests drive it against a temporary
directory as well as a real cgroup2 mount.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

MOUNT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "pids", "cpu")


def own_cgroup(proc_file: str = "/proc/self/cgroup") -> str | None:
    """This process's path in the unified (v2) hierarchy, from its `0::/path` line."""
    try:
        for line in Path(proc_file).read_text().splitlines():
            if line.startswith("0::"):
                return line[3:]
    except OSError:
        pass
    return None


def delegated_root(mount: Path = MOUNT, proc_file: str = "/proc/self/cgroup") -> tuple[Path | None, str | None]:
    """(the cgroup parad may manage, None) or (None, why there is none)."""
    if not (mount / "cgroup.controllers").exists():
        return None, f"no cgroup v2 hierarchy at {mount} (a cgroup v1 or hybrid host)"
    rel = own_cgroup(proc_file)
    if rel is None:
        return None, "this process is in no cgroup v2 hierarchy"
    path = mount / rel.lstrip("/")
    for name in ("", "cgroup.procs", "cgroup.subtree_control"):
        if not os.access(path / name, os.W_OK):
            return None, f"{path} is not delegated to parad (run it under systemd with Delegate=yes)"
    available = set((path / "cgroup.controllers").read_text().split())
    missing = [c for c in CONTROLLERS if c not in available]
    if missing:
        return None, f"controllers {', '.join(missing)} are not enabled for {path}"
    return path, None


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _enable(path: Path) -> None:
    _write(path / "cgroup.subtree_control", " ".join(f"+{c}" for c in CONTROLLERS))


def adopt(root: Path) -> None:
    """Move parad's own processes into root/supervisor and open the controllers below root."""
    home = root / "supervisor"
    home.mkdir(exist_ok=True)
    for pid in (root / "cgroup.procs").read_text().split():
        try:
            _write(home / "cgroup.procs", pid)
        except ProcessLookupError:
            pass
    _enable(root)


def make_pool(root: Path, pool: str, cpu_weight: int | None) -> Path:
    path = root / f"pool-{pool}"
    path.mkdir(exist_ok=True)
    _enable(path)
    if cpu_weight is not None:
        _write(path / "cpu.weight", str(cpu_weight))
    return path


def make_worker(pool_dir: Path, worker: str) -> tuple[Path, Path]:
    """(the worker's leaf, the parent of its commands' leaves)."""
    path = pool_dir / worker
    path.mkdir(exist_ok=True)
    _enable(path)
    (path / "worker").mkdir(exist_ok=True)
    (path / "command").mkdir(exist_ok=True)
    _enable(path / "command")
    return path / "worker", path / "command"


def enter(leaf: Path) -> None:
    """Move the calling process into `leaf`."""
    _write(leaf / "cgroup.procs", "0")


def remove(path: Path) -> None:
    """rmdir a cgroup and its children, deepest first; a cgroup still holding processes stays."""
    if not path.is_dir():
        return
    for child in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        _rmdir(child)
    _rmdir(path)


def _rmdir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


_free: dict[Path, list[Path]] = {}   # per commands' directory: emptied leaves, to reuse
_made: dict[Path, int] = {}          # per commands' directory: leaves made so far, to name the next


def _take_leaf(parent: Path) -> Path:
    free = _free.get(parent)
    if free:
        return free.pop()
    n = _made.get(parent, 0)
    while (parent / str(n)).exists():   # left by an earlier worker of the same name, or still busy
        n += 1
    _made[parent] = n + 1
    (parent / str(n)).mkdir()
    return parent / str(n)


class CommandCgroup:
    """One running command's leaf, under its worker's `command/` directory: limits, attribution, kill.

    `parent` is that directory (CommandSpec.cgroup); the leaf is `path`,
    returned by release() for the next command once it holds no process.
    """

    def __init__(self, parent: Path) -> None:
        self.parent = parent
        self.path = _take_leaf(parent)
        self._before: dict[str, int] = {}
        self._final: str | None = None   # limit_hit() as it stood at release
        self._released = False

    def release(self) -> None:
        """Done with the leaf: free for the next command if empty; one still holding processes is not reused."""
        if self._released:
            return
        self._final = self.limit_hit()
        self._released = True
        if not self.procs():
            _free.setdefault(self.parent, []).append(self.path)

    def prepare(self, memory: int | None, processes: int | None, cpu_max: str | None) -> None:
        """Set this command's limits and remember the event counters it starts from."""
        _write(self.path / "memory.max", str(memory) if memory else "max")
        # Swap would let a command pass memory.max without being stopped.
        _write(self.path / "memory.swap.max", "0")
        _write(self.path / "pids.max", str(processes) if processes else "max")
        _write(self.path / "cpu.max", cpu_max or "max")
        self._before = self.counters()

    def counters(self) -> dict[str, int]:
        return {
            "oom_kill": _event(self.path / "memory.events", "oom_kill"),
            "pids_max": _event(self.path / "pids.events", "max"),
        }

    def limit_hit(self) -> str | None:
        """'memory' or 'pids' when the kernel enforced one since prepare(), else None."""
        if self._released:
            return self._final
        now = self.counters()
        if now["oom_kill"] > self._before.get("oom_kill", 0):
            return "memory"
        if now["pids_max"] > self._before.get("pids_max", 0):
            return "pids"
        return None

    def procs(self) -> list[int]:
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    def kill(self) -> None:
        """Kill every process in the leaf: cgroup.kill (Linux 5.14+), else each listed pid."""
        try:
            _write(self.path / "cgroup.kill", "1")
            return
        except OSError:
            pass
        for pid in self.procs():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _event(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0
