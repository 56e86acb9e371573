"""Where a pool's tool comes from: the built-in tools, plugins, or a module path.

A pool's `tool` (parad.yaml) is a reference, resolved here the same way in
parad (to check arguments and describe the tool), in the fork server (which
imports every pool's tool before it forks workers, so they start warm) and
in a worker:

- a built-in tool's name (`bash`, `read`, ...);
- the name of an entry point in the `para.tools` group, which an installed
  package declares in its pyproject.toml (`wordcount = "para_wordcount:WordCount"`);
- a module path, `package.module:ClassName`, importable by parad's Python.

A reference that cannot be loaded (its import fails, it is not a Tool
subclass, or it takes a built-in tool's name) raises ToolLoadError, whose
message says what to fix; parad then runs the pool as failed with it.
"""

from __future__ import annotations

import importlib
from importlib.metadata import EntryPoint, entry_points

from pydantic import BaseModel

from para.daemon.tools.base import Tool
from para.daemon.tools.bash import Bash
from para.daemon.tools.echo import Echo
from para.daemon.tools.fetch import Fetch
from para.daemon.tools.glob import Glob
from para.daemon.tools.grep import Grep
from para.daemon.tools.read import Read
from para.daemon.tools.search import Search

ENTRY_POINT_GROUP = "para.tools"
BUILTIN: dict[str, type[Tool]] = {cls.name: cls for cls in (Echo, Bash, Read, Glob, Grep, Fetch, Search)}


class ToolLoadError(Exception):
    """A tool reference that names nothing usable; the message says what to fix."""


class UnknownTool(ToolLoadError):
    """A reference that is no built-in, no installed plugin and no module path (a typo, most often)."""


def plugins() -> dict[str, EntryPoint]:
    """The tools installed packages declare in the `para.tools` entry point group, by name."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def is_module_path(ref: str) -> bool:
    return ":" in ref


def resolve(ref: str) -> type[Tool]:
    """The Tool class `ref` names (see the module docstring). Raises ToolLoadError."""
    if ref in BUILTIN:
        return BUILTIN[ref]
    if is_module_path(ref):
        return _checked(ref, _load_path(ref), f"module path {ref!r}")
    found = plugins().get(ref)
    if found is None:
        raise UnknownTool(_unknown(ref))
    where = f"plugin {ref!r} ({found.value}, entry point group {ENTRY_POINT_GROUP})"
    try:
        loaded = found.load()
    except Exception as exc:
        raise ToolLoadError(f"{where} cannot be imported: {type(exc).__name__}: {exc}; "
                            f"fix or reinstall its package, or remove the pool") from None
    return _checked(ref, loaded, where)


def preload(refs: list[str]) -> None:
    """Import each reference's tool, for workers forked later to find it loaded. A failure is
    ignored here: parad reported it when it read its config, and runs that pool as failed."""
    for ref in refs:
        try:
            resolve(ref)
        except ToolLoadError:
            pass


def _load_path(ref: str) -> object:
    module, _, attr = ref.partition(":")
    try:
        loaded: object = importlib.import_module(module)
        for part in attr.split("."):
            loaded = getattr(loaded, part)
    except Exception as exc:
        raise ToolLoadError(f"module path {ref!r} cannot be loaded: {type(exc).__name__}: {exc}; "
                            f"check the name and that parad's Python can import it (PYTHONPATH, or pip install)") from None
    return loaded


def _checked(ref: str, loaded: object, where: str) -> type[Tool]:
    """`loaded` if it is a usable Tool class; else say what is wrong with it."""
    if not (isinstance(loaded, type) and issubclass(loaded, Tool)):
        raise ToolLoadError(f"{where} is {loaded!r}, not a subclass of para.daemon.tools.base.Tool; point it at the tool class")
    name = getattr(loaded, "name", None)
    if not isinstance(name, str) or not name:
        raise ToolLoadError(f"{where}: {loaded.__name__} has no `name`; give the class a name = \"...\"")
    args = getattr(loaded, "Args", None)
    if not (isinstance(args, type) and issubclass(args, BaseModel)):
        raise ToolLoadError(f"{where}: {loaded.__name__}.Args is not a pydantic model; declare its arguments as one")
    if name in BUILTIN and BUILTIN[name] is not loaded:
        raise ToolLoadError(f"{where} is named {name!r}, like a built-in tool; rename it (tool names: {', '.join(sorted(BUILTIN))} are taken)")
    if ref in BUILTIN and BUILTIN[ref] is not loaded:
        raise ToolLoadError(f"{where} takes the built-in tool name {ref!r}; rename the entry point")
    return loaded


def _unknown(ref: str) -> str:
    installed = sorted(plugins())
    text = f"unknown tool {ref!r}; built-in tools: {', '.join(sorted(BUILTIN))}"
    if installed:
        text += f"; plugin tools: {', '.join(installed)}"
    return text + " (or name a module path, package.module:ClassName)"


def shadowed() -> list[str]:
    """Plugins whose entry point takes a built-in tool's name: never loaded (the built-in wins); for the log."""
    return [f"plugin {name!r} ({ep.value}) takes the built-in tool name {name!r} and is ignored; rename its entry point"
            for name, ep in plugins().items() if name in BUILTIN]
