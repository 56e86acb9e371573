"""The folders are the architecture: what may import what, checked on the source.

Type-only imports count: an `if TYPE_CHECKING:` import is still a dependency
a reader must follow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Folder -> the para folders its modules may import (besides their own).
LAYERS = {
    "ipc": set(),
    "web": {"ipc"},
    "sandbox": {"web"},
    "client": {"ipc"},
    "daemon": {"ipc", "sandbox", "configs", "web"},
    "mcp_server": {"client", "ipc"},   # talks to parad as any client does
}
# Single modules allowed across: autostart starts parad with the sys.path rules parad keeps itself;
# `paractl mcp` is para-mcp's main, imported only when that command runs.
EXCEPTIONS = {"para.client.autostart": {"para.daemon.safe_path"}, "para.client.paractl": {"para.mcp_server.main"}}


def modules(folder: str) -> dict[str, Path]:
    """Dotted name -> file, for every module under `folder`."""
    out = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(("para",) + parts)
        out[name.removesuffix(".__init__")] = path
    return out


def imports(path: Path, package: str) -> set[str]:
    """Every para module `path` imports, at any level of the file (type-only included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:   # relative: resolve against the importing package
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("para.")}


def graph(folder: str) -> dict[str, set[str]]:
    mods = modules(folder)
    edges = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        edges[name] = {i for i in imports(path, package) if i in mods and i != name}
    return edges


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it; None if there is none."""
    state: dict[str, int] = {}   # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


@pytest.mark.parametrize("folder", sorted(LAYERS))
def test_no_import_cycle_within_a_folder(folder: str) -> None:
    found = cycle(graph(folder))
    assert found is None, f"import cycle: {' -> '.join(found)}"


def test_the_cycle_finder_finds_one() -> None:
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("folder", sorted(LAYERS))
def test_folders_import_only_the_layers_below(folder: str) -> None:
    allowed = {f"para.{f}" for f in LAYERS[folder] | {folder}}
    wrong = sorted(f"{name} imports {i}" for name, path in modules(folder).items() for i in imports(path, name)
                   if ".".join(i.split(".")[:2]) not in allowed
                   and not any(i.startswith(e) for e in EXCEPTIONS.get(name, ())))
    assert not wrong, "\n".join(wrong)


def test_only_startup_knows_the_supervisor() -> None:
    # The helpers take the core (core.py), typed by Protocols: none holds the supervisor.
    users = sorted(name for name, path in modules("daemon").items()
                   if "para.daemon.supervisor" in imports(path, name))
    assert users == ["para.daemon.startup"]
    reach = sorted(str(p.relative_to(ROOT)) for p in modules("daemon").values()
                   if ".sup." in p.read_text() or "self.sup " in p.read_text())
    assert not reach, f"modules reaching through a supervisor reference: {reach}"
