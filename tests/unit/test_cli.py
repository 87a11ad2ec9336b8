"""The ``dasr`` command: batches with bad files, never overwriting inputs, --set, predict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dasrlib.cli import main
from dasrlib.degradation.edit import edit_vector
from dasrlib.inference import predict_vector, upscale
from dasrlib.io import UPSCALE_OUTPUT_TEXT, read_image, write_png
from dasrlib.models.checkpoints import save_weights
from dasrlib.models.dasr import DASR
from dasrlib.models.experts import SRResNet
from dasrlib.models.loading import MODEL_ROOT_ENV, load_sr_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = DASR(
        num_feat=8, num_block=2, predictor_feat=8, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        model.experts.bank.mul_(20.0)  # a residual large enough for edits to change pixels
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_weights(model, path)
    return path


def _image(path: Path, *, seed: int, size: tuple[int, int] = (14, 18), **options: object) -> Path:
    generator = torch.Generator().manual_seed(seed)
    write_png(path, torch.rand(3, *size, generator=generator), **options)
    return path


def _run(*argv: str | Path) -> int:
    return main([str(a) for a in argv])


def test_folder_with_a_corrupt_file_writes_the_good_ones_and_fails(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    _image(inputs / "a.png", seed=1)
    alpha = torch.rand(1, 11, 13, generator=torch.Generator().manual_seed(2))
    _image(inputs / "b.png", seed=2, size=(11, 13), alpha=alpha, bit_depth=16)
    (inputs / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (inputs / "notes.txt").write_text("not an image, not an input")
    status = _run(
        "upscale", inputs, "-o", tmp_path / "out", "--model", checkpoint, "--device", "cpu"
    )
    err = capsys.readouterr().err
    assert status == 1
    assert "c.png" in err and "cannot read image" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_x4.png", "b_x4.png"]
    a = read_image(tmp_path / "out" / "a_x4.png")
    b = read_image(tmp_path / "out" / "b_x4.png")
    assert a.rgb.shape == (3, 56, 72) and a.bit_depth == 8 and a.alpha is None
    assert b.rgb.shape == (3, 44, 52) and b.bit_depth == 16 and b.alpha is not None


def test_all_good_exits_zero_and_matches_the_api(checkpoint: Path, tmp_path: Path) -> None:
    source = _image(tmp_path / "photo.png", seed=3)
    assert _run("upscale", source, "-o", tmp_path / "out", "--model", checkpoint) == 0
    written = read_image(tmp_path / "out" / "photo_x4.png").rgb
    model = load_sr_model(checkpoint)
    expected = upscale(read_image(source).rgb, model)
    assert (written - expected).abs().max() <= 0.5 / 255 + 1e-6


def test_inputs_are_never_overwritten(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    _image(folder / "a.png", seed=4)
    clash = _image(folder / "a_x4.png", seed=5)  # an input named like a's output
    before = clash.read_bytes()
    status = _run("upscale", folder, "-o", folder, "--model", checkpoint, "--overwrite")
    err = capsys.readouterr().err
    assert status == 1
    assert clash.read_bytes() == before
    assert "is an input file" in err
    assert (folder / "a_x4_x4.png").is_file()  # the other input was processed


def test_existing_output_needs_overwrite(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _image(tmp_path / "a.png", seed=6)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_x4.png").write_bytes(b"previous result")
    assert _run("upscale", source, "-o", out, "--model", checkpoint) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "a_x4.png").read_bytes() == b"previous result"
    # --overwrite replaces only what dasr upscale wrote: this file is someone else's.
    assert _run("upscale", source, "-o", out, "--model", checkpoint, "--overwrite") == 1
    assert "not written by dasr upscale" in capsys.readouterr().err
    assert (out / "a_x4.png").read_bytes() == b"previous result"
    write_png(out / "a_x4.png", torch.zeros(3, 4, 4), text=UPSCALE_OUTPUT_TEXT)  # an earlier run's
    assert _run("upscale", source, "-o", out, "--model", checkpoint, "--overwrite") == 0
    assert read_image(out / "a_x4.png").rgb.shape == (3, 56, 72)


def test_set_edits_the_predicted_degradation(checkpoint: Path, tmp_path: Path) -> None:
    source = _image(tmp_path / "a.png", seed=7)
    status = _run(
        "upscale", source, "-o", tmp_path / "out", "--model", checkpoint,
        "--set", "blur_sigma=2.5", "--set", "noise1_type=gaussian", "--set", "noise_level=25",
    )  # fmt: skip
    assert status == 0
    model = load_sr_model(checkpoint)
    lr = read_image(source).rgb
    v = edit_vector(
        predict_vector(lr, model, precision="auto"),  # what the command ran
        {"blur_sigma": 2.5, "noise1_type": "gaussian", "noise_level": 25.0},
    )
    expected = upscale(lr, model, v=v)
    automatic = upscale(lr, model)
    written = read_image(tmp_path / "out" / "a_x4.png").rgb
    assert (written - expected).abs().max() <= 0.5 / 255 + 1e-6
    assert (expected - automatic).abs().max() > 2 / 255  # the edit changed the result


def test_unknown_set_name_is_a_usage_error_listing_names(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _image(tmp_path / "a.png", seed=8)
    status = _run(
        "upscale", source, "-o", tmp_path / "out", "--model", checkpoint, "--set", "blurr=1"
    )
    err = capsys.readouterr().err
    assert status == 2
    assert "blurr" in err and "blur1_sigma_x" in err and "noise_level" in err
    assert not (tmp_path / "out").exists()


def test_missing_inputs_and_globs(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _image(tmp_path / "x1.png", seed=9)
    _image(tmp_path / "x2.png", seed=10)
    status = _run(
        "upscale", str(tmp_path / "x*.png"), tmp_path / "missing.png", "-o", tmp_path / "out",
        "--model", checkpoint,
    )  # fmt: skip
    assert status == 1
    assert "missing.png" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x1_x4.png", "x2_x4.png"]


def test_plain_model_upscales_but_cannot_be_edited(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "srresnet.safetensors"
    save_weights(SRResNet(num_feat=8, num_block=1), path)
    source = _image(tmp_path / "a.png", seed=11)
    assert _run("upscale", source, "-o", tmp_path / "out", "--model", path) == 0
    assert (
        _run("upscale", source, "-o", tmp_path / "o2", "--model", path, "--set", "blur_sigma=1")
        == 2
    )
    assert "needs a DASR model" in capsys.readouterr().err


def test_predict_prints_physical_values_as_json(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _image(tmp_path / "a.png", seed=12)
    assert _run("predict", source, "--json", "--model", checkpoint) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 1
    record = records[0]
    assert record["path"] == str(source) and record["level"] == "severe"
    assert len(record["v"]) == 33 and len(record["expert_weights"]) == 5
    assert {"blur1_sigma_x", "noise1_level", "noise1_type", "jpeg1_quality"} <= set(
        record["physical"]
    )
    assert _run("predict", source, "--model", checkpoint) == 0
    table = capsys.readouterr().out
    assert "blur1_sigma_x" in table and "expert_weights" in table


def test_no_model_anywhere_is_a_clear_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(MODEL_ROOT_ENV, str(tmp_path))
    monkeypatch.chdir(tmp_path)
    source = _image(tmp_path / "a.png", seed=13)
    assert _run("upscale", source, "-o", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "results/models/dasr/model.safetensors" in err and "--official" in err


def test_negative_tile_is_a_usage_error(checkpoint: Path, tmp_path: Path, capsys) -> None:
    image = _image(tmp_path / "in.png", seed=3)
    code = _run("upscale", image, "-o", tmp_path / "out", "--model", checkpoint, "--tile", "-3")
    assert code == 2
    assert "--tile" in capsys.readouterr().err
    assert not (tmp_path / "out" / "in_x4.png").exists()


def test_predict_keeps_the_order_given_on_the_command_line(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    inside = [_image(folder / name, seed=20 + i) for i, name in enumerate(("y.png", "x.png"))]
    last, first = _image(tmp_path / "a.png", seed=30), _image(tmp_path / "z.png", seed=31)
    assert _run("predict", first, folder, last, first, "--json", "--model", checkpoint) == 0
    paths = [record["path"] for record in json.loads(capsys.readouterr().out)]
    # as given; a folder's files in name order at its place; a repeated file once
    assert paths == [str(first), str(inside[1]), str(inside[0]), str(last)]


def test_predict_summarises_clamped_slots_in_one_line() -> None:
    from dasrlib.cli import _clamp_note

    tiny = {f"slot{i}": -1e-4 * (i + 1) for i in range(24)}
    assert _clamp_note(tiny) is None  # ordinary overshoot within the tolerance: no note
    note = _clamp_note({**tiny, "blur1_sigma_x": 1.3, "noise1_level": -0.05})
    assert note is not None and "\n" not in note
    assert note.startswith("note: 2 of the 33 slots")
    assert "blur1_sigma_x = 1.3" in note and "0.3 beyond" in note
    assert "slot0" not in note
