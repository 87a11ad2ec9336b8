"""Interactive SR (Sec. 4.6): the slider widgets driven from Python, Fig. 5, and the notebook."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dasrlib.inference import edit_vector, upscale
from dasrlib.interactive import DegradationSliders, choose_model, load_notebook_image, write_fig5
from dasrlib.models import DASR
from dasrlib.models.checkpoints import save_weights
from dasrlib.models.loading import MODEL_ROOT_ENV

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
    return load_notebook_image("chelsea", max_side=40).rgb


def test_slider_change_equals_upscale_with_the_same_vector(
    model: DASR, image: torch.Tensor
) -> None:
    sliders = DegradationSliders(model, image)
    assert torch.equal(sliders.vector(), sliders.v_predicted)
    first_png = bytes(sliders.image_widget.value)
    assert first_png.startswith(PNG_SIGNATURE)

    sliders.sliders["blur1_sigma_x"].value = 2.75  # fires the observer, as a user's drag does
    sliders.sliders["jpeg1_quality"].value = 40.0
    edits = {"blur1_sigma_x": 2.75, "jpeg1_quality": 40.0}
    assert sliders.edits() == edits
    expected_v = edit_vector(sliders.v_predicted, edits)
    assert torch.equal(sliders.vector(), expected_v)
    expected = upscale(image, model, v=expected_v, precision="fp32")
    assert torch.equal(sliders.edited_sr, expected)
    assert (sliders.edited_sr - sliders.auto_sr).abs().max() > 1e-3
    assert bytes(sliders.image_widget.value) != first_png
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
    expected = upscale(image, model, v=edit_vector(sliders.v_predicted, sliders.edits()))
    assert torch.equal(sliders.edited_sr, expected)
    third = "gaussian" if other == "poisson" else "poisson"
    kind.value = third
    assert (level.min, level.max) == ranges[third]
    table = sliders.prediction_table()
    assert {"blur1_sigma_x", "noise1_level"} <= set(table["parameter"])


def test_random_fallback_is_flagged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MODEL_ROOT_ENV, str(tmp_path))
    monkeypatch.chdir(tmp_path)
    choice = choose_model()
    assert choice.random and "RANDOM-WEIGHT" in choice.note_html()
    assert (
        write_fig5(choice, load_notebook_image("coffee", max_side=24), tmp_path / "f.png") is None
    )
    assert not (tmp_path / "f.png").exists()


def test_fig5_figure_is_written(model: DASR, tmp_path: Path) -> None:
    checkpoint = tmp_path / "tiny.safetensors"
    save_weights(model, checkpoint)
    choice = choose_model(checkpoint)
    assert not choice.random
    out = write_fig5(choice, load_notebook_image("chelsea", max_side=32), tmp_path / "fig5.png")
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
