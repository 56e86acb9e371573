"""Explore a source tree with para: one glob, then greps and reads fanned out in parallel.

    python configs/examples/explore.py [ROOT] [--runtime-dir DIR]

Starts a per-user parad on its built-in defaults if none is running.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time

from para.client import Client, ParaError

PATTERNS = {
    "functions": r"^\s*(def|fn|func|function)\s+\w+",
    "classes": r"^\s*(class|struct|interface|trait)\s+\w+",
    "todos": r"\b(TODO|FIXME|XXX)\b",
    "imports": r"^\s*(import|from\s+\S+\s+import|use|#include)\b",
}


def explore(client: Client, root: str) -> None:
    started = time.perf_counter()
    files = client.run("glob", patterns=["*"], root=root, limit=10000).value["files"]
    by_ext = collections.Counter(os.path.splitext(f)[1] or "(none)" for f in files)
    print(f"{len(files)} files under {root} (honouring .gitignore); by type: "
          + ", ".join(f"{ext} {n}" for ext, n in by_ext.most_common(6)))

    # Every question at once: one grep per pattern, all in flight together.
    greps = list(client.map("grep", ({"pattern": p, "path": root, "max_results": 10000} for p in PATTERNS.values())))
    hits: collections.Counter[str] = collections.Counter()
    for name, result in zip(PATTERNS, greps):
        print(f"  {name:<10} {result.value['count']:>6} matches")
        hits.update(m["path"] for m in result.value["matches"])

    # Then the head of the busiest files, read in parallel.
    busiest = [path for path, _ in hits.most_common(5)]
    reads = client.map("read", ({"path": os.path.join(root, p), "limit": 3} for p in busiest))
    for path, result in zip(busiest, reads):
        first = next((line for line in result.value["lines"] if line.strip()), "")
        print(f"  {hits[path]:>4} hits  {path}: {first[:70]}")

    # And a shell command per directory, in parallel, for the size of each.
    dirs = sorted({f.split("/", 1)[0] for f in files if "/" in f})[:8]
    sizes = client.map("bash", ({"command": f"du -sk {d!r} | cut -f1", "cwd": root} for d in dirs))
    print("  largest dirs (KiB): " + ", ".join(
        f"{d} {r.stdout.strip()}" for d, r in sorted(zip(dirs, sizes), key=lambda x: -int(x[1].stdout or 0))[:4]))
    tasks = 1 + len(greps) + len(busiest) + len(dirs)
    print(f"{tasks} tool calls in {time.perf_counter() - started:.2f}s through parad")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default=".")
    parser.add_argument("--runtime-dir", help="talk to the parad at this runtime directory")
    args = parser.parse_args()
    try:
        with Client(args.runtime_dir, autostart=True, timeout=30) as client:
            explore(client, os.path.abspath(args.root))
    except ParaError as exc:  # every para error says what was wrong and what to do
        print(f"explore: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
