"""The apps import one way: down the rooms of docs/architecture.md, never up, never in a circle.

Read from the source with ``ast``, every import counted, those inside a function too: a
function-local import is still an arrow, only a hidden one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Lower rooms never import higher ones; apps in one room may import each other.
ROOMS: dict[str, int] = {
    "realtime_project": 0,
    "realtime_layer": 0,
    "connections": 1,
    "accounts": 1,
    "webhooks": 1,
    "presence": 2,
    "chat": 3,
    "health": 4,
}
# The entry points assemble every app: they sit above all rooms.
ENTRY_POINTS = {"realtime_project.asgi", "realtime_project.urls"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _source_modules() -> Iterator[tuple[str, Path]]:
    for package in ROOMS:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            yield _module_name(path), path


def _imports(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """Every project module ``module`` imports, with the line of the import."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield target, node.lineno
            # ``from chat import metrics`` imports the module chat.metrics.
            for alias in node.names:
                yield f"{target}.{alias.name}", node.lineno


def _graph() -> dict[str, set[tuple[str, int]]]:
    modules = dict(_source_modules())
    graph: dict[str, set[tuple[str, int]]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, line in _imports(name, path):
            if target in modules and target != name:
                graph[name].add((target, line))
    return graph


def _room(module: str) -> int:
    return ROOMS[module.split(".")[0]]


def test_no_app_imports_health() -> None:
    offenders = sorted(
        f"{module}:{line} imports {target}"
        for module, targets in _graph().items()
        for target, line in targets
        if target.split(".")[0] == "health"
        and module.split(".")[0] != "health"
        and module not in ENTRY_POINTS
    )
    assert offenders == []


def test_no_import_runs_up_the_rooms() -> None:
    offenders = sorted(
        f"{module}:{line} imports {target}"
        for module, targets in _graph().items()
        if module not in ENTRY_POINTS
        for target, line in targets
        if _room(target) > _room(module)
    )
    assert offenders == []


def test_no_modules_import_each_other_in_a_circle() -> None:
    graph = {module: {target for target, _ in targets} for module, targets in _graph().items()}
    # A package imports its own submodules (``from chat import metrics``): that is no circle.
    for module in graph:
        graph[module] = {t for t in graph[module] if not module.startswith(f"{t}.")}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert [" -> ".join(cycle) for cycle in cycles] == []
