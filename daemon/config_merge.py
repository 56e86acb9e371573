"""A config file is an overlay: it is merged key by key over the built-in defaults.

Mappings merge, anything else (a list, a value, null) replaces what it is
merged over, so a file that names one option changes that option only.
The one exception is a pool: `pools: {NAME: null}` removes the built-in pool
NAME. Null cannot remove anything else, because elsewhere it is a value
(`metrics_listen: null` is "off", `run_as: null` is "as root").
"""

from __future__ import annotations

from typing import Any


class OverlayError(ValueError):
    """A file that cannot be merged over the defaults as written; the message names the key."""


def overlay(defaults: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """`data` (a config file's mapping) merged over `defaults` (the full built-in config, dumped)."""
    out = dict(defaults)
    for key, value in data.items():
        if key == "pools" and isinstance(defaults.get("pools"), dict):
            out[key] = _overlay_pools(defaults["pools"], value)
        else:
            out[key] = _merge(defaults[key], value, str(key)) if key in defaults else value
    return out


def _merge(base: Any, over: Any, path: str) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = _merge(base[key], value, f"{path}.{key}") if key in base else value
        return out
    if isinstance(base, dict) and over is None:
        # Emptying a section would silently undo every default in it: say so instead.
        raise OverlayError(f"{path}: null cannot empty a section; leave {path.rsplit('.', 1)[-1]!r} out "
                           f"to keep its defaults, or name the keys you change")
    return over


def _overlay_pools(builtin: dict[str, Any], pools: Any) -> Any:
    if pools is None:
        raise OverlayError("pools: null would remove every pool; remove built-in pools one by one "
                           "(pools: {grep: null}), or leave 'pools' out to keep them all")
    if not isinstance(pools, dict):
        return pools  # not a mapping: the model refuses it, naming what it got
    out = dict(builtin)
    for name, pool in pools.items():
        if pool is None:
            out.pop(_builtin_name(builtin, name))
        elif name in builtin and isinstance(pool, dict):
            _same_tool(name, builtin[name], pool)
            out[name] = _merge(builtin[name], pool, f"pools.{name}")
        else:
            out[name] = pool  # a new pool: the pool model and its tool give the defaults
    if not out:
        raise OverlayError("pools: every built-in pool is removed and none is added; keep or add at least one, "
                           "or parad has nothing to run")
    return out


def _builtin_name(builtin: dict[str, Any], name: Any) -> Any:
    if name not in builtin:
        raise OverlayError(f"pools.{name}: null removes a built-in pool, and there is none named {name!r} "
                           f"(built-in pools: {', '.join(sorted(builtin))}); correct the name, or delete the line")
    return name


def _same_tool(name: str, base: dict[str, Any], pool: dict[str, Any]) -> None:
    # A built-in pool's sizes and timeouts were chosen for its tool: do not carry them over to another.
    tool = pool.get("tool")
    if tool is not None and tool != base.get("tool"):
        raise OverlayError(f"pools.{name}.tool: the built-in pool {name!r} runs {base.get('tool')!r}, not {tool!r}; "
                           f"to run {tool!r}, add a pool under a new name (pools: {{NAME: {{tool: {tool}}}}}), "
                           f"and remove {name!r} with `{name}: null` if you do not want it")
