"""One import path per public name: each public name of `dasrlib` has exactly one home module.

The rule (docs/ARCHITECTURE.md, "One door per name"): a name is public in the module that defines
it, and only there. ``__all__`` lists only names the module itself defines; package
``__init__`` files gather nothing. Every ``from dasrlib... import name`` in the repository (the
package, tests, benchmarks, scripts, the notebooks' code) and every ``module.name`` read
through a module imported by its dotted name takes the name from its home module.
"""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from types import ModuleType

import dasrlib

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "dasrlib"
# Values compared by identity would be shared by accident (interned ints and strings, None).
_SHARED_BY_ACCIDENT = (int, float, complex, str, bytes, bool, type(None))


@cache
def modules() -> dict[str, ModuleType]:
    """Every module of dasrlib, imported (``__main__`` modules run a program and are skipped)."""
    names = ["dasrlib"] + [
        info.name
        for info in pkgutil.walk_packages(dasrlib.__path__, "dasrlib.")
        if not info.name.endswith(".__main__")
    ]
    return {name: importlib.import_module(name) for name in names}


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Module-level statements, looking inside ``if`` / ``try`` / ``with`` blocks."""
    for node in body:
        yield node
        if isinstance(node, ast.If | ast.Try | ast.With):
            for block in ("body", "orelse", "finalbody"):
                yield from _top_level(getattr(node, block, []))
            for handler in getattr(node, "handlers", []):
                yield from _top_level(handler.body)


def _targets(node: ast.expr) -> Iterator[str]:
    if isinstance(node, ast.Name):
        yield node.id
    elif isinstance(node, ast.Tuple | ast.List):
        for element in node.elts:
            yield from _targets(element)


@cache
def defined_names(module_name: str) -> frozenset[str]:
    """Names a module binds by ``def``, ``class`` or assignment at module level (not imports)."""
    path = Path(modules()[module_name].__file__)
    names: set[str] = set()
    for node in _top_level(ast.parse(path.read_text(encoding="utf-8")).body):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                names.update(_targets(target))
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            names.update(_targets(node.target))
    return frozenset(names - {"__all__"})


def public_names(module_name: str) -> list[str]:
    module = modules()[module_name]
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return sorted(n for n in defined_names(module_name) if not n.startswith("_"))


def importable(module_name: str, name: str) -> bool:
    """True when ``name`` may be imported from ``module_name``: defined there, or a submodule."""
    return name in defined_names(module_name) or f"{module_name}.{name}" in modules()


def test_every_module_is_walked() -> None:
    walked = modules()
    assert {"dasrlib.inference", "dasrlib.degradation.edit", "dasrlib.models.loading"} <= set(
        walked
    )
    assert len(walked) > 50
    assert "NUM_SLOTS" in defined_names("dasrlib.degradation.vector")
    assert "NUM_SLOTS" not in defined_names("dasrlib.inference")  # imported, not defined


def test_all_lists_only_names_the_module_defines() -> None:
    wrong = [
        f"{name}.__all__ lists {entry!r}, which it imports (list it in its home module only)"
        for name, module in modules().items()
        for entry in getattr(module, "__all__", [])
        if entry not in defined_names(name)
    ]
    assert not wrong, "\n".join(wrong)


def test_no_public_object_in_two_modules() -> None:
    homes: dict[int, list[str]] = {}
    for name, module in modules().items():
        for entry in public_names(name):
            value = getattr(module, entry)
            if isinstance(value, _SHARED_BY_ACCIDENT) or value == ():
                continue
            homes.setdefault(id(value), []).append(f"{name}.{entry}")
    doubles = sorted(", ".join(places) for places in homes.values() if len(places) > 1)
    assert not doubles, "the same object is public in two modules:\n" + "\n".join(doubles)


def _sources() -> Iterator[tuple[str, str]]:
    """(file name, Python source) of the package, tests, benchmarks, scripts, notebook cells."""
    for folder in ("dasrlib", "tests", "benchmarks", "scripts"):
        for path in sorted((REPO / folder).rglob("*.py")):
            yield str(path.relative_to(REPO)), path.read_text(encoding="utf-8")
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        lines = [line for line in code.splitlines() if not line.startswith(("%", "!"))]
        yield str(path.relative_to(REPO)), "\n".join(lines)


def _package_of(file_name: str) -> str:
    parts = Path(file_name).with_suffix("").parts
    return ".".join(parts[:-1])


def wrong_doors(sources: Iterable[tuple[str, str]] | None = None) -> list[str]:
    """Imports and module attribute reads that take a name from a module other than its home."""
    wrong: list[str] = []
    for file_name, source in _sources() if sources is None else sources:
        tree = ast.parse(source)
        aliases: dict[str, str] = {}  # local name -> dasrlib module it stands for
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:  # relative import inside dasrlib
                    base = _package_of(file_name).split(".")
                    base = base[: len(base) - node.level + 1]
                    module = ".".join(base + ([module] if module else []))
                if module != "dasrlib" and not module.startswith("dasrlib."):
                    continue
                for alias in node.names:
                    if module not in modules():
                        wrong.append(f"{file_name}: from {module} import {alias.name}")
                    elif f"{module}.{alias.name}" in modules():
                        aliases[alias.asname or alias.name] = f"{module}.{alias.name}"
                    elif not importable(module, alias.name):
                        wrong.append(f"{file_name}: {alias.name} imported from {module}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("dasrlib") and alias.asname:
                        aliases[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and not node.attr.startswith("__")
            ):
                module = aliases[node.value.id]
                if module in modules() and not importable(module, node.attr):
                    wrong.append(f"{file_name}: {node.value.id}.{node.attr} read from {module}")
    return sorted(set(wrong))


def test_every_import_takes_a_name_from_its_home_module() -> None:
    wrong = wrong_doors()
    assert not wrong, "import each name from the module that defines it:\n" + "\n".join(wrong)


def test_a_re_export_is_caught() -> None:
    """The checks can fail: names taken through a module that only imports them are reported."""
    source = (
        "from dasrlib.inference import edit_vector, upscale\n"
        "from dasrlib.degradation import vector\n"
        "import dasrlib.evaluate as ev\n"
        "ev.LEVELS, ev.evaluate, vector.NUM_SLOTS\n"
    )
    assert wrong_doors([("example.py", source)]) == [
        "example.py: edit_vector imported from dasrlib.inference",
        "example.py: ev.LEVELS read from dasrlib.evaluate",
    ]
