"""User-interactive super-resolution (Sec. 4.6, Fig. 5): the predicted degradation as sliders.

`DegradationSliders(model, image)` predicts v_hat once, decodes it into physical units
(`dasrlib.degradation.vector.decode_vector`) and shows one ipywidgets control per parameter of the
first degradation stage: blur kernel size, sigma_x, sigma_y and rotation; noise level and type; JPEG
quality; resize scale. Changing a control re-encodes only that parameter's slots
(`dasrlib.degradation.edit.edit_vector`; all other slots keep the predicted values), super-resolves
the image with the edited v and redraws LR (nearest), automatic SR and edited SR side by side with a
zoomed crop (native pixel size where the page has room). "Reset" restores the prediction.
Everything a notebook shows is reachable from Python, so tests drive the widgets the way a user
would (set ``.value``, the observers fire); tests/browser drives them in a real browser.

The model is `dasrlib.models.loading.choose_model`'s (the rule the ``dasr`` command uses too);
`model_note_html` says on the page which one runs. Fig. 5 as a measurement and its figure are
`dasrlib.experiments.fig5`.
"""

from __future__ import annotations

import contextlib
import html
import io
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import ipywidgets as widgets
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image as PILImage
from torch import Tensor, nn

from dasrlib.degradation.edit import edit_vector, physical_range
from dasrlib.degradation.levels import Level
from dasrlib.degradation.vector import SLOTS, decode_vector
from dasrlib.inference import predict_vector, upscale
from dasrlib.io import LoadedImage, read_image, shrink_image, to_uint8
from dasrlib.models.loading import ModelChoice, ModelKind
from dasrlib.viz import centre_crop_box

__all__ = [
    "SLIDER_PARAMETERS",
    "DegradationSliders",
    "model_note_html",
    "panel_png",
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
"""The controls shown: parameter name (`dasrlib.degradation.vector.parameter_names`) -> label."""

_NOISE_TYPES = ("gaussian", "poisson", "none")
_SLIDER_STEPS = 200  # steps across a slider's range
_PANELS = ("lr", "auto", "edited")
_MAX_ZOOM = 4  # largest integer enlargement of the zoomed crop
_PANEL_STYLE = "<style>.dasr-figure img { image-rendering: pixelated; }</style>"
"""Panels scaled down to fit the page keep hard pixel edges (no smoothing of the SR output)."""


class _CollectWarnings(logging.Handler):
    """Keeps the library's warnings raised during one update, for the widget's message area."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _library_warnings() -> Iterator[list[str]]:
    """The ``dasrlib`` warnings logged inside the block (they still reach the usual handlers)."""
    handler = _CollectWarnings()
    library = logging.getLogger("dasrlib")
    library.addHandler(handler)
    try:
        yield handler.messages
    finally:
        library.removeHandler(handler)


def panel_png(image: Tensor) -> bytes:
    """An image [3, H, W] in [0, 1] as PNG bytes, pixel for pixel (no resampling)."""
    array = to_uint8(image[:3]).permute(1, 2, 0).contiguous().numpy()
    buffer = io.BytesIO()
    PILImage.fromarray(array).save(buffer, format="png")
    return buffer.getvalue()


def _with_box(image: Tensor, box: tuple[int, int, int]) -> Tensor:
    """``image`` with a one-pixel red outline of the square ``box`` = (top, left, side)."""
    top, left, side = box
    bottom = min(top + side, image.shape[-2]) - 1
    right = min(left + side, image.shape[-1]) - 1
    out = image[:3].clone()
    red = torch.tensor([1.0, 0.0, 0.0])[:, None]
    out[:, top, left : right + 1] = red
    out[:, bottom, left : right + 1] = red
    out[:, top : bottom + 1, left] = red
    out[:, top : bottom + 1, right] = red
    return out


def _set_range(slider: widgets.FloatSlider, low: float, high: float) -> None:
    """Give ``slider`` the range [low, high] (in an order the min <= max check accepts)."""
    if low > slider.max:
        slider.max = high
        slider.min = low
    else:
        slider.min = low
        slider.max = high
    slider.step = (high - low) / _SLIDER_STEPS


class DegradationSliders:
    """Sliders for the predicted degradation of one image, and the SR they produce (Sec. 4.6).

    Each slider spans the physical range of its parameter at ``level``; a prediction outside
    that range is shown clamped to it, and the note beside the slider says so (the automatic
    result always uses the prediction itself). The noise level is disabled while the noise type
    is "none". Warnings the library logs during an update (e.g. a value the model never saw)
    appear in ``messages``, inside the widget. The three panels (LR enlarged by nearest
    sampling, automatic SR, edited SR) are PNGs at their native pixel size, shown at that size
    where the page has room and scaled down to stay side by side where it has not; the zoomed
    crops below them use an integer factor. The unclamped prediction sits behind a disclosure
    (``raw_values``) under the upload button.

    Attributes:
        sliders: parameter name -> control (FloatSlider, or Dropdown for the noise type).
        notes: parameter name -> the note beside its control (prediction, clamping).
        widget: the whole interface (upload, controls, messages, panels).
        images: panel ("lr", "auto", "edited") -> its full-size Image widget; ``zooms`` the crops.
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
        self.reset_button = widgets.Button(
            description="Reset to prediction", icon="undo", layout=widgets.Layout(width="auto")
        )
        self.reset_button.on_click(self.reset)
        self.upload = widgets.FileUpload(accept="image/*", multiple=False, description="Upload")
        self.upload.observe(self._on_upload, names="value")
        self.status = widgets.HTML()
        self.messages = widgets.HTML()
        self.controls = widgets.VBox()
        self.raw_values = widgets.HTML()
        self.titles = {key: widgets.HTML() for key in _PANELS}
        self.images = {key: widgets.Image(format="png") for key in _PANELS}
        self.zooms = {key: widgets.Image(format="png") for key in _PANELS}
        columns = []
        for key in _PANELS:
            self.images[key].add_class(f"dasr-panel-{key}")
            self.zooms[key].add_class(f"dasr-zoom-{key}")
            columns.append(  # equal shares of the row; a panel wider than its share shrinks
                widgets.VBox(
                    [self.titles[key], self.images[key], self.zooms[key]],
                    layout=widgets.Layout(flex="1 1 0", min_width="0", margin="0 8px 8px 0"),
                )
            )
        self.figure = widgets.HBox(columns, layout=widgets.Layout(flex_flow="row nowrap"))
        self.figure.add_class("dasr-figure")
        pixelated = widgets.HTML(_PANEL_STYLE)
        self.widget = widgets.VBox(
            [pixelated, self.controls, self.messages, self.figure, self.upload, self.raw_values]
        )
        self.set_image(image)

    def set_image(self, image: LoadedImage | Tensor) -> None:
        """Predict the degradation of a new LR image [3, H, W] and rebuild the controls."""
        lr = (image.rgb if isinstance(image, LoadedImage) else image).detach().float().cpu()
        if lr.ndim != 3 or lr.shape[0] != 3:
            raise ValueError(f"image must be [3, H, W], got {tuple(lr.shape)}")
        self.lr = lr
        height, width = lr.shape[-2:]
        side = max(8, min(48, min(height, width) // 3))  # a third of the short side, at most 48
        self.crop = self._fixed_crop or centre_crop_box(height, width, size=side)
        self.v_predicted = predict_vector(lr, self.model, precision=self.precision)
        decoded = decode_vector(self.v_predicted, level=self.level)
        assert isinstance(decoded, dict)
        self.predicted: dict[str, float | str] = decoded
        self.sliders: dict[str, widgets.FloatSlider | widgets.Dropdown] = {}
        self.notes: dict[str, widgets.HTML] = {}
        for name, label in SLIDER_PARAMETERS.items():
            if name in self.predicted:
                self.sliders[name] = self._control(name, label)
                self.notes[name] = widgets.HTML()
        self._initial = {name: control.value for name, control in self.sliders.items()}
        self._initial_type = str(self._initial.get("noise1_type", "gaussian"))
        self._show_noise_type(self._initial_type)
        with _library_warnings() as messages:
            self.auto_sr = self._super_resolve(self.v_predicted)
        self.edited_sr = self.auto_sr
        for control in self.sliders.values():
            control.observe(self.on_change, names="value")
        rows = [widgets.HBox([control, self.notes[name]]) for name, control in self.sliders.items()]
        self.controls.children = (*rows, self.reset_button, self.status)
        self.raw_values.value = (
            "<details><summary>Predicted values, unclamped (physical units)</summary>"
            + self.prediction_table().to_html(index=False, border=0)
            + "</details>"
        )
        self._show_messages(messages)
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
            image = shrink_image(read_image(path), max_side=self.upload_max_side)
        self.set_image(image)

    # -- controls ------------------------------------------------------------------------------

    def _range(self, name: str, noise_type: str | float) -> tuple[float, float]:
        return physical_range(name, level=self.level, noise_type=str(noise_type))

    def _control(self, name: str, label: str) -> widgets.FloatSlider | widgets.Dropdown:
        """The control of one parameter, set to its prediction clamped into the level's range."""
        value = self.predicted[name]
        style = {"description_width": "140px"}
        layout = widgets.Layout(width="460px")
        if name == "noise1_type":
            return widgets.Dropdown(
                options=_NOISE_TYPES, value=value, description=label, style=style, layout=layout
            )
        noise_type = self.predicted.get("noise1_type", "gaussian")
        low, high = self._range(name, "gaussian" if noise_type == "none" else noise_type)
        return widgets.FloatSlider(
            value=min(max(float(value), low), high),
            min=low,
            max=high,
            step=(high - low) / _SLIDER_STEPS,
            description=label,
            continuous_update=False,
            readout_format=".3g",
            style=style,
            layout=layout,
        )

    def _prediction_note(self, name: str) -> str:
        """'predicted 1.2', or that the prediction lies outside the range and is shown clamped."""
        value = self.predicted[name]
        if isinstance(value, str):
            return f"predicted: {value}"
        control = self.sliders[name]
        low, high = control.min, control.max
        if self._initial_type == "none" and name == "noise1_level":
            return "no noise predicted"
        if low <= value <= high:
            return f"predicted: {value:.3g}"
        side = "below" if value < low else "above"
        return (
            f"<span style='color:#a60'>predicted {value:.3g} lies {side} the {self.level.value} "
            f"range {low:g}-{high:g}; the slider shows {control.value:.3g}</span>"
        )

    def _show_noise_type(self, noise_type: str) -> None:
        """Enable the noise level only for a noise type, with that type's range, and say so."""
        for name in self.notes:
            self.notes[name].value = self._prediction_note(name)
        slider = self.sliders.get("noise1_level")
        if not isinstance(slider, widgets.FloatSlider):
            return
        slider.disabled = noise_type == "none"
        if noise_type == "none":
            self.notes[
                "noise1_level"
            ].value = "disabled: the noise type is none (choose gaussian or poisson to set a level)"
        elif noise_type != self._initial_type:
            low, high = self._range("noise1_level", noise_type)
            self.notes["noise1_level"].value = f"{noise_type} range {low:g}-{high:g}"

    def prediction_table(self) -> pd.DataFrame:
        """The predicted degradation in physical units: parameter, value, unit and whether the
        value lies in the ``level``'s range (one row each; the sliders show it clamped)."""
        units = {slot.parameter: slot.unit for slot in SLOTS}
        noise_type = str(self.predicted.get("noise1_type", "gaussian"))
        noise_type = "gaussian" if noise_type == "none" else noise_type
        continuous = {slot.name for slot in SLOTS if slot.kind == "continuous"}
        in_range = []
        for name, value in self.predicted.items():
            if name not in continuous:
                in_range.append("")
                continue
            low, high = self._range(name, noise_type)
            in_range.append("yes" if low <= value <= high else f"no ({low:g}-{high:g})")
        return pd.DataFrame(
            {
                "parameter": list(self.predicted),
                "value": [
                    v if isinstance(v, str) else round(float(v), 4) for v in self.predicted.values()
                ],
                "unit": [units.get(name, "") for name in self.predicted],
                "in range": in_range,
            }
        )

    def edits(self) -> dict[str, float | str]:
        """The controls whose value differs from the prediction, as `edit_vector` edits.

        A noise level is left out while the noise type is "none"; a changed noise type carries
        the level slider's value with it (the level's meaning depends on the type).
        """
        edits = {
            name: control.value
            for name, control in self.sliders.items()
            if control.value != self._initial[name]
        }
        noise_type = self.sliders.get("noise1_type")
        if noise_type is not None and noise_type.value == "none":
            edits.pop("noise1_level", None)
        elif "noise1_type" in edits and "noise1_level" in self.sliders:
            edits["noise1_level"] = self.sliders["noise1_level"].value
        return edits

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
        with _library_warnings() as messages:
            self.edited_sr = self._super_resolve(self.vector())
        self._show_messages(messages)
        self._draw()

    def _rescale_noise_level(self, noise_type: str) -> None:
        """Give the noise-level slider the range of the chosen noise type (disabled for none)."""
        slider = self.sliders.get("noise1_level")
        if isinstance(slider, widgets.FloatSlider) and noise_type != "none":
            low, high = self._range("noise1_level", noise_type)
            self._suspended = True
            try:
                _set_range(slider, low, high)
                slider.value = min(max(slider.value, low), high)
            finally:
                self._suspended = False
        self._show_noise_type(noise_type)

    def reset(self, _button: object = None) -> None:
        """Restore every control to the predicted value and recompute once."""
        self._suspended = True
        try:
            for name, control in self.sliders.items():
                if name == "noise1_level":
                    kind = "gaussian" if self._initial_type == "none" else self._initial_type
                    _set_range(control, *self._range(name, kind))
                control.value = self._initial[name]
        finally:
            self._suspended = False
        self._show_noise_type(self._initial_type)
        self.on_change()

    def _show_messages(self, messages: list[str]) -> None:
        self.messages.value = "".join(
            f"<p style='color:#a60'>warning: {html.escape(message)}</p>" for message in messages
        )

    def _draw(self) -> None:
        nearest = F.interpolate(self.lr[None], scale_factor=self.scale, mode="nearest")[0]
        edits = self.edits()
        top, left, side = self.crop
        box = (self.scale * top, self.scale * left, self.scale * side)
        panels = {
            "lr": (f"LR x{self.scale} (nearest)", nearest),
            "auto": ("automatic (predicted v)", self.auto_sr),
            "edited": ("edited" if edits else "edited (no edits)", self.edited_sr),
        }
        width = nearest.shape[-1]
        zoom = max(1, min(_MAX_ZOOM, width // box[2]))
        for key, (title, image) in panels.items():
            self.titles[key].value = f"<b>{title}</b><br>below: the red box, enlarged x{zoom}"
            _show(self.images[key], _with_box(image, box))
            crop = image[:3, box[0] : box[0] + box[2], box[1] : box[1] + box[2]]
            _show(self.zooms[key], crop.repeat_interleave(zoom, 1).repeat_interleave(zoom, 2))
        shown = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in edits.items()
        )
        self.status.value = f"<b>edits:</b> {shown or 'none (the prediction)'}"


def _show(widget: widgets.Image, image: Tensor) -> None:
    """Put ``image`` [3, H, W] into ``widget``: native pixel size where the page has room, else
    scaled down (aspect kept) to the width of its column, so the panels stay side by side."""
    height, width = image.shape[-2:]
    widget.value = panel_png(image)
    widget.width, widget.height = str(width), str(height)
    layout = widget.layout
    layout.width, layout.height = f"{width}px", "auto"
    layout.max_width = "100%"
    layout.object_fit = "contain"


# --------------------------------------------------------------------------------------------
# Notebook helpers: which model, which image
# --------------------------------------------------------------------------------------------


def model_note_html(choice: ModelChoice) -> str:
    """What the page says about its model (`dasrlib.models.loading.choose_model`), worded for a
    reader of the page: loud (red, bold) for a random-weight stand-in, amber for a local run."""
    source = html.escape(Path(choice.source).name if choice.kind is not ModelKind.RANDOM else "")
    if choice.random:
        return (
            "<p style='color:#b00;font-weight:bold;font-size:120%'>No trained DASR model was "
            "found, so this page runs a RANDOM-WEIGHT DASR: every result below is meaningless "
            "and the sliders do nothing (the output is a smooth upscale whatever they say). "
            "Train a model (<code>make demo</code> in the repository), then reload the "
            "page.</p>"
        )
    if choice.local_run:
        run = html.escape(Path(choice.source).parent.name)
        return (
            "<p style='color:#a60;font-weight:bold'>Model: the newest local training run "
            f"<code>{run}</code> (no published model yet). A short training run is far from the "
            "paper's model, so the sliders change the image only a little.</p>"
        )
    if not choice.adaptive:
        return (
            f"<p style='color:#a60;font-weight:bold'>Model: {source}, a plain SR network: it "
            "predicts no degradation, so the sliders have no effect.</p>"
        )
    return f"<p>Model: {source} ({html.escape(choice.kind.value)})</p>"
