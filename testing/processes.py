"""Finding processes from the outside: by argv[0] tag, by liveness, by the runtime dir they serve."""

from __future__ import annotations

from pathlib import Path

import psutil


def marked(tag: str) -> list[int]:
    """Live processes whose argv[0] is `tag` (set with `exec -a TAG`).

    Tests find a command's processes this way, not by a pid the command
    wrote: inside a sandbox's pid namespace that pid means something else.
    """
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if cmdline and cmdline[0] == tag and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc.pid)
    return found


def alive(pid: int) -> bool:
    """Whether `pid` is a process that has not exited (a zombie has)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def daemons_serving(runtime_dir: Path) -> list[int]:
    """Pids of parads whose command line names `runtime_dir`: how to find one started by autostart."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "para.daemon" in cmdline and str(runtime_dir) in cmdline:
            found.append(proc.info["pid"])
    return found
