"""The environment a command sees: the caller's or an allow-list of the daemon's, never its secrets."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from itertools import chain

DEFAULT_ALLOW = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_*", "TERM", "TZ", "SHELL", "TMPDIR")
# Names that look like they hold a credential; matched on the upper-cased name.
# AWS_* whole: its credentials come under several names (and ~/.aws is hidden anyway).
SECRET_PATTERNS = ("*TOKEN*", "*SECRET*", "*KEY*", "*PASSWORD*", "*PASSWD*", "*PASSPHRASE*", "*CREDENTIAL*",
                   "*PRIVATE*", "*COOKIE*", "*_AUTH", "*_PAT", "*_DSN", "AWS_*")
# Set by the worker for each command (nested tasks): a caller's own would point elsewhere.
WORKER_SET = ("PARA_CHILD_*",)
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
MAX_VARS = 1024          # variables a task may send (caller_env and env together)
MAX_BYTES = 128 << 10    # and their bytes, names and values: what a command's exec can take with room to spare


def _matcher(patterns: Iterable[str]) -> re.Pattern[str]:
    """One regex for a non-empty set of globs: a name is tested once, not once per pattern."""
    return re.compile("|".join(fnmatch.translate(p) for p in patterns))


_SECRET = _matcher(SECRET_PATTERNS)


def looks_secret(name: str) -> bool:
    return bool(_SECRET.match(name.upper()))


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
    env.setdefault("PATH", DEFAULT_PATH)
    if extra:
        env.update(extra)
    return env


class CallerFilter:
    """What of a caller's environment a command gets: every name but the secret-looking ones
    (unless listed in `secrets`), those matching `drop` (globs) and those the worker sets itself."""

    def __init__(self, secrets: Iterable[str] = (), drop: Iterable[str] = ()) -> None:
        self._secrets = frozenset(secrets)
        self._drop = _matcher((*drop, *WORKER_SET))
        self._seen: dict[str, bool] = {}   # name -> kept: the same few names come with every task

    def keeps(self, name: str) -> bool:
        kept = self._seen.get(name)
        if kept is None:
            kept = not self._drop.match(name) and (name in self._secrets or not looks_secret(name))
            if len(self._seen) > 8 * MAX_VARS:
                self._seen.clear()   # names that differ from task to task must not grow a worker
            self._seen[name] = kept
        return kept

    def __call__(self, env: Mapping[str, str]) -> dict[str, str]:
        return {k: v for k, v in env.items() if self.keeps(k)}


def env_problem(*envs: Mapping[str, str]) -> str | None:
    """Why these variables cannot be a command's environment (too many, too large, a bad name), or None."""
    count = sum(len(e) for e in envs)
    if count > MAX_VARS:
        return _too_big(count, envs)
    # A few joins over every name and value, not a check per variable: parad
    # runs this for every bash task admitted, and most carry their caller's
    # whole environment.
    names = "\n".join(chain.from_iterable(envs))
    values = "".join(chain.from_iterable(e.values() for e in envs))
    size = len(names) - max(count - 1, 0) + len(values) + 2 * count   # an "=" and a NUL per variable
    if not (names.isascii() and values.isascii()):
        size += len(names.encode(errors="surrogatepass")) - len(names) + len(values.encode(errors="surrogatepass")) - len(values)
    if size > MAX_BYTES:
        return _too_big(count, envs)
    if "=" in names or "\0" in names or "\0" in values or any("" in e for e in envs):
        bad = next(k for e in envs for k, v in e.items() if not k or "=" in k or "\0" in k or "\0" in v)
        return (f"environment variable {bad!r:.60} cannot be set: a name must be non-empty and hold no '=' "
                f"or NUL, a value no NUL")
    return None


def _too_big(count: int, envs: tuple[Mapping[str, str], ...]) -> str:
    size = sum(len(k.encode(errors="surrogatepass")) + len(v.encode(errors="surrogatepass")) + 2
               for e in envs for k, v in e.items())
    return (f"the environment sent has {count} variables, {size} bytes; at most {MAX_VARS} variables and "
            f"{MAX_BYTES >> 10} KiB are taken: unset what the command does not need, or send none "
            f"(paractl bash --clean-env, caller_env=None)")
