"""How the packages fit together: no import cycles between the project's modules, errors and aliases in one place.

The import graph is read from the source with ``ast`` (imports inside functions count too: a cycle hidden in a
function body is still a cycle). Packages are the shipped ones: ``appliance``, ``engines``, ``kernels``, ``ui``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("appliance", "engines", "kernels", "ui")


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name, modules)
                if target:
                    yield target
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                target = candidate if candidate in modules else _resolve(source, modules)
                if target:
                    yield target


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (anywhere in its body)."""
    modules = _modules()
    return {name: {t for t in _imports(name, path, modules) if t != name} for name, path in modules.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components with more than one module are import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_project_modules() -> None:
    cycles = strongly_connected(import_graph())
    assert cycles == [], "import cycles (break them by moving the shared part into its own module): " + "; ".join(
        " <-> ".join(c) for c in cycles)


_ALIAS = re.compile(r"^(Array|ProgressCallback|Progress|Device)\s*(:\s*TypeAlias\s*)?=", re.MULTILINE)


def test_shared_type_aliases_are_defined_once() -> None:
    defined = sorted(str(p.relative_to(ROOT)) for p in _modules().values() if _ALIAS.search(p.read_text("utf-8")))
    assert defined == ["appliance/typed.py"]


_BUILTIN_RAISE = re.compile(r"^\s*raise (ValueError|TypeError|RuntimeError|KeyError)\(", re.MULTILINE)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_bare_builtin_errors_raised(package: str) -> None:
    offenders = [f"{p.relative_to(ROOT)}:{m.group(1)}" for p in (ROOT / package).rglob("*.py")
                 for m in _BUILTIN_RAISE.finditer(p.read_text("utf-8"))
                 if "json" not in p.read_text("utf-8")[max(0, m.start() - 400):m.start()]]
    assert offenders == [], "raise a named error from the package's errors.py instead"


def test_error_classes_live_in_errors_modules() -> None:
    pattern = re.compile(r"^class (\w+)\((?:[\w.]*(?:Error|Exception|Refused\w*|Unavailable|Missing)\b[^)]*)\):",
                         re.MULTILINE)
    stray = [f"{p.relative_to(ROOT)}: {m.group(1)}" for p in _modules().values() if p.name != "errors.py"
             for m in pattern.finditer(p.read_text("utf-8")) if not m.group(1).startswith("_")]
    assert stray == [], "error classes belong in their package's errors.py"


def test_bundled_files_are_not_found_outside_the_package() -> None:
    leaving = [str(p.relative_to(ROOT)) for p in _modules().values()
               if re.search(r"__file__\)\.resolve\(\)\.parents\[[1-9]\]", p.read_text("utf-8"))]
    assert leaving == [], "find bundled files with importlib.resources (package data), not paths above the package"


def test_tests_import_helpers_not_conftest() -> None:
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("*.py")
                 if re.search(r"^\s*(from conftest import|import conftest)", p.read_text("utf-8"), re.MULTILINE)]
    assert offenders == [], "import shared test helpers from tests/helpers/, not from conftest"
