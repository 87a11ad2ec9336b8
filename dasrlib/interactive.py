"""User-interactive super-resolution (Sec. 4.6, Fig. 5): the predicted degradation as sliders.

`DegradationSliders(model, image)` predicts v_hat once, decodes it into physical units
(`dasrlib.degradation.decode_vector`) and shows one ipywidgets control per parameter of the first
degradation stage: blur kernel size, sigma_x, sigma_y and rotation; noise level and type; JPEG
quality; resize scale. Changing a control re-encodes only that parameter's slots
(`dasrlib.inference.edit_vector`; all other slots keep the predicted values), super-resolves the
image with the edited v and redraws LR (nearest), automatic SR and edited SR side by side with a
zoomed crop. "Reset" restores the prediction. Everything a notebook shows is reachable from
Python, so tests drive the widgets the way a user would (set ``.value``, the observers fire).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import ipywidgets as widgets
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dasrlib.data import EmbeddedPhotos
from dasrlib.degradation import SLOTS, Level, decode_vector, edit_vector, physical_range
from dasrlib.device import resolve_device
from dasrlib.inference import (
    ModelNotFoundError,
    default_model_path,
    load_sr_model,
    predict_vector,
    upscale,
)
from dasrlib.io import LoadedImage, read_image
from dasrlib.models import DASR
from dasrlib.results import project_path
from dasrlib.viz import centre_crop_box, comparison_figure, fig5_interactive, figure_png_bytes

__all__ = [
    "SLIDER_PARAMETERS",
    "DegradationSliders",
    "ModelChoice",
    "choose_model",
    "load_notebook_image",
    "shrink",
    "write_fig5",
]

logger = logging.getLogger(__name__)

SLIDER_PARAMETERS: dict[str, str] = {
    "blur1_kernel_size": "blur size (px)",
    "blur1_sigma_x": "blur sigma_x (px)",
    "blur1_sigma_y": "blur sigma_y (px)",
    "blur1_rotation": "blur rotation (rad)",
    "noise1_level": "noise level",
    "noise1_type": "noise type",
    "jpeg1_quality": "JPEG quality",
    "resize1_scale": "resize scale",
}
"""The controls shown: parameter name (`dasrlib.degradation.parameter_names`) -> label."""

_NOISE_TYPES = ("gaussian", "poisson", "none")
_SLIDER_STEPS = 200  # steps across a slider's range


class DegradationSliders:
    """Sliders for the predicted degradation of one image, and the SR they produce (Sec. 4.6).

    Attributes:
        sliders: parameter name -> control (FloatSlider, or Dropdown for the noise type).
        widget: the whole interface (controls, reset button, comparison image).
        v_predicted: v_hat = P(lr) [v_dim]; ``vector()`` is the edited v.
        auto_sr / edited_sr: [3, sH, sW] float32, SR with v_hat / with ``vector()``.
    """

    def __init__(
        self,
        model: nn.Module,
        image: LoadedImage | Tensor,
        *,
        level: Level | str = Level.SEVERE,
        crop: tuple[int, int, int] | None = None,
        precision: str = "fp32",
        tile: int | None = None,
        upload_max_side: int | None = 256,
    ) -> None:
        self.model = model
        self.level = Level(level)
        self.precision = precision
        self.tile = tile
        self.scale = int(model.scale)
        self.upload_max_side = upload_max_side
        self._fixed_crop = crop
        self._suspended = False
        self.reset_button = widgets.Button(description="Reset to prediction", icon="undo")
        self.reset_button.on_click(self.reset)
        self.upload = widgets.FileUpload(accept="image/*", multiple=False, description="Upload")
        self.upload.observe(self._on_upload, names="value")
        self.image_widget = widgets.Image(format="png")
        self.status = widgets.HTML()
        self.controls = widgets.VBox()
        self.widget = widgets.VBox([self.upload, self.controls, self.image_widget])
        self.set_image(image)

    def set_image(self, image: LoadedImage | Tensor) -> None:
        """Predict the degradation of a new LR image [3, H, W] and rebuild the controls."""
        lr = (image.rgb if isinstance(image, LoadedImage) else image).detach().float().cpu()
        if lr.ndim != 3 or lr.shape[0] != 3:
            raise ValueError(f"image must be [3, H, W], got {tuple(lr.shape)}")
        self.lr = lr
        self.crop = self._fixed_crop or centre_crop_box(*lr.shape[-2:])
        self.v_predicted = predict_vector(lr, self.model, precision=self.precision)
        decoded = decode_vector(self.v_predicted, level=self.level)
        assert isinstance(decoded, dict)
        self.predicted: dict[str, float | str] = decoded
        self.sliders: dict[str, widgets.FloatSlider | widgets.Dropdown] = {}
        for name, label in SLIDER_PARAMETERS.items():
            if name in self.predicted:
                self.sliders[name] = self._control(name, label)
        self._initial = {name: control.value for name, control in self.sliders.items()}
        self.auto_sr = self._super_resolve(self.v_predicted)
        self.edited_sr = self.auto_sr
        for control in self.sliders.values():
            control.observe(self.on_change, names="value")
        self.controls.children = (*self.sliders.values(), self.reset_button, self.status)
        self._draw()

    def _on_upload(self, change: dict[str, object]) -> None:
        uploads = change["new"]
        if not uploads:
            return
        upload = uploads[0]
        suffix = Path(str(upload["name"])).suffix or ".png"
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"upload{suffix}"
            path.write_bytes(bytes(upload["content"]))
            image = shrink(read_image(path), max_side=self.upload_max_side)
        self.set_image(image)

    # -- controls ------------------------------------------------------------------------------

    def _range(self, name: str, noise_type: str | float) -> tuple[float, float]:
        return physical_range(name, level=self.level, noise_type=str(noise_type))

    def _control(self, name: str, label: str) -> widgets.FloatSlider | widgets.Dropdown:
        value = self.predicted[name]
        style = {"description_width": "140px"}
        layout = widgets.Layout(width="460px")
        if name == "noise1_type":
            return widgets.Dropdown(
                options=_NOISE_TYPES, value=value, description=label, style=style, layout=layout
            )
        low, high = self._range(name, self.predicted.get("noise1_type", "gaussian"))
        value = float(value)
        return widgets.FloatSlider(
            value=value,
            min=min(low, value),
            max=max(high, value),
            step=(high - low) / _SLIDER_STEPS,
            description=label,
            continuous_update=False,
            readout_format=".3g",
            style=style,
            layout=layout,
        )

    def prediction_table(self) -> pd.DataFrame:
        """The predicted degradation in physical units: parameter, value, unit (one row each)."""
        units = {slot.parameter: slot.unit for slot in SLOTS}
        return pd.DataFrame(
            {
                "parameter": list(self.predicted),
                "value": [
                    v if isinstance(v, str) else round(float(v), 4) for v in self.predicted.values()
                ],
                "unit": [units.get(name, "") for name in self.predicted],
            }
        )

    def edits(self) -> dict[str, float | str]:
        """The controls whose value differs from the prediction, as `edit_vector` edits."""
        return {
            name: control.value
            for name, control in self.sliders.items()
            if control.value != self._initial[name]
        }

    def vector(self) -> Tensor:
        """The edited degradation vector [v_dim] (v_hat itself when nothing is edited)."""
        return edit_vector(self.v_predicted, self.edits(), level=self.level)

    # -- updates -------------------------------------------------------------------------------

    def _super_resolve(self, v: Tensor) -> Tensor:
        sr = upscale(self.lr, self.model, v=v, precision=self.precision, tile=self.tile)
        assert isinstance(sr, Tensor)
        return sr

    def on_change(self, change: dict[str, object] | None = None) -> None:
        """Recompute the edited SR from the controls and redraw (the controls' observer)."""
        if self._suspended:
            return
        if change is not None and change.get("owner") is self.sliders.get("noise1_type"):
            self._rescale_noise_level(str(change["new"]))
        self.edited_sr = self._super_resolve(self.vector())
        self._draw()

    def _rescale_noise_level(self, noise_type: str) -> None:
        """Give the noise-level slider the range of the chosen noise type."""
        slider = self.sliders.get("noise1_level")
        if not isinstance(slider, widgets.FloatSlider) or noise_type == "none":
            return
        low, high = self._range("noise1_level", noise_type)
        self._suspended = True
        try:
            if low > slider.max:
                slider.max = high
                slider.min = low
            else:
                slider.min = low
                slider.max = high
            slider.step = (high - low) / _SLIDER_STEPS
            slider.value = min(max(slider.value, low), high)
        finally:
            self._suspended = False

    def reset(self, _button: object = None) -> None:
        """Restore every control to the predicted value and recompute once."""
        self._suspended = True
        try:
            for name, control in self.sliders.items():
                if name == "noise1_level":
                    noise_type = self._initial.get("noise1_type", "gaussian")
                    low, high = self._range(name, noise_type)
                    initial = float(self._initial[name])
                    control.min, control.max = min(low, initial), max(high, initial)
                control.value = self._initial[name]
        finally:
            self._suspended = False
        self.on_change()

    def _draw(self) -> None:
        nearest = F.interpolate(self.lr[None], scale_factor=self.scale, mode="nearest")[0]
        edits = self.edits()
        panels = [
            (f"LR x{self.scale} (nearest)", nearest),
            ("automatic (predicted v)", self.auto_sr),
            ("edited" if edits else "edited (no edits)", self.edited_sr),
        ]
        fig = comparison_figure(panels, scale=self.scale, crop=self.crop)
        self.image_widget.value = figure_png_bytes(fig)
        shown = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in edits.items()
        )
        self.status.value = f"<b>edits:</b> {shown or 'none (the prediction)'}"


# --------------------------------------------------------------------------------------------
# Notebook helpers: which model, which image
# --------------------------------------------------------------------------------------------


class ModelChoice:
    """The model a notebook runs and a sentence saying where it came from (``random`` flags a
    random-weight stand-in whose results mean nothing)."""

    def __init__(self, model: nn.Module, source: str, *, random: bool) -> None:
        self.model = model
        self.source = source
        self.random = random

    def note_html(self) -> str:
        """An HTML note for the notebook; loud (red, bold) for a random-weight model."""
        if not self.random:
            return f"<p>Model: {self.source}</p>"
        return (
            "<p style='color:#b00;font-weight:bold;font-size:120%'>WARNING: no trained DASR "
            "model found; this is a RANDOM-WEIGHT DASR, so every SR result below is meaningless "
            f"(it only exercises the code).</p><p>{self.source}</p>"
        )


def choose_model(
    model_path: str | os.PathLike[str] | None = None,
    *,
    official_paths: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    allow_random: bool = True,
    seed: int = 0,
) -> ModelChoice:
    """The notebook's model: ``model_path``, else the official files, else the project's
    trained checkpoint (`default_model_path`), else (``allow_random``) a small random-weight DASR
    flagged as such; without ``allow_random`` a missing model raises `ModelNotFoundError`."""
    if official_paths is not None and len(official_paths) != 2:
        raise ValueError(f"official_paths must be [net_g, net_p], got {official_paths!r}")
    official = None if official_paths is None else (official_paths[0], official_paths[1])
    if model_path is not None or official is not None:
        model = load_sr_model(model_path, official_paths=official, device=device)
        source = str(model_path) if model_path is not None else f"official DASR {official_paths}"
        return ModelChoice(model, f"loaded from {source}", random=False)
    try:
        path = default_model_path()
    except ModelNotFoundError as error:
        if not allow_random:
            raise
        generator = torch.Generator().manual_seed(seed)
        model = DASR(num_feat=16, num_block=4, predictor_feat=16, generator=generator)
        return ModelChoice(model.to(resolve_device(device)).eval(), str(error), random=True)
    return ModelChoice(load_sr_model(path, device=device), f"loaded from {path}", random=False)


def shrink(image: LoadedImage, *, max_side: int | None) -> LoadedImage:
    """``image`` made at most ``max_side`` pixels on its longest side (area averaging); a small
    LR input keeps CPU runs fast. None or a smaller image: unchanged."""
    longest = max(image.height, image.width)
    if max_side is None or longest <= max_side:
        return image
    factor = max_side / longest
    size = (max(1, round(image.height * factor)), max(1, round(image.width * factor)))
    rgb = F.interpolate(image.rgb[None], size=size, mode="area")[0]
    alpha = None
    if image.alpha is not None:
        alpha = F.interpolate(image.alpha[None], size=size, mode="area")[0]
    return LoadedImage(
        rgb=rgb, alpha=alpha, bit_depth=image.bit_depth, was_gray=image.was_gray, path=image.path
    )


def load_notebook_image(source: str, *, max_side: int | None = None) -> LoadedImage:
    """An embedded photo by name (`dasrlib.data.EMBEDDED_PHOTOS`, e.g. ``"chelsea"``) or a file,
    shrunk by `shrink` to at most ``max_side`` pixels on its longest side."""
    photos = EmbeddedPhotos()
    if source in photos.names:
        image = read_image(photos.paths[photos.names.index(source)])
    elif Path(source).exists():
        image = read_image(source)
    else:
        raise FileNotFoundError(
            f"image {source!r} is neither an embedded photo ({', '.join(photos.names)}) nor a file"
        )
    return shrink(image, max_side=max_side)


def write_fig5(
    choice: ModelChoice,
    image: LoadedImage,
    out_png: str | os.PathLike[str] | None,
    *,
    level: Level | str = Level.SEVERE,
    allow_random: bool = False,
    precision: str = "fp32",
) -> Path | None:
    """Write the Fig. 5 figure (`dasrlib.viz.fig5_interactive`) for ``image``; a relative path
    is taken from the repository root. A random-weight model's figure is not written unless
    ``allow_random`` (it would only show noise where the paper shows an effect); returns None
    then, or when ``out_png`` is None."""
    if out_png is None:
        return None
    if choice.random and not allow_random:
        logger.warning("Fig. 5 not written to %s: the model has random weights", out_png)
        return None
    return fig5_interactive(
        choice.model, image.rgb, project_path(out_png), level=level, precision=precision
    )
