"""The code's shape: no class too long to read as one idea, no import circle among the modules.

Both read the source with `ast` (nothing is imported), over shared/ and handlers/.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("shared", "handlers")
MAX_CLASS_LINES = 350

LONG_CLASSES_FOR_NOW: set[str] = set()
"""Classes over the limit, exempt for now: none since Ledger was split (issue 19 §6). Nothing may join it."""


def _sources() -> dict[str, Path]:
    """Module name -> file, for every module of the packages."""
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_no_class_is_longer_than_350_lines():
    long = []
    for path in _sources().values():
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ClassDef):
                name = f"{path.relative_to(ROOT).as_posix()}:{node.name}"
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_CLASS_LINES and name not in LONG_CLASSES_FOR_NOW:
                    long.append(f"{name} ({lines} lines)")
    assert not long, f"classes over {MAX_CLASS_LINES} lines (split them by concern): {long}"


def _imported(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project's modules `module` imports anywhere in its file (in functions and under
    TYPE_CHECKING too): `from a import b` is a.b when that is a module, else a."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(_tree(path)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        for name in names:
            while name and name not in modules:  # `import a.b.c` of a function's module: its package
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def _import_graph() -> dict[str, set[str]]:
    modules = _sources()
    return {m: _imported(m, p, modules) for m, p in modules.items()}


def _circle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A shortest circle of imports from `start` back to it (its modules in import order, `start`
    at both ends), or None when `start` is on none."""
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for module in frontier:
            for nxt in sorted(graph.get(module, ())):
                if nxt == start:
                    circle = [module]
                    while circle[-1] != start:
                        circle.append(came_from[circle[-1]])
                    return [*reversed(circle), start]
                if nxt not in came_from:
                    came_from[nxt] = module
                    following.append(nxt)
        frontier = following
    return None


def test_no_import_circle_among_the_modules():
    graph = _import_graph()
    circles = [c for m in sorted(graph) if (c := _circle_through(graph, m))]
    assert not circles, "import circle: " + " -> ".join(circles[0] if circles else [])


def test_the_circle_finder_finds_a_circle_and_only_a_circle():
    graph = {"a": {"b"}, "b": {"c", "d"}, "c": {"a"}, "d": {"b"}, "e": {"a"}}
    assert _circle_through(graph, "a") == ["a", "b", "c", "a"]
    assert _circle_through(graph, "d") == ["d", "b", "d"]
    assert _circle_through(graph, "e") is None, "imports a circle, is on none"
    assert _circle_through({"a": {"b", "c"}, "b": {"c"}, "c": set()}, "a") is None
