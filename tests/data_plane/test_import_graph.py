"""The data plane's structure, read from its source: no import circle between its modules (type-only imports
count too), and no module reaches into another's private names, its own package's or a library's. The one
allowed exception is io/h11_compat.py, which holds every use of h11's internals (see its docstring)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO_ROOT

PACKAGE = "data_plane"
ROOT = REPO_ROOT / PACKAGE
COMPAT_MODULES = {"data_plane.io.h11_compat"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _resolve(module: str, level: int, name: str | None, importer: str, is_package: bool) -> str:
    if not level:
        return name or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def imports_of(module: str) -> set[str]:
    """The data_plane modules `module` imports, anywhere in the file (TYPE_CHECKING blocks included)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node.level, node.module, module, path.name == "__init__.py")
            # `from package import module` imports the module; `from module import name` the module.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target.startswith(PACKAGE) and target != module and target != PACKAGE:
                found.add(target)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph.get(node, ()):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle_in_the_data_plane() -> None:
    graph = {module: imports_of(module) for module in MODULES}
    assert graph["data_plane.io.client_connection"] >= {"data_plane.io.http_relay", "data_plane.runtime"}
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_circle() -> None:
    """The check above must be able to fail: the loop the renovation removed is a circle to it."""
    graph = {
        "data_plane.runtime": {"data_plane.io.client_connection"},
        "data_plane.io.client_connection": {"data_plane.io.http_relay", "data_plane.runtime"},
        "data_plane.io.http_relay": {"data_plane.io.client_connection"},
    }
    assert cycles(graph) == [
        ["data_plane.io.client_connection", "data_plane.io.http_relay", "data_plane.runtime"]
    ]


def _own_names(tree: ast.Module) -> set[str]:
    """Private names a module defines itself: functions, classes, attributes it assigns, slots."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("_"):
            names.add(node.value)  # __slots__ entries
    return names


def private_reaches(module: str) -> list[str]:
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    own = _own_names(tree)
    found: list[str] = []

    def private(name: str) -> bool:
        return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            found += [
                f"line {node.lineno}: imports {alias.name}" for alias in node.names if private(alias.name)
            ]
        elif isinstance(node, ast.Attribute) and private(node.attr):
            inherited = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls", "super")
            if not inherited and node.attr not in own:
                found.append(f"line {node.lineno}: .{node.attr}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and private(node.args[1].value)
        ):
            found.append(f"line {node.lineno}: {node.func.id}(..., {node.args[1].value!r})")
    return found


def test_no_module_reaches_into_another_modules_privates() -> None:
    reaches = {module: private_reaches(module) for module in MODULES if module not in COMPAT_MODULES}
    assert {module: found for module, found in reaches.items() if found} == {}


def test_the_private_access_check_sees_what_the_compat_module_does() -> None:
    """h11_compat really does what everything else may not (so the check above can fail)."""
    found = private_reaches("data_plane.io.h11_compat")
    assert any("_process_event" in line for line in found), found
    assert any("_full_items" in line for line in found), found
