"""The package imports one way: no module reaches back up to one that imports it.

Every ``import`` statement counts, including those inside functions and under
``TYPE_CHECKING``: a lazy import is still a circle, only hidden.  Importing
``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``, so a package's ``__init__``
is an edge too (except the packages that enclose the importing module, already
running by then).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import stream_triggers

PACKAGE = "stream_triggers"
ROOT = Path(stream_triggers.__file__).parent


def _modules() -> dict[str, Path]:
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _imported(module: str) -> set[str]:
    """The project modules that ``module``'s import statements name."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    package = module if _is_package(module) else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # submodules
    return {name for name in names if name in MODULES}


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        enclosing = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 2)}
        edges = set()
        for target in _imported(module):
            parts = target.split(".")
            chain = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
            edges.update(chain - enclosing)
        edges.discard(module)
        graph[module] = edges
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (as a path that returns to its start), or None."""
    done: set[str] = set()
    for start in sorted(graph):
        path: list[str] = []
        on_path: set[str] = set()
        stack = [(start, iter(sorted(graph[start])))]
        if start in done:
            continue
        path.append(start)
        on_path.add(start)
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                on_path.discard(node)
                done.add(node)
            elif child in on_path:
                return path[path.index(child) :] + [child]
            elif child not in done:
                stack.append((child, iter(sorted(graph[child]))))
                path.append(child)
                on_path.add(child)
    return None


def test_the_cycle_finder_sees_a_circle() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_a_lazy_import_counts_as_an_edge() -> None:
    assert "stream_triggers.manager" in _graph()["stream_triggers.testing"]


def test_no_import_cycle_among_the_package_modules() -> None:
    cycle = _find_cycle(_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


PUBLIC = [
    "stream_triggers.manager",
    "stream_triggers.task",
    "stream_triggers.testing",
    "stream_triggers.runners",
    "stream_triggers.storages",
    "stream_triggers.storages.memory",
    "stream_triggers.storages.rocksdb",
    "stream_triggers.types",
    "stream_triggers.exceptions",
    "stream_triggers.registry",
]


@pytest.mark.parametrize("module", PUBLIC)
def test_each_public_module_imports_first_in_a_fresh_interpreter(module: str) -> None:
    result = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
