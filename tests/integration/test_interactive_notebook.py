"""Interactive SR (Sec. 4.6): the slider widgets driven from Python, Fig. 5, and the notebook."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dasrlib.data import load_photo
from dasrlib.degradation.edit import edit_vector
from dasrlib.experiments.fig5 import fig5_check, fig5_sweep, high_frequency_energy, write_fig5
from dasrlib.inference import upscale
from dasrlib.interactive import DegradationSliders, model_note_html
from dasrlib.models.checkpoints import save_weights
from dasrlib.models.dasr import DASR
from dasrlib.models.experts import EDSR
from dasrlib.models.loading import (
    MODEL_ROOT_ENV,
    ModelChoice,
    ModelKind,
    choose_model,
    newest_run_model,
)

REPO = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def model() -> DASR:
    model = DASR(
        num_feat=8, num_block=2, predictor_feat=8, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        model.experts.bank.mul_(20.0)
    return model.eval()


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return load_photo("chelsea", max_side=40).rgb


def test_slider_change_equals_upscale_with_the_same_vector(
    model: DASR, image: torch.Tensor
) -> None:
    sliders = DegradationSliders(model, image)
    assert torch.equal(sliders.vector(), sliders.v_predicted)
    first_png = bytes(sliders.images["edited"].value)
    assert first_png.startswith(PNG_SIGNATURE)
    assert bytes(sliders.images["auto"].value) == first_png

    sliders.sliders["blur1_sigma_x"].value = 2.75  # fires the observer, as a user's drag does
    sliders.sliders["jpeg1_quality"].value = 40.0
    edits = {"blur1_sigma_x": 2.75, "jpeg1_quality": 40.0}
    assert sliders.edits() == edits
    expected_v = edit_vector(sliders.v_predicted, edits)
    assert torch.equal(sliders.vector(), expected_v)
    expected = upscale(image, model, v=expected_v, precision="fp32")
    assert torch.equal(sliders.edited_sr, expected)
    assert (sliders.edited_sr - sliders.auto_sr).abs().max() > 1e-3
    assert bytes(sliders.images["edited"].value) != first_png
    assert "blur1_sigma_x" in sliders.status.value

    sliders.reset_button.click()
    assert sliders.edits() == {}
    assert torch.equal(sliders.edited_sr, sliders.auto_sr)
    assert torch.equal(sliders.auto_sr, upscale(image, model, precision="fp32"))


def test_noise_type_switch_gives_the_level_slider_that_type_range(
    model: DASR, image: torch.Tensor
) -> None:
    sliders = DegradationSliders(model, image)
    level, kind = sliders.sliders["noise1_level"], sliders.sliders["noise1_type"]
    ranges = {"gaussian": (1.0, 30.0), "poisson": (0.05, 3.0)}  # severe level
    other = "gaussian" if kind.value == "poisson" else "poisson"
    kind.value = other
    assert (level.min, level.max) == ranges[other]
    level.value = 0.9 * ranges[other][1]
    assert sliders.edits()["noise1_type"] == other
    assert sliders.edits()["noise1_level"] == pytest.approx(0.9 * ranges[other][1])
    edited_v = edit_vector(sliders.v_predicted, sliders.edits())
    expected = upscale(image, model, v=edited_v, precision="fp32")
    assert torch.equal(sliders.edited_sr, expected)
    third = "gaussian" if other == "poisson" else "poisson"
    kind.value = third
    assert (level.min, level.max) == ranges[third]
    table = sliders.prediction_table()
    assert {"blur1_sigma_x", "noise1_level"} <= set(table["parameter"])


def test_random_fallback_is_flagged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MODEL_ROOT_ENV, str(tmp_path))
    monkeypatch.chdir(tmp_path)
    choice = choose_model(allow_random=True)
    note = model_note_html(choice)
    assert choice.random and "RANDOM-WEIGHT" in note and "sliders do nothing" in note
    for wording in ("model_path", "--model", "notebooks/results"):  # wording for a page reader
        assert wording not in note
    assert write_fig5(choice, load_photo("coffee", max_side=24), tmp_path / "f.png") is None
    assert not (tmp_path / "f.png").exists()


def test_fig5_figure_is_written(model: DASR, tmp_path: Path) -> None:
    checkpoint = tmp_path / "tiny.safetensors"
    save_weights(model, checkpoint)
    choice = choose_model(checkpoint)
    assert not choice.random
    out = write_fig5(choice, load_photo("chelsea", max_side=32), tmp_path / "fig5.png")
    assert out == tmp_path / "fig5.png"
    assert out.read_bytes().startswith(PNG_SIGNATURE)


@pytest.mark.notebook
def test_notebook_runs_with_papermill(model: DASR, tmp_path: Path) -> None:
    papermill = pytest.importorskip("papermill")
    checkpoint = tmp_path / "tiny.safetensors"
    save_weights(model, checkpoint)
    executed = tmp_path / "interactive.out.ipynb"
    papermill.execute_notebook(
        str(REPO / "notebooks" / "interactive.ipynb"),
        str(executed),
        parameters={
            "model_path": str(checkpoint),
            "image_source": "astronaut",
            "max_side": 32,
            "fig5_out": str(tmp_path / "fig5.png"),
        },
        cwd=str(tmp_path),
        kernel_name="python3",
        progress_bar=False,
    )
    assert (tmp_path / "fig5.png").read_bytes().startswith(PNG_SIGNATURE)
    text = executed.read_text()
    assert "blur1_sigma_x" in text  # the prediction table was shown
    assert "RANDOM-WEIGHT" not in text


def test_newest_local_dasr_run_comes_before_random_weights(
    model: DASR, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MODEL_ROOT_ENV, str(tmp_path))
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    for name in ("older", "newer"):
        (runs / name).mkdir(parents=True)
        save_weights(model, runs / name / "model.safetensors")
    (runs / "edsr").mkdir()
    save_weights(EDSR(num_feat=8, num_block=1), runs / "edsr" / "model.safetensors")
    os.utime(runs / "older" / "model.safetensors", (1_000_000, 1_000_000))
    choice = choose_model(runs_dirs=[runs])
    assert not choice.random and choice.local_run
    assert choice.source == str(runs / "newer" / "model.safetensors")
    assert "newest local training run <code>newer</code>" in model_note_html(choice)
    assert newest_run_model(tmp_path / "nothing") is None


def test_out_of_range_predictions_are_clamped_and_said_so(model: DASR, image: torch.Tensor) -> None:
    sliders = DegradationSliders(model, image)
    for name, slider in sliders.sliders.items():
        if name == "noise1_type":
            continue
        assert slider.min <= slider.value <= slider.max
        low, high = sliders._range(name, "poisson" if sliders._initial_type == "poisson" else "")
        assert (slider.min, slider.max) == (low, high), name  # the physical range, not moved
        predicted = float(sliders.predicted[name])
        outside = not low <= predicted <= high
        if name != "noise1_level" or sliders._initial_type != "none":
            assert ("lies" in sliders.notes[name].value) == outside, name
    assert sliders.edits() == {}
    assert torch.equal(sliders.vector(), sliders.v_predicted)


def test_noise_level_is_disabled_for_type_none_and_warnings_reach_the_widget(
    model: DASR, image: torch.Tensor
) -> None:
    sliders = DegradationSliders(model, image)
    kind, level = sliders.sliders["noise1_type"], sliders.sliders["noise1_level"]
    kind.value = "none"
    assert level.disabled and "disabled" in sliders.notes["noise1_level"].value
    assert "noise1_level" not in sliders.edits()
    kind.value = "gaussian"
    assert not level.disabled and (level.min, level.max) == (1.0, 30.0)
    assert sliders.edits()["noise1_level"] == level.value
    sliders.messages.value = ""
    with_warning = {"blur1_sigma_x": 9.0}  # far outside the severe range: the library warns
    sliders.vector = lambda: edit_vector(sliders.v_predicted, with_warning)  # type: ignore
    sliders.on_change()
    assert "never saw" in sliders.messages.value


def test_panels_are_shown_at_native_pixel_size(model: DASR, image: torch.Tensor) -> None:
    sliders = DegradationSliders(model, image)
    height, width = sliders.auto_sr.shape[-2:]
    png = Image.open(io.BytesIO(bytes(sliders.images["auto"].value)))
    assert png.size == (width, height)
    assert sliders.images["auto"].layout.width == f"{width}px"
    zoom = Image.open(io.BytesIO(bytes(sliders.zooms["auto"].value)))
    side = sliders.scale * sliders.crop[2]
    assert zoom.size[0] % side == 0 and zoom.size[0] // side >= 1


class _Sharpen(nn.Module):
    """x4 bicubic plus ``strength`` times its own high-pass (negative: a blur)."""

    def __init__(self, strength: float) -> None:
        super().__init__()
        self.strength = strength

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
        smooth = F.avg_pool2d(up, 3, stride=1, padding=1, count_include_pad=False)
        return up + self.strength * (up - smooth)


class _KnownResponse(nn.Module):
    """A stand-in DASR whose response to v is known: it sharpens more as the blur sigma slot
    rises and less as the noise level slot rises (``sign=-1``: the opposite)."""

    scale = 4

    def __init__(self, sign: float) -> None:
        super().__init__()
        self.sign = sign

    def predict_degradation(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 33), 0.5)

    def expert_weights(self, v: torch.Tensor) -> torch.Tensor:
        return v

    def fuse(self, a: torch.Tensor) -> nn.Module:
        blur_x, noise = 1, 18  # slots of blur1_sigma_x and noise1_level
        return _Sharpen(self.sign * 2.0 * (float(a[blur_x]) - float(a[noise])))


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_fig5_sweep_measures_the_direction_of_a_known_response(
    sign: float, image: torch.Tensor
) -> None:
    model = _KnownResponse(sign)
    blur = fig5_sweep(model, image, setting="blur", steps=5)
    noise = fig5_sweep(model, image, setting="noise", steps=5)
    assert list(blur["value"]) == pytest.approx([0.2, 0.9, 1.6, 2.3, 3.0])
    assert blur.attrs["rank_correlation"] == pytest.approx(sign)
    assert noise.attrs["rank_correlation"] == pytest.approx(-sign)
    assert (blur["hf_energy"].diff().dropna() * sign > 0).all()
    energy = blur["hf_energy"]
    assert blur.attrs["change"] == pytest.approx(energy.iloc[-1] / energy.iloc[0] - 1.0)
    assert blur.attrs["change"] * sign > 0 and noise.attrs["change"] * sign < 0
    sharpened = high_frequency_energy(upscale(image, model, v=torch.full((33,), 0.5)))
    assert blur["relative"].iloc[0] == pytest.approx(blur["hf_energy"].iloc[0] / sharpened)


def test_fig5_check_writes_the_sweep_figure(image: torch.Tensor, tmp_path: Path) -> None:
    choice = ModelChoice(_KnownResponse(1.0), "known response", ModelKind.GIVEN)
    loaded = load_photo("chelsea", max_side=40)
    summary = fig5_check(choice, loaded, tmp_path / "sweep.png", steps=3)
    assert list(summary["setting"]) == ["blur", "noise"]
    assert summary["model does"].str.startswith(("sharper", "smoother")).all()
    assert summary["model does"].iloc[0].startswith("sharper")
    assert summary["model does"].iloc[1].startswith("smoother")
    assert (tmp_path / "sweep.png").read_bytes().startswith(PNG_SIGNATURE)
    flat = torch.full((3, 16, 16), 0.5)
    assert high_frequency_energy(flat) == 0.0
    with pytest.raises(ValueError, match="setting"):
        fig5_sweep(choice.model, image, setting="jpeg")
