"""No module or top-level package of astroclip_core imports one that imports it back.

Only imports that run when a module is loaded count: module-level statements, including those
under ``if`` and ``try``, but not ``if TYPE_CHECKING:`` blocks nor imports inside functions
(a deferred import is how a module reaches a layer above it on demand). Packages are compared
at the first level below ``astroclip_core`` (``evaluation``, ``search``, ``tables``...).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "astroclip_core"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _load_time_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    for node in body:
        if isinstance(node, ast.If):
            if not _is_type_checking(node):
                yield from _load_time_statements(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            yield from _load_time_statements(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                yield from _load_time_statements(handler.body)
        else:
            yield node


def _imported(path: Path, name: str) -> set[str]:
    """Names of the astroclip_core modules (and candidate submodules) ``path`` imports."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in _load_time_statements(ast.parse(path.read_text()).body):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found |= {module, *(f"{module}.{alias.name}" for alias in node.names)}
    return {m for m in found if m.startswith(f"{PACKAGE}.")}


def import_graph() -> dict[str, set[str]]:
    """Module -> the astroclip_core modules it imports at load time."""
    modules = {_module_name(p): p for p in (ROOT / PACKAGE).rglob("*.py")}
    return {
        name: {m for m in _imported(path, name) if m in modules and m != name}
        for name, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def _top(module: str) -> str:
    """The package of a module: ``astroclip_core.evaluation.knn`` -> ``evaluation``."""
    return module.split(".")[1]


def test_no_module_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_no_package_import_cycles() -> None:
    graph = import_graph()
    packages: dict[str, set[str]] = {}
    for module, imported in graph.items():
        for other in imported:
            if module != PACKAGE and _top(module) != _top(other):
                packages.setdefault(_top(module), set()).add(_top(other))
    found = cycles(packages)
    edges = [
        f"{m} -> {o}"
        for component in found
        for m, imported in sorted(graph.items())
        for o in sorted(imported)
        if m != PACKAGE and _top(m) in component and _top(o) in component and _top(m) != _top(o)
    ]
    assert found == [], "\n".join(edges)
