"""environment.yml (conda), pyproject.toml (pip) and requirements-lock.txt must agree."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements-lock.txt"


def _normalise(requirement: str) -> str:
    """PEP 503 name plus specifier, without spaces: "Scikit_Image >= 1" -> "scikit-image>=1"."""
    requirement = requirement.split(";")[0].strip().replace(" ", "")
    match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?(.*)$", requirement)
    assert match, f"cannot parse requirement {requirement!r}"
    name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
    return name + (match.group(2) or "") + match.group(3)


def _pyproject_requirements() -> list[str]:
    if sys.version_info < (3, 11):
        pytest.skip("tomllib needs Python 3.11")
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["dev"]]


def _conda_pip_requirements() -> list[str]:
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in environment["dependencies"] if isinstance(d, dict)]
    assert len(pip_sections) == 1, "environment.yml needs exactly one pip: section"
    return [r for r in pip_sections[0] if not r.startswith("-")]  # skip "-e ." and options


def test_same_packages_and_pins() -> None:
    pip = sorted(map(_normalise, _pyproject_requirements()))
    conda = sorted(map(_normalise, _conda_pip_requirements()))
    assert len(set(conda)) == len(conda), "environment.yml lists a package twice"
    missing = sorted(set(pip) - set(conda))
    extra = sorted(set(conda) - set(pip))
    assert not missing and not extra, (
        f"only in pyproject: {missing}; only in environment.yml: {extra}"
    )


def test_python_version_allowed_by_pyproject() -> None:
    if sys.version_info < (3, 11):
        pytest.skip("tomllib needs Python 3.11")
    import tomllib

    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pythons = [
        d for d in environment["dependencies"] if isinstance(d, str) and d.startswith("python")
    ]
    assert pythons == ["python=3.11"]
    minimum = tuple(int(x) for x in re.search(r">=\s*([\d.]+)", requires).group(1).split("."))
    assert (3, 11) >= minimum


def _lock_pins() -> dict[str, set[str]]:
    """Package name -> the exact versions the lock allows (one per environment marker)."""
    pins: dict[str, set[str]] = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        requirement = line.split(";")[0].strip()
        assert "==" in requirement, f"{LOCK.name}: {line!r} is not an exact pin"
        name, version = requirement.split("==")
        pins.setdefault(_normalise(name), set()).add(version.strip())
    return pins


def test_lock_pins_every_dependency_exactly() -> None:
    """A dependency added to pyproject.toml without `make lock` fails here."""
    pins = _lock_pins()
    for requirement in map(_normalise, _pyproject_requirements()):
        name = re.match(r"^[a-z0-9-]+", requirement).group(0)
        assert name in pins, f"{name} is not in {LOCK.name}: run `make lock`"
        if "==" in requirement:
            assert pins[name] == {requirement.split("==")[1]}, (requirement, pins[name])


def test_conda_and_make_install_from_the_lock() -> None:
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    assert f"-c {LOCK.name}" in pip_section
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"pip install -c \$\(LOCK\) -e", makefile)
    assert f"LOCK := {LOCK.name}" in makefile
