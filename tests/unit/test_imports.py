"""The package's module-level imports run one way: no cycle between dasrlib modules."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "dasrlib"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """{module: dasrlib modules it imports at module level}; a package's own re-exports skipped."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:  # module level only
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            targets |= {n for n in names if n in modules}
        if is_package:  # `from dasrlib.train.loop import train` in dasrlib/train/__init__.py
            targets = {t for t in targets if not t.startswith(name + ".")}
        graph[name] = targets - {name}
    return graph


def test_no_import_cycle() -> None:
    graph = import_graph()
    assert "dasrlib.train.config" in graph and "dasrlib.config" in graph["dasrlib.train.config"]
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        pytest.fail(f"import cycle: {' -> '.join(error.args[1])}")


def test_training_modules_import_down_the_documented_order() -> None:
    order = ["config", "state", "stream", "validation", "build", "logger", "trainer", "loop", "cli"]
    graph = import_graph()
    for position, name in enumerate(order):
        later = {f"dasrlib.train.{n}" for n in order[position + 1 :]} | {"dasrlib.train"}
        assert not graph[f"dasrlib.train.{name}"] & later, name
