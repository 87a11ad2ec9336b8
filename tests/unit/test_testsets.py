"""Seeded test sets: layout, manifest, byte-identical rebuilds, subsets, loading."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from dasrlib.testsets import build_testsets, image_seed, load_testset, main

LEVELS = ("bicubic", "weak", "standard", "severe")


@pytest.fixture
def hr_dir(make_image_file: Callable[..., Path], tmp_path: Path) -> Path:
    make_image_file("div2k/0801.png", width=66, height=50, seed=1)  # cropped to 64 x 48
    make_image_file("div2k/0802.png", width=48, height=40, seed=2)
    return tmp_path / "div2k"


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_build_writes_levels_hr_and_manifest(hr_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "sets"
    manifest_path = build_testsets(hr_dir, out, levels=LEVELS, seed=0)
    assert manifest_path == out / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["dataset"] == "div2k" and manifest["seed"] == 0
    assert manifest["levels"] == list(LEVELS) and manifest["device"] == "cpu"
    assert len(manifest["images"]) == 2 and len(manifest["entries"]) == 8
    image = manifest["images"][0]
    assert image["name"] == "0801" and image["hr_size"] == [48, 64]
    assert image["source_sha256"] == hashlib.sha256((hr_dir / "0801.png").read_bytes()).hexdigest()
    for entry in manifest["entries"]:
        lr_file = out / entry["lr"]
        assert lr_file == out / entry["level"] / f"{entry['name']}.png"
        assert hashlib.sha256(lr_file.read_bytes()).hexdigest() == entry["lr_sha256"]
        assert entry["seed"] == image_seed(0, entry["name"], entry["level"])
        assert len(entry["v"]) == 33 and all(0.0 <= x <= 1.0 for x in entry["v"])
        assert entry["params"]["level"] == entry["level"]
    seeds = {e["seed"] for e in manifest["entries"]}
    assert len(seeds) == 8  # one seed per (image, level)


def test_rebuild_is_byte_identical_and_subsets_regenerate(hr_dir: Path, tmp_path: Path) -> None:
    first, second, subset = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    build_testsets(hr_dir, first, levels=LEVELS, seed=0)
    build_testsets(hr_dir, second, levels=LEVELS, seed=0)
    tree_a, tree_b = _tree(first), _tree(second)
    assert tree_a == tree_b
    build_testsets(hr_dir, subset, levels=("severe",), seed=0, max_images=1)
    assert _tree(subset)["severe/0801.png"] == tree_a["severe/0801.png"]
    other = tmp_path / "d"
    build_testsets(hr_dir, other, levels=("severe",), seed=1, max_images=1)
    assert _tree(other)["severe/0801.png"] != tree_a["severe/0801.png"]


def test_load_testset_yields_aligned_pairs(hr_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "sets"
    build_testsets(hr_dir, out, levels=("weak", "severe"), seed=0)
    items = list(load_testset(out, "severe"))
    assert [name for name, *_ in items] == ["0801", "0802"]
    manifest = json.loads((out / "manifest.json").read_text())
    for name, lr, hr, v in items:
        assert hr.shape[-2] % 4 == 0 and hr.shape[-1] % 4 == 0
        assert lr.shape == (3, hr.shape[-2] // 4, hr.shape[-1] // 4)
        entry = next(e for e in manifest["entries"] if e["name"] == name and e["level"] == "severe")
        torch.testing.assert_close(v, torch.tensor(entry["v"]))
    with pytest.raises(ValueError, match="not 'bicubic'"):
        next(load_testset(out, "bicubic"))
    (out / "severe" / "0802.png").write_bytes((out / "weak" / "0802.png").read_bytes())
    with pytest.raises(ValueError, match="sha256"):
        list(load_testset(out, "severe"))


def test_command_line_build(hr_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli"
    code = main(
        ["build", "--hr", str(hr_dir), "--out", str(out), "--levels", "bicubic,weak", "--seed", "3"]
    )
    assert code == 0
    assert "wrote 4 LR images" in capsys.readouterr().out
    assert (out / "bicubic" / "0802.png").is_file() and (out / "hr" / "0801.png").is_file()


def test_duplicate_stems_are_rejected(make_image_file: Callable[..., Path], tmp_path: Path) -> None:
    make_image_file("dup/a/x.png", width=16, height=16)
    make_image_file("dup/b/x.png", width=16, height=16)
    with pytest.raises(ValueError, match="both named 'x'"):
        build_testsets(tmp_path / "dup", tmp_path / "out", levels=("bicubic",))


def test_repeated_levels_are_rejected(hr_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\['weak'\] are listed more than once"):
        build_testsets(hr_dir, tmp_path / "out", levels=("weak", "bicubic", "weak"))
    assert not (tmp_path / "out").exists()
