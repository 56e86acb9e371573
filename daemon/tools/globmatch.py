"""Glob patterns as compiled regexes, with `**` and gitignore-style basename matching.

`rg --glob` whitelists whatever a pattern matches, hidden and ignored
directories included (`*` matches `.git`), so the glob tool lists files with
plain `rg --files` (which honours the ignore rules) and matches them here.
"""

from __future__ import annotations

import re
from collections.abc import Callable


def _translate(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:end].replace("\\", "\\\\")
                out.append("[^" + body[1:] + "]" if body.startswith("!") else "[" + body + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def compile_globs(patterns: list[str]) -> Callable[[str], bool]:
    """A predicate on relative paths: matches some positive pattern and no '!' one.

    A pattern without '/' matches the file's name at any depth, as in .gitignore.
    """
    def regex(p: str) -> re.Pattern[str]:
        p = p.lstrip("/") if "/" in p.rstrip("/") else p
        anchored = "/" in p
        return re.compile(("" if anchored else "(?:.*/)?") + _translate(p) + r"\Z")

    include = [regex(p) for p in patterns if not p.startswith("!")]
    exclude = [regex(p[1:]) for p in patterns if p.startswith("!")]

    def matches(path: str) -> bool:
        return (not include or any(r.match(path) for r in include)) and not any(r.match(path) for r in exclude)
    return matches
