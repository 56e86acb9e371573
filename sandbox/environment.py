"""The environment a command sees: an allow-list of the daemon's, plus extras."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping

DEFAULT_ALLOW = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_*", "TERM", "TZ", "SHELL", "TMPDIR")
SECRET_PATTERNS = ("*TOKEN*", "*SECRET*", "*KEY*", "*PASSWORD*", "*CREDENTIAL*")


def looks_secret(name: str) -> bool:
    upper = name.upper()
    return any(fnmatch.fnmatchcase(upper, p) for p in SECRET_PATTERNS)


def build_env(
    base: Mapping[str, str],
    allow: Iterable[str] = DEFAULT_ALLOW,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Keep base variables matching `allow` (globs) that do not look secret, then add `extra`.

    Variables named explicitly in `extra` are kept even when they look secret:
    the caller asked for them by name.
    """
    patterns = tuple(allow)
    env = {
        k: v for k, v in base.items()
        if any(fnmatch.fnmatchcase(k, p) for p in patterns) and not looks_secret(k)
    }
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    if extra:
        env.update(extra)
    return env
