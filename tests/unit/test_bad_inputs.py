"""Bad or unusual inputs at the command lines: one line naming the file and the problem, exit 2
for usage errors and 1 for failed inputs, the other inputs still processed, nothing lost."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dasrlib import testsets
from dasrlib.cli import main as dasr
from dasrlib.io import UPSCALE_OUTPUT_TEXT, read_image, write_png
from dasrlib.models.checkpoints import save_weights
from dasrlib.models.dasr import DASR
from dasrlib.train.cli import main as train_main


def _dasr_model(seed: int = 0) -> DASR:
    return DASR(
        num_feat=8, num_block=2, predictor_feat=8, generator=torch.Generator().manual_seed(seed)
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_weights(_dasr_model(), path)
    return path


def _image(path: Path, *, seed: int, size: tuple[int, int] = (14, 18)) -> Path:
    write_png(path, torch.rand(3, *size, generator=torch.Generator().manual_seed(seed)))
    return path


def _two_images(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    _image(folder / "a.png", seed=1)
    _image(folder / "b.png", seed=2)
    return folder


def _errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if "error" in line]


def _no_traceback(text: str) -> None:
    assert "Traceback" not in text, text


# --------------------------------------------------------------------------------------------
# Model files
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "empty", "random", "nan"])
def test_unusable_model_file_is_a_usage_error_naming_it(
    damage: str, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / f"{damage}.safetensors"
    if damage == "truncated":
        data = checkpoint.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        bad.write_bytes(b"")
    elif damage == "random":
        bad.write_bytes(np.random.default_rng(0).bytes(4096))
    else:
        model = _dasr_model()
        with torch.no_grad():
            model.experts.bank[0, 0] = math.nan
        save_weights(model, bad)
    inputs = _two_images(tmp_path / "in")
    status = dasr(["upscale", str(inputs), "-o", str(tmp_path / "out"), "--model", str(bad)])
    err = capsys.readouterr().err
    assert status == 2
    (line,) = _errors(err)
    assert str(bad) in line
    expected = {"truncated": "truncated", "empty": "empty", "random": "corrupt", "nan": "NaN"}
    assert expected[damage] in line
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------
# Output paths
# --------------------------------------------------------------------------------------------


def test_overwrite_never_replaces_a_file_the_run_did_not_write(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    same = tmp_path / "same"
    same.mkdir()
    good_png = _image(same / "good.png", seed=3)
    before = good_png.read_bytes()
    pixels = (np.random.default_rng(4).random((14, 18, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(same / "good.jpg")
    argv = ["upscale", str(same / "good.jpg"), "-o", str(same), "--suffix", ""]
    status = dasr([*argv, "--overwrite", "--model", str(checkpoint)])
    err = capsys.readouterr().err
    assert status == 1
    assert good_png.read_bytes() == before
    (line,) = _errors(err)
    assert "good.png" in line and "not written by dasr upscale" in line


def test_second_run_into_the_input_folder_does_not_upscale_earlier_outputs(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _two_images(tmp_path / "photos")
    argv = ["upscale", str(folder), "-o", str(folder), "--model", str(checkpoint)]
    assert dasr(argv) == 0
    assert dasr([*argv, "--overwrite"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "a_x4.png", "b.png", "b_x4.png"]
    assert "left out 2 earlier output(s)" in capsys.readouterr().err
    # Named on its own, an earlier output is taken.
    assert dasr(["upscale", str(folder / "a_x4.png"), "-o", str(tmp_path / "again"),
                 "--model", str(checkpoint)]) == 0  # fmt: skip
    assert read_image(tmp_path / "again" / "a_x4_x4.png").rgb.shape == (3, 224, 288)


def test_an_earlier_output_is_replaced_with_overwrite(checkpoint: Path, tmp_path: Path) -> None:
    source = _image(tmp_path / "a.png", seed=5)
    out = tmp_path / "out"
    write_png(out / "a_x4.png", torch.zeros(3, 4, 4), text=UPSCALE_OUTPUT_TEXT)
    argv = ["upscale", str(source), "-o", str(out), "--model", str(checkpoint)]
    assert dasr(argv) == 1  # exists: needs --overwrite
    assert dasr([*argv, "--overwrite"]) == 0
    assert read_image(out / "a_x4.png").rgb.shape == (3, 56, 72)


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("edit", ["blur_sigma=nan", "noise_level=inf", "jpeg_quality=-inf"])
def test_non_finite_set_value_is_a_usage_error(
    edit: str, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = _two_images(tmp_path / "in")
    argv = ["upscale", str(inputs), "-o", str(tmp_path / "out"), "--model", str(checkpoint)]
    status = dasr([*argv, "--set", edit])
    err = capsys.readouterr().err
    assert status == 2
    (line,) = _errors(err)
    assert edit in line and "finite" in line
    assert not (tmp_path / "out").exists()


def test_an_image_that_fails_in_the_network_fails_alone(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = _two_images(tmp_path / "in")
    # A DASR whose predictor gives NaN for the first image only: that image fails, b is written.
    model = _dasr_model()
    path = tmp_path / "model.safetensors"
    save_weights(model, path)
    calls = {"n": 0}
    real = DASR.predict_degradation

    def predict(self: DASR, lr: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        v = real(self, lr)
        return torch.full_like(v, math.inf) if calls["n"] == 1 else v

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DASR, "predict_degradation", predict)
        # fp32: a reduced precision would recompute the non-finite output in float32 first.
        argv = ["upscale", str(inputs), "-o", str(tmp_path / "out"), "--model", str(path)]
        status = dasr([*argv, "--precision", "fp32"])
    err = capsys.readouterr().err
    _no_traceback(err)
    assert status == 1
    (line,) = _errors(err)
    assert "a.png" in line and "NaN/Inf" in line
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b_x4.png"]


def test_animated_gif_fails_that_image_only(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = _two_images(tmp_path / "in")
    rng = np.random.default_rng(0)
    frames = [Image.fromarray((rng.random((14, 18, 3)) * 255).astype(np.uint8)) for _ in range(3)]
    frames[0].save(inputs / "anim.gif", save_all=True, append_images=frames[1:])
    gif = str(inputs / "anim.gif")  # named: folders take only the still-image endings
    status = dasr(
        ["upscale", gif, str(inputs), "-o", str(tmp_path / "out"), "--model", str(checkpoint)]
    )
    err = capsys.readouterr().err
    assert status == 1
    (line,) = _errors(err)
    assert "anim.gif" in line and "3 frames" in line
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_x4.png", "b_x4.png"]


def test_missing_cuda_is_a_usage_error(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    inputs = _two_images(tmp_path / "in")
    argv = ["upscale", str(inputs), "-o", str(tmp_path / "out"), "--model", str(checkpoint)]
    assert dasr([*argv, "--device", "cuda"]) == 2
    (line,) = _errors(capsys.readouterr().err)
    assert "'cuda'" in line and "CUDA is not available" in line
    assert dasr([*argv, "--device", "tpu9"]) == 2
    assert "'tpu9'" in capsys.readouterr().err


def test_predict_reports_values_inside_their_physical_ranges(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _image(tmp_path / "a.png", seed=6)
    real = DASR.predict_degradation

    def predict(self: DASR, lr: torch.Tensor) -> torch.Tensor:
        v = real(self, lr)
        v[:, 3] = -0.25  # blur1_rotation below its range
        v[:, 19] = -0.5  # noise1_gray, a probability
        return v

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DASR, "predict_degradation", predict)
        status = dasr(["predict", str(source), "--json", "--model", str(checkpoint)])
        assert status == 0
        (record,) = json.loads(capsys.readouterr().out)
        assert dasr(["predict", str(source), "--model", str(checkpoint)]) == 0
        table = capsys.readouterr().out
    physical = record["physical"]
    assert -math.pi - 1e-9 <= physical["blur1_rotation"] <= math.pi + 1e-9
    assert 0.0 <= physical["noise1_gray"] <= 1.0
    assert record["clamped"]["blur1_rotation"] == -0.25
    assert record["clamped"]["noise1_gray"] == -0.5
    assert all(not 0.0 <= record["v"][i] <= 1.0 for i in (3, 19))
    assert record["v"][3] == -0.25  # the raw prediction is still reported
    assert "clamped" in table and "blur1_rotation" in table


# --------------------------------------------------------------------------------------------
# Test sets
# --------------------------------------------------------------------------------------------


def _hr_folder(folder: Path, n: int = 4) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        _image(folder / f"{i}.png", seed=10 + i, size=(32, 32))
    return folder


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_failed_rebuild_leaves_the_old_set_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hr = _hr_folder(tmp_path / "hr")
    out = tmp_path / "sets"
    build = ["build", "--hr", str(hr), "--out", str(out), "--levels", "bicubic,weak"]
    assert testsets.main(build) == 0
    before = _tree(out)
    (hr / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n corrupt")
    capsys.readouterr()
    assert testsets.main([*build[:-1], "severe", "--seed", "3"]) == 1
    err = capsys.readouterr().err
    _no_traceback(err)
    (line,) = _errors(err)
    assert "2.png" in line
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hr", "sets"]  # no work folder left


def test_rebuild_swaps_the_whole_set_and_keeps_other_files(tmp_path: Path) -> None:
    hr = _hr_folder(tmp_path / "hr")
    out = tmp_path / "sets"
    testsets.build_testsets(hr, out, levels=["bicubic", "weak"])
    (out / "notes.txt").write_text("mine")
    testsets.build_testsets(hr, out, levels=["severe"], max_images=2)
    assert sorted(p.name for p in out.iterdir()) == ["hr", "manifest.json", "notes.txt", "severe"]
    assert len(list((out / "hr").iterdir())) == 2
    assert len(list(testsets.load_testset(out, "severe"))) == 2


@pytest.mark.parametrize("value", ["-1", "0", "two"])
def test_max_images_below_one_is_a_usage_error(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hr = _hr_folder(tmp_path / "hr")
    argv = ["build", "--hr", str(hr), "--out", str(tmp_path / "sets"), "--max-images", value]
    with pytest.raises(SystemExit) as exit_info:
        testsets.main(argv)
    assert exit_info.value.code == 2
    assert "--max-images" in capsys.readouterr().err
    assert not (tmp_path / "sets").exists()
    with pytest.raises(ValueError, match="max_images"):
        testsets.build_testsets(hr, tmp_path / "sets", max_images=0)


def test_unknown_level_lists_the_valid_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hr = _hr_folder(tmp_path / "hr")
    argv = ["build", "--hr", str(hr), "--out", str(tmp_path / "sets"), "--levels", "weak,mild"]
    assert testsets.main(argv) == 2
    (line,) = _errors(capsys.readouterr().err)
    assert "'mild'" in line and "bicubic, weak, standard, severe" in line


def test_a_killed_build_leaves_nothing_the_next_build_keeps(tmp_path: Path) -> None:
    hr = _hr_folder(tmp_path / "hr", n=2)
    out = tmp_path / "sets"
    # A build process killed mid-way: its work folder (named with its process id) remains.
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid = int(child.stdout)
    leftover = tmp_path / f".sets.building-{dead_pid}"
    (leftover / "bicubic").mkdir(parents=True)
    (leftover / "bicubic" / "0.png").write_bytes(b"")
    testsets.build_testsets(hr, out, levels=["bicubic"])
    assert not leftover.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hr", "sets"]


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

TINY_PARAMS = dict(
    num_feat=4,
    num_block=1,
    batch_size=2,
    patch_size=32,
    queue_size=4,
    data_block_iters=2,
    val_images=1,
    val_crop=32,
    val_levels=["bicubic"],
    progress=False,
    iterations=1,
    stage="pretrain",
    device="cpu",
    log_every=1,
    val_every=1,
    checkpoint_every=1,
)


def _params(tmp_path: Path, **changes: object) -> Path:
    import yaml

    path = tmp_path / "params.yaml"
    values = {**TINY_PARAMS, "out_dir": str(tmp_path / "runs"), **changes}
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.mark.parametrize(
    ("setting", "needle"),
    [
        ("lr=-1", "lr"),
        ("lr=.nan", "finite"),
        ("betas=[0.9, 1.5]", "betas"),
        ("level_probs=[0, 0, 0]", "level_probs"),
        ("val_levels=[mild]", "valid levels: bicubic, weak, standard, severe"),
        ("expert_init_noise=-0.1", "expert_init_noise"),
    ],
)
def test_training_value_out_of_range_is_a_usage_error(
    setting: str, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = train_main(["--params", str(_params(tmp_path)), "--set", setting, "--print-config"])
    err = capsys.readouterr().err
    assert status == 2
    (line,) = _errors(err)
    assert needle in line


@pytest.mark.parametrize("problem", ["missing", "malformed", "a list", "a folder"])
def test_bad_params_file_is_a_usage_error_naming_it(
    problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "params.yaml"
    if problem == "malformed":
        path.write_text("lr: [1,\n")
    elif problem == "a list":
        path.write_text("- 1\n- 2\n")
    elif problem == "a folder":
        path.mkdir()
    assert train_main(["--params", str(path)]) == 2
    err = capsys.readouterr().err
    _no_traceback(err)
    (line,) = _errors(err)
    assert str(path) in line


def test_training_without_cuda_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert train_main(["--params", str(_params(tmp_path, device="cuda"))]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


@pytest.mark.parametrize("root", ["missing", "empty", "only corrupt", "too small"])
def test_unusable_data_root_fails_with_one_line(
    root: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "data"
    if root != "missing":
        folder.mkdir()
    if root == "only corrupt":
        (folder / "a.png").write_bytes(b"junk")
        (folder / "b.jpg").write_bytes(b"")
    if root == "too small":
        for i in range(3):
            _image(folder / f"{i}.png", seed=i, size=(20, 24))
    status = train_main(["--params", str(_params(tmp_path, data_root=str(folder)))])
    err = capsys.readouterr().err
    _no_traceback(err)
    assert status == 1
    (line,) = _errors(err)
    expected = {
        "missing": f"{str(folder)!r} does not exist",
        "empty": f"{str(folder)!r} holds no images",
        "only corrupt": "a.png",
        "too small": "no image is at least 32x32 pixels",
    }
    assert expected[root] in line


def test_one_corrupt_training_image_is_skipped_by_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(3):
        _image(folder / f"{i}.png", seed=i, size=(40, 40))
    (folder / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with caplog.at_level("WARNING", logger="dasrlib.data"):
        status = train_main(["--params", str(_params(tmp_path, data_root=str(folder)))])
    assert status == 0
    assert any("bad.png" in r.getMessage() for r in caplog.records)
    run = json.loads((tmp_path / "runs" / "dasr" / "run.json").read_text())
    assert run["status"] == "finished"


def test_stale_temporaries_of_a_killed_run_are_removed_at_start(tmp_path: Path) -> None:
    params = _params(tmp_path)
    assert train_main(["--params", str(params)]) == 0
    run_dir = tmp_path / "runs" / "dasr"
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    dead = int(child.stdout)
    stale = [
        run_dir / f".metrics.csv.{dead}.atomic-x1.tmp",
        run_dir / f".model.safetensors.{dead}.atomic-x2.tmp",
    ]
    for path in stale:
        path.write_bytes(b"")
    alive = run_dir / f".val.csv.{os.getpid()}.atomic-x3.tmp"  # a live writer's file stays
    alive.write_bytes(b"")
    assert train_main(["--params", str(params), "--set", "iterations=2"]) == 0
    assert not any(path.exists() for path in stale)
    assert alive.exists()


def test_upscale_removes_temporaries_a_killed_run_left(checkpoint: Path, tmp_path: Path) -> None:
    source = _image(tmp_path / "a.png", seed=7)
    out = tmp_path / "out"
    out.mkdir()
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    stale = out / f".a_x4.png.{int(child.stdout)}.atomic-k1.tmp"
    stale.write_bytes(b"")
    assert dasr(["upscale", str(source), "-o", str(out), "--model", str(checkpoint)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_x4.png"]


@pytest.mark.parametrize("option", [["--suffix", "/../../x"], ["-o", "a.png"]])
def test_output_options_that_would_write_elsewhere_are_usage_errors(
    option: list[str], checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _image(tmp_path / "a.png", seed=8)
    before = source.read_bytes()
    output = ["-o", str(tmp_path / "out")] if option[0] == "--suffix" else ["-o", str(source)]
    extra = option if option[0] == "--suffix" else []
    assert dasr(["upscale", str(source), *output, *extra, "--model", str(checkpoint)]) == 2
    (line,) = _errors(capsys.readouterr().err)
    assert ("--suffix" in line) if extra else (str(source) in line and "not a folder" in line)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
    assert source.read_bytes() == before


def test_export_bad_inputs(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dasrlib.export import main as export

    source = _image(tmp_path / "a.png", seed=9)
    with pytest.raises(SystemExit) as info:  # --out is a file: usage
        export(["--model", str(checkpoint), "--out", str(source)])
    assert info.value.code == 2 and "not a folder" in capsys.readouterr().err
    rng = np.random.default_rng(1)
    frames = [Image.fromarray((rng.random((14, 18, 3)) * 255).astype(np.uint8)) for _ in range(2)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    out = tmp_path / "onnx"
    argv = ["--model", str(checkpoint), "--out", str(out), "--image", str(tmp_path / "anim.gif")]
    assert export(argv) == 1  # the input image failed
    (line,) = _errors(capsys.readouterr().err)
    assert "anim.gif" in line and "2 frames" in line
    argv = ["--model", str(checkpoint), "--out", str(out), "--image", str(source)]
    assert export([*argv, "--set", "noise_level=nan"]) == 2
    assert "noise_level=nan" in capsys.readouterr().err
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# Hostile inputs and faults: concurrent writers, overlapping folders, API pixels, config files,
# messages that point the right way, file permissions
# --------------------------------------------------------------------------------------------


def _dead_pid() -> int:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    return int(child.stdout)


def test_an_output_another_process_is_writing_is_refused_and_kept(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = _two_images(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    claim = out / ".a_x4.png.claim"  # what a concurrent dasr upscale of a.png holds
    claim.write_text(f"{os.getppid()}\n")
    for overwrite in ([], ["--overwrite"]):
        argv = ["upscale", str(inputs), "-o", str(out), "--model", str(checkpoint), *overwrite]
        assert dasr(argv) == 1
        err = capsys.readouterr().err
        _no_traceback(err)
        (line,) = _errors(err)
        assert (
            "a_x4.png" in line and f"being written by another process (pid {os.getppid()})" in line
        )
    assert sorted(p.name for p in out.iterdir()) == [".a_x4.png.claim", "b_x4.png"]
    assert claim.read_text() == f"{os.getppid()}\n"  # the other writer's claim is not touched


def test_a_claim_left_by_a_killed_upscale_is_taken_over(checkpoint: Path, tmp_path: Path) -> None:
    inputs = _two_images(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".a_x4.png.claim").write_text(f"{_dead_pid()}\n")
    assert dasr(["upscale", str(inputs), "-o", str(out), "--model", str(checkpoint)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_x4.png", "b_x4.png"]


def test_an_output_that_appears_while_writing_is_not_replaced_without_overwrite(
    tmp_path: Path,
) -> None:
    from dasrlib.io import OutputExistsError, atomic_write

    target = tmp_path / "a_x4.png"
    with pytest.raises(OutputExistsError, match="appeared while it was being written"):
        with atomic_write(target, overwrite=False) as tmp:
            tmp.write_bytes(b"mine")
            target.write_bytes(b"the other writer's")  # a concurrent writer finished first
    assert target.read_bytes() == b"the other writer's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_x4.png"]  # no temporary left
    with pytest.raises(OutputExistsError):
        write_png(target, torch.zeros(3, 4, 4), overwrite=False)
    assert target.read_bytes() == b"the other writer's"


def test_a_second_training_process_on_one_run_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dasrlib.train.state import run_folder_lock

    params = _params(tmp_path)
    run_dir = tmp_path / "runs" / "dasr"
    with run_folder_lock(run_dir):  # another training process holds the folder
        assert train_main(["--params", str(params)]) == 1
        err = capsys.readouterr().err
        _no_traceback(err)
        (line,) = _errors(err)
        assert (
            str(run_dir) in line
            and f"in use by another training process (pid {os.getpid()})" in line
        )
    assert not (run_dir / "checkpoints").exists()  # the second process wrote nothing
    pid = os.fork()
    if pid == 0:  # a process that crashes while holding the lock (no cleanup runs)
        with run_folder_lock(run_dir):
            os._exit(3)
    assert os.waitpid(pid, 0)[1] >> 8 == 3
    with run_folder_lock(run_dir):  # the operating system released it
        pass


@pytest.mark.parametrize("where", ["inside", "equal", "containing"])
def test_testset_output_overlapping_the_hr_folder_is_refused(
    where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if where == "containing":
        hr = _hr_folder(tmp_path / "data" / "photos")
        out = tmp_path / "data"
    else:
        hr = _hr_folder(tmp_path / "photos")
        out = hr / "sets" if where == "inside" else hr
    before = _tree(tmp_path)
    assert testsets.main(["build", "--hr", str(hr), "--out", str(out), "--levels", "bicubic"]) == 1
    err = capsys.readouterr().err
    _no_traceback(err)
    (line,) = _errors(err)
    assert str(out) in line and str(hr) in line and "HR folder" in line
    assert _tree(tmp_path) == before
    assert sorted(p.name for p in tmp_path.rglob(".*")) == []


def test_api_pixels_outside_zero_one_are_refused_naming_the_range() -> None:
    from dasrlib.inference import predict_vector, upscale

    model = _dasr_model()
    image = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"pixel values in \[0, 255\]; expected \[0, 1\]"):
        upscale((image * 255).round(), model)
    with pytest.raises(ValueError, match=r"expected \[0, 1\]"):
        predict_vector(image * 255, model)
    with pytest.raises(ValueError, match=r"expected \[0, 1\]"):
        upscale(image - 0.5, model)
    tiny = (image * 1.02 - 0.01).clamp(-0.01, 1.01)  # resampling overshoot is accepted
    assert upscale(tiny, model).shape == (3, 48, 48)


@pytest.mark.parametrize("shape", [(3, 0, 0), (3, 0, 8), (1, 3, 8, 0)])
def test_an_empty_image_is_a_clear_error(shape: tuple[int, ...]) -> None:
    from dasrlib.inference import predict_vector, upscale

    model = _dasr_model()
    for call in (upscale, predict_vector):
        with pytest.raises(ValueError, match="is empty"):
            call(torch.zeros(shape), model)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_input_pixels_blame_the_input(bad: float) -> None:
    from dasrlib.inference import upscale

    image = torch.rand(3, 12, 12)
    image[1, 3, 4] = bad
    with pytest.raises(ValueError, match="1 NaN or Inf pixel value.*input image is invalid"):
        upscale(image, _dasr_model())


@pytest.mark.parametrize("length", [32, 34, 0])
def test_a_degradation_vector_of_the_wrong_length_names_the_33_slots(length: int) -> None:
    from dasrlib.degradation.edit import edit_vector
    from dasrlib.inference import upscale

    image = torch.rand(3, 12, 12)
    with pytest.raises(ValueError, match=rf"33 slots.*got shape \({length},\)"):
        upscale(image, _dasr_model(), v=torch.full((length,), 0.5))
    with pytest.raises(ValueError, match="33 slots"):
        edit_vector(torch.full((length,), 0.5), {"blur_sigma": 1.0})


def test_resuming_with_a_changed_field_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = _params(tmp_path)
    assert train_main(["--params", str(params)]) == 0
    checkpoint_before = tmp_path / "runs" / "dasr" / "checkpoints" / "latest.safetensors"
    kept = checkpoint_before.read_bytes()
    capsys.readouterr()
    assert train_main(["--params", str(params), "--set", "lr=0.001", "--set", "iterations=2"]) == 2
    err = capsys.readouterr().err
    _no_traceback(err)
    (line,) = _errors(err)
    assert "cannot resume" in line and "lr" in line
    assert checkpoint_before.read_bytes() == kept


def _params_with_huge(tmp_path: Path, key: str, letter: str) -> Path:
    """`_params` with `key` set to a 10 MB plain scalar (written as text: dumping it is slow)."""
    import yaml

    values = {**TINY_PARAMS, "out_dir": str(tmp_path / "runs")}
    values.pop(key, None)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(values) + f"{key}: {letter * 10_000_000}\n")
    return path


@pytest.mark.parametrize("key", ["name", "data_root", "out_dir", "init_from"])
def test_a_huge_string_value_is_quoted_by_a_short_prefix(
    key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train_main(["--params", str(_params_with_huge(tmp_path, key, "x"))]) == 2
    err = capsys.readouterr().err
    _no_traceback(err)
    (line,) = _errors(err)
    assert key in line and len(err) < 600, err[:600]
    assert "x" * 80 + "'..." in line
    assert not (tmp_path / "runs").exists()


def test_a_huge_wrongly_typed_value_is_quoted_by_a_short_prefix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train_main(["--params", str(_params_with_huge(tmp_path, "lr", "y"))]) == 2
    err = capsys.readouterr().err
    (line,) = _errors(err)
    assert "lr" in line and len(err) < 600


def test_a_yaml_alias_bomb_is_refused_fast(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join([*lines, "name: *a9", ""]))  # 9**10 = 3.5e9 strings expanded
    started = time.monotonic()
    assert train_main(["--params", str(path)]) == 2
    assert time.monotonic() - started < 5.0
    err = capsys.readouterr().err
    _no_traceback(err)
    (line,) = _errors(err)
    assert str(path) in line and "alias" in line and len(err) < 400
    flow = ", ".join(
        ["&b0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
        + [f"&b{i} [{', '.join([f'*b{i - 1}'] * 9)}]" for i in range(1, 10)]
    )
    started = time.monotonic()  # the same bomb as a --set value
    assert train_main(["--params", str(_params(tmp_path)), "--set", f"name=[{flow}]"]) == 2
    assert time.monotonic() - started < 5.0
    (line,) = _errors(capsys.readouterr().err)
    assert "alias" in line and len(line) < 400


def test_an_unreadable_checkpoint_says_permission_denied(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    import builtins
    import errno

    locked = tmp_path / "locked.safetensors"
    locked.write_bytes(checkpoint.read_bytes())
    real_open = builtins.open

    def denying_open(file: object, *args: object, **kwargs: object) -> object:
        if str(file) == str(locked):  # what a file mode 000 does to a user who is not root
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", denying_open)
    inputs = _two_images(tmp_path / "in")
    assert dasr(["upscale", str(inputs), "-o", str(tmp_path / "out"), "--model", str(locked)]) == 2
    err = capsys.readouterr().err
    (line,) = _errors(err)
    assert str(locked) in line and "permission denied" in line
    assert "No such file" not in line and "corrupt" not in line


def test_an_existing_folder_given_as_model_is_not_reported_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "runs" / "demo"
    run.mkdir(parents=True)
    save_weights(_dasr_model(), run / "model.safetensors")
    inputs = _two_images(tmp_path / "in")
    assert dasr(["upscale", str(inputs), "-o", str(tmp_path / "out"), "--model", str(run)]) == 2
    (line,) = _errors(capsys.readouterr().err)
    assert str(run) in line and "is a folder" in line and "model.safetensors" in line
    assert "not found" not in line
    link = tmp_path / "dangling.safetensors"
    link.symlink_to(tmp_path / "gone.safetensors")
    assert dasr(["upscale", str(inputs), "-o", str(tmp_path / "out"), "--model", str(link)]) == 2
    (line,) = _errors(capsys.readouterr().err)
    assert "gone.safetensors" in line and "does not exist" in line


def test_a_read_only_output_folder_fails_before_inference(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    import errno
    import tempfile

    import dasrlib.cli

    out = tmp_path / "out"
    out.mkdir()
    real_mkstemp = tempfile.mkstemp

    def read_only(*args: object, **kwargs: object) -> tuple[int, str]:
        if Path(str(kwargs.get("dir"))) == out:  # what a read-only folder does (root ignores 0555)
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_mkstemp(*args, **kwargs)

    def no_model(*args: object) -> None:
        raise AssertionError("the model was loaded before the output folder was checked")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    monkeypatch.setattr(dasrlib.cli, "_load", no_model)
    inputs = _two_images(tmp_path / "in")
    assert dasr(["upscale", str(inputs), "-o", str(out), "--model", str(checkpoint)]) == 2
    err = capsys.readouterr().err
    _no_traceback(err)
    (line,) = _errors(err)
    assert str(out) in line and "permission denied" in line and ".tmp" not in line
    assert list(out.iterdir()) == []


def test_untiled_upscale_beyond_memory_fails_early_suggesting_tiles(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    import dasrlib.tiling
    from dasrlib.tiling import TileMemoryError, estimate_tile_bytes

    # The case: 4000x3000 untiled with the 64-channel expert needs far more than 6 GB.
    assert estimate_tile_bytes(3000, 4000, scale=4, feature_channels=64) > 90e9
    monkeypatch.setattr(dasrlib.tiling, "available_memory_bytes", lambda device: 100_000_000)
    source = _image(tmp_path / "big.png", seed=3, size=(300, 400))
    out = tmp_path / "out"
    calls = []
    monkeypatch.setattr(DASR, "fuse", lambda self, a: calls.append(a))  # inference never starts
    assert (
        dasr(["upscale", str(source), "-o", str(out), "--model", str(checkpoint), "--tile", "0"])
        == 1
    )
    err = capsys.readouterr().err
    _no_traceback(err)
    (line,) = _errors(err)
    assert "big.png" in line and "400x300" in line and "GB" in line and "--tile" in line
    assert line.count("big.png") == 1  # the image is named once
    assert calls == [] and not out.exists()  # nothing written: no empty output folder either
    with pytest.raises(TileMemoryError, match="tile="):
        from dasrlib.inference import upscale

        upscale(torch.rand(3, 300, 400), _dasr_model())
    monkeypatch.undo()
    assert (
        dasr(["upscale", str(source), "-o", str(out), "--model", str(checkpoint), "--tile", "64"])
        == 0
    )


def test_every_atomic_writer_leaves_the_permissions_of_a_plain_open(tmp_path: Path) -> None:
    from dasrlib.io import atomic_write_text
    from dasrlib.train.state import write_checkpoint

    previous = os.umask(0o022)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        expected = plain.stat().st_mode & 0o777
        assert expected == 0o644
        written = [
            save_weights(_dasr_model(), tmp_path / "model.safetensors"),
            write_checkpoint(tmp_path / "ckpt", {"w": torch.zeros(2)}, {"iteration": 1}),
        ]
        atomic_write_text(tmp_path / "a.json", "{}")
        write_png(tmp_path / "a.png", torch.zeros(3, 4, 4))
        write_png(tmp_path / "b.png", torch.zeros(3, 4, 4), bit_depth=16)
        written += [tmp_path / "a.json", tmp_path / "a.png", tmp_path / "b.png"]
        modes = {p.name: oct(p.stat().st_mode & 0o777) for p in written}
        assert modes == {p.name: oct(expected) for p in written}
    finally:
        os.umask(previous)


def test_unreadable_images_and_parameter_files_say_permission_denied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import errno

    from dasrlib.io import ImageReadError

    image = _image(tmp_path / "a.png", seed=4)
    params = _params(tmp_path)
    real_read_bytes, real_read_text = Path.read_bytes, Path.read_text

    def deny(path: Path) -> None:
        if path in (image, params):  # what mode 000 does to a user who is not root
            raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(Path, "read_bytes", lambda self: deny(self) or real_read_bytes(self))
    monkeypatch.setattr(
        Path, "read_text", lambda self, *a, **k: deny(self) or real_read_text(self, *a, **k)
    )
    with pytest.raises(ImageReadError, match="a.png.*permission denied"):
        read_image(image)
    assert train_main(["--params", str(params)]) == 2
    (line,) = _errors(capsys.readouterr().err)
    assert str(params) in line and "permission denied" in line


def test_a_huge_set_value_is_quoted_by_a_short_prefix(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = _two_images(tmp_path / "in")
    for item in ("blur_sigma=" + "9" * 1_000_000, "x" * 1_000_000 + "=1"):
        argv = ["upscale", str(inputs), "-o", str(tmp_path / "out"), "--model", str(checkpoint)]
        assert dasr([*argv, "--set", item]) == 2
        err = capsys.readouterr().err
        (line,) = _errors(err)
        assert "..." in line and len(err) < 1200
