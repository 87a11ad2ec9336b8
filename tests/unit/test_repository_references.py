"""What the repository mentions is in the repository, or is named as optional external data.

Scans the tracked text files (``git ls-files``) for: absolute paths of a machine (a clone has no
``/home/alice``); references to a design document that is not in the repository; mentions of the
``../shared`` folder beside the repository that do not say it is optional external data; and,
in the documentation, backticked paths of source files that do not exist.
"""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

MACHINE_PATH = re.compile(r"(?<![\w.$~-])/(?:work|home|root|tmp|Users|mnt|scratch)/")
DESIGN_DOCUMENT = re.compile(r"\b" + "DESIGN" + r"(?:\.md)?\b")
SHARED_FOLDER = "../" + "shared"
NEAR = 3  # lines either side of a ../shared mention that may say "optional"

# Files owned elsewhere that still cite the design document; each should leave this list.
# Records of runs (their configs as run) and the campaign's published files: they state where
# the data were, which was the optional external folder.
RECORDS = re.compile(r"^results/(?:models|campaign)/|^results/.*\.(?:json|csv)$")
DOCUMENTS = ("README.md", "docs/", "results/README.md", "benchmarks/README.md", "data/README.md")
SOURCE_PATH = re.compile(
    r"`((?:dasrlib|docs|notebooks|benchmarks|scripts|tests)/[\w./-]+\.(?:py|md|yaml|ipynb|sh))`"
)


@cache
def tracked_text_files() -> dict[str, str]:
    """{repository-relative path: text} of every tracked file that is UTF-8 text."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError) as error:
        pytest.skip(f"not a git checkout ({error})")
    files = {}
    for name in listed.decode().split("\0"):
        path = REPO / name
        if not name or not path.is_file() or path.is_symlink():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue
        try:
            files[name] = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return files


def _hits(pattern: re.Pattern[str], *, skip: set[str] = frozenset()) -> list[str]:
    return [
        f"{name}:{number}: {line.strip()[:120]}"
        for name, text in tracked_text_files().items()
        if name not in skip
        for number, line in enumerate(text.splitlines(), 1)
        if pattern.search(line)
    ]


def test_no_absolute_machine_paths() -> None:
    assert _hits(MACHINE_PATH, skip={"tests/unit/test_repository_references.py"}) == []


def test_no_references_to_a_design_document_outside_the_repository() -> None:
    hits = _hits(DESIGN_DOCUMENT, skip={"tests/unit/test_repository_references.py"})
    assert hits == [], "cite the paper's section or a file in the repository instead"


def test_the_shared_folder_is_named_as_optional_external_data() -> None:
    unexplained = []
    for name, text in tracked_text_files().items():
        if RECORDS.search(name) or name == "tests/unit/test_repository_references.py":
            continue
        lines = text.splitlines()
        for index, line in enumerate(lines):
            if SHARED_FOLDER in line:
                window = " ".join(lines[max(0, index - NEAR) : index + NEAR + 1]).lower()
                if "optional" not in window:
                    unexplained.append(f"{name}:{index + 1}: {line.strip()[:120]}")
    assert unexplained == [], (
        "say that ../shared is an optional external data folder, and what goes there"
    )


def test_documented_source_files_exist() -> None:
    missing = [
        f"{name}: {path}"
        for name, text in tracked_text_files().items()
        if name.endswith(".md") and name.startswith(DOCUMENTS)
        for path in SOURCE_PATH.findall(text)
        if not (REPO / path).exists()
    ]
    assert missing == []


def test_the_scan_sees_the_repository() -> None:
    files = tracked_text_files()
    assert "README.md" in files and "dasrlib/cli.py" in files
