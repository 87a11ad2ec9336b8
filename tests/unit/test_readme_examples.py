"""The README's ``dasr ...`` examples run as written (with a tiny model where they need one)."""

from __future__ import annotations

import logging
import re
import shlex
from pathlib import Path

import pytest
import torch

from dasrlib.cli import main
from dasrlib.data import IMAGE_EXTENSIONS
from dasrlib.degradation.edit import PARAMETER_ALIASES, physical_range
from dasrlib.degradation.levels import Level
from dasrlib.io import write_png
from dasrlib.models.checkpoints import save_weights
from dasrlib.models.dasr import DASR

README = Path(__file__).resolve().parents[2] / "README.md"
NOISE_TYPES = ("gaussian", "poisson")  # what the predictor may say the noise is


def readme_dasr_commands() -> list[list[str]]:
    """The ``dasr`` command lines of the README's bash blocks, as argv lists (comments dropped)."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    commands = []
    for line in "\n".join(blocks).splitlines():
        words = shlex.split(line, comments=True)
        if words and Path(words[0]).name == "dasr":
            commands.append(words[1:])
    return commands


def _set_items(argv: list[str]) -> dict[str, str]:
    items = [argv[i + 1] for i, word in enumerate(argv) if word == "--set"]
    return dict(item.split("=", 1) for item in items)


def test_the_readme_has_dasr_examples() -> None:
    commands = readme_dasr_commands()
    assert {argv[0] for argv in commands} == {"upscale", "predict"}
    assert any("--set" in argv for argv in commands)


@pytest.mark.parametrize("argv", readme_dasr_commands(), ids=" ".join)
def test_readme_set_values_lie_in_range_whatever_the_predicted_noise(argv: list[str]) -> None:
    """A --set value must be inside its range at the command's level for every noise type the
    model might predict, unless the command sets the noise type too."""
    edits = _set_items(argv)
    level = argv[argv.index("--level") + 1] if "--level" in argv else Level.SEVERE.value
    for name, value in edits.items():
        for parameter in PARAMETER_ALIASES.get(name, (name,)):
            if parameter.endswith("_type") or parameter.endswith("_mode"):
                continue
            type_name = parameter.replace("_level", "_type")
            type_set = next(
                (v for k, v in edits.items() if type_name in PARAMETER_ALIASES.get(k, (k,))), None
            )
            types = (type_set,) if type_set else NOISE_TYPES
            for noise_type in types:
                low, high = physical_range(parameter, level=level, noise_type=noise_type)
                assert low <= float(value) <= high, (
                    f"README: dasr {' '.join(argv)}: {name}={value} is outside the {level} range "
                    f"[{low}, {high}] for {noise_type} noise"
                )


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = DASR(
        num_feat=8, num_block=1, predictor_feat=8, generator=torch.Generator().manual_seed(0)
    )
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_weights(model, path)
    return path


def _make_inputs(argv: list[str], root: Path) -> None:
    """Create the inputs an example names: a small image per image file, a folder with two."""
    generator = torch.Generator().manual_seed(0)
    skip_next = False
    for word in argv[1:]:
        if skip_next or word.startswith("-"):
            skip_next = word.startswith("-") and word not in (
                "--json",
                "--overwrite",
                "--keep-gray",
            )
            continue
        path = root / word
        if path.exists():
            continue
        if word.endswith("/"):
            path.mkdir(parents=True)
            for name in ("b.png", "a.png"):
                write_png(path / name, torch.rand(3, 12, 16, generator=generator))
        elif path.suffix.lower() in IMAGE_EXTENSIONS:
            write_png(path, torch.rand(3, 12, 16, generator=generator))


def test_readme_examples_run_as_written(
    tiny_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every example, in README order in one folder, exits 0 without a warning; an example
    without --model gets the tiny model (the README's default model may not exist yet)."""
    monkeypatch.chdir(tmp_path)
    for argv in readme_dasr_commands():
        _make_inputs(argv, tmp_path)
        if "--model" not in argv and "--official" not in argv:
            argv = [*argv, "--model", str(tiny_model), "--precision", "fp32"]
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="dasrlib"):
            code = main(argv)
        err = capsys.readouterr().err
        assert code == 0, f"dasr {' '.join(argv)} exited {code}: {err}"
        assert not caplog.records, f"dasr {' '.join(argv)} warned: {caplog.text}"
        if "-o" in argv:
            assert list((tmp_path / argv[argv.index("-o") + 1]).glob("*.png"))
