"""Tiled, precision-controlled inference (dasrlib.inference): exactness of tiling, v override,
plain networks, alpha / 16-bit / gray handling, quantised outputs, fp16 fallback, bf16 and
channels-last on the CPU, v editing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dasrlib.device
from dasrlib.cli import main as dasr_main
from dasrlib.degradation.edit import edit_vector
from dasrlib.degradation.vector import SLOTS, decode_vector
from dasrlib.device import describe_precision, prefers_channels_last
from dasrlib.experiments.fig5 import fig5_edits
from dasrlib.inference import UpscaledImage, predict_vector, upscale, upscale_to_file
from dasrlib.io import LoadedImage, read_image, write_png
from dasrlib.models.checkpoints import save_weights
from dasrlib.models.dasr import DASR
from dasrlib.models.experts import SRResNet
from dasrlib.models.loading import MODEL_ROOT_ENV, ModelNotFoundError, default_model_path
from dasrlib.tiling import DEFAULT_OVERLAP

NUM_BLOCK = 2
RADIUS = 2 * NUM_BLOCK + 3  # receptive-field radius of the tiny expert, LR pixels


def tiny_dasr(seed: int = 0) -> DASR:
    """A small random DASR whose expert residual is large enough for tiling errors to show.

    BasicSR's init (Kaiming x 0.1) leaves the residual branch near zero, so the output would be
    almost the bilinear skip and any tiling would look exact; scaling the expert bank by 20
    gives a residual of about 0.05 standard deviation without saturating the output.
    """
    model = DASR(
        num_feat=8,
        num_block=NUM_BLOCK,
        predictor_feat=8,
        generator=torch.Generator().manual_seed(seed),
    )
    with torch.no_grad():
        model.experts.bank.mul_(20.0)
    return model.eval()


@pytest.fixture(scope="module")
def model() -> DASR:
    return tiny_dasr()


@pytest.fixture(scope="module")
def lr_image() -> torch.Tensor:
    return torch.rand(3, 37, 53, generator=torch.Generator().manual_seed(1))  # odd sizes


def receptive_field_radius(num_block: int) -> int:
    """Largest LR distance from which an SRResNet output pixel receives gradient."""
    net = SRResNet(num_feat=4, num_block=num_block)
    for parameter in net.parameters():
        nn.init.normal_(parameter, std=0.3, generator=torch.Generator().manual_seed(0))
    size = 2 * (2 * num_block + 10) + 1
    x = torch.rand(1, 3, size, size, requires_grad=True)
    y = net(x)
    centre = size // 2
    radius = 0
    for phase in range(4):  # the four output pixels of one LR pixel (x4)
        (grad,) = torch.autograd.grad(
            y[0, :, 4 * centre + phase, 4 * centre].sum(), x, retain_graph=True
        )
        rows = torch.nonzero(grad.abs().sum(dim=(0, 1, 3)) > 0).flatten()
        radius = max(radius, centre - int(rows.min()), int(rows.max()) - centre)
    return radius


@pytest.mark.parametrize("num_block", [1, 16])
def test_srresnet_receptive_field_is_two_per_block_plus_three(num_block: int) -> None:
    assert receptive_field_radius(num_block) == 2 * num_block + 3


def test_default_overlap_covers_the_paper_expert() -> None:
    # 16 residual blocks (Sec. 3.1): radius 35, so tiled DASR equals untiled DASR.
    assert DEFAULT_OVERLAP >= 2 * 16 + 3


@pytest.fixture(scope="module")
def untiled(model: DASR, lr_image: torch.Tensor) -> torch.Tensor:
    return upscale(lr_image, model, precision="fp32")


@pytest.mark.parametrize("overlap", [RADIUS, RADIUS + 1, 16])
def test_tiled_equals_untiled_when_overlap_covers_receptive_field(
    model: DASR, lr_image: torch.Tensor, untiled: torch.Tensor, overlap: int
) -> None:
    tiled = upscale(lr_image, model, tile=16, overlap=overlap, precision="fp32")
    assert tiled.shape == (3, 4 * 37, 4 * 53)
    assert (tiled - untiled).abs().max() < 1e-5


def test_tiled_below_receptive_field_approximates_and_context_matters(
    model: DASR, lr_image: torch.Tensor, untiled: torch.Tensor
) -> None:
    close = upscale(lr_image, model, tile=16, overlap=RADIUS - 2, precision="fp32")
    blind = upscale(lr_image, model, tile=16, overlap=0, precision="fp32")
    assert (close - untiled).abs().max() < 1e-3  # the blend approximates
    assert (blind - untiled).abs().max() > 1e-2  # without context the tiles really differ


def test_untiled_is_the_fused_network_clamped(
    model: DASR, lr_image: torch.Tensor, untiled: torch.Tensor
) -> None:
    with torch.no_grad():
        v_hat = model.predict_degradation(lr_image[None])
        expected = model(lr_image[None]).sr[0].clamp(0, 1)
    assert torch.allclose(untiled, expected, atol=1e-5)
    assert torch.allclose(predict_vector(lr_image, model), v_hat[0], atol=1e-6)


def test_v_replaces_the_prediction(
    model: DASR, lr_image: torch.Tensor, untiled: torch.Tensor
) -> None:
    v = torch.rand(33, generator=torch.Generator().manual_seed(3))
    out = upscale(lr_image[None], model, v=v, precision="fp32")
    with torch.no_grad():
        expected = model(lr_image[None], v=v[None]).sr.clamp(0, 1)
    assert out.shape == (1, 3, 148, 212)
    assert torch.allclose(out, expected, atol=1e-5)
    assert (out[0] - untiled).abs().max() > 1e-4


def test_predictor_on_crops_is_their_area_weighted_mean(model: DASR) -> None:
    image = torch.rand(3, 40, 70, generator=torch.Generator().manual_seed(4))
    by_crops = predict_vector(image, model, predictor_max_side=32)  # 2 x 3 crops
    rows, cols = [0, 20, 40], [0, 23, 47, 70]
    total = torch.zeros(33)
    with torch.no_grad():
        for top, bottom in zip(rows[:-1], rows[1:], strict=True):
            for left, right in zip(cols[:-1], cols[1:], strict=True):
                crop = image[None, :, top:bottom, left:right]
                total += model.predict_degradation(crop)[0] * (bottom - top) * (right - left)
    assert torch.allclose(by_crops, total / (40 * 70), atol=1e-6)
    whole = predict_vector(image, model)
    assert (by_crops - whole).abs().max() < 0.2 * whole.abs().max()  # only crop borders differ


def test_plain_network_runs_without_predictor(lr_image: torch.Tensor) -> None:
    net = SRResNet(num_feat=8, num_block=1, generator=torch.Generator().manual_seed(5)).eval()
    out = upscale(lr_image, net, tile=20, overlap=8)
    with torch.no_grad():
        expected = net(lr_image[None])[0].clamp(0, 1)
    assert torch.allclose(out, expected, atol=1e-5)
    with pytest.raises(ValueError, match="not degradation-adaptive"):
        upscale(lr_image, net, v=torch.zeros(33))


def test_plain_network_without_scale_attribute_is_measured() -> None:
    net = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.PixelShuffle(2)).eval()
    out = upscale(torch.rand(3, 9, 11), net)
    assert out.shape == (3, 18, 22)


def test_integer_outputs_are_the_float_output_quantised(
    model: DASR, lr_image: torch.Tensor, untiled: torch.Tensor
) -> None:
    out8 = upscale(lr_image, model, tile=20, precision="fp32", output_dtype=torch.uint8)
    out16 = upscale(lr_image, model, tile=20, precision="fp32", output_dtype=torch.uint16)
    assert out8.dtype == torch.uint8 and out16.dtype == torch.uint16
    assert (out8.int() - (untiled * 255).round().int()).abs().max() <= 1
    assert (out16.int() - (untiled * 65535).round().int()).abs().max() <= 1


def test_alpha_and_16_bit_round_trip(model: DASR, tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(6)
    rgb = torch.rand(3, 21, 17, generator=generator)
    alpha = torch.rand(1, 21, 17, generator=generator)
    source = tmp_path / "in16.png"
    write_png(source, rgb, alpha=alpha, bit_depth=16)
    loaded = read_image(source)
    result = upscale_to_file(loaded, model, tmp_path / "out16.png", tile=8, precision="fp32")
    back = read_image(tmp_path / "out16.png")
    assert back.bit_depth == 16 and back.alpha is not None and not back.was_gray
    assert back.rgb.shape == (3, 84, 68) and back.alpha.shape == (1, 84, 68)
    expected_alpha = F.interpolate(loaded.alpha[None], scale_factor=4, mode="bicubic")[0].clamp(
        0, 1
    )
    assert (back.alpha - expected_alpha).abs().max() <= 1.0 / 65535 + 1e-6
    expected_rgb = upscale(loaded.rgb, model, precision="fp32")
    assert (back.rgb - expected_rgb).abs().max() <= 1.0 / 65535 + 1e-6
    assert isinstance(result, UpscaledImage) and result.v is not None and result.a is not None
    assert result.rgb.dtype == torch.uint16


def test_eight_bit_gray_kept_gray(model: DASR, tmp_path: Path) -> None:
    gray = torch.rand(1, 15, 19, generator=torch.Generator().manual_seed(7))
    source = tmp_path / "gray.png"
    write_png(source, gray, gray=True)
    loaded = read_image(source)
    assert loaded.was_gray
    kept = upscale(loaded, model, keep_gray=True, precision="fp32")
    colour = upscale(loaded, model, precision="fp32")
    assert isinstance(kept, UpscaledImage) and isinstance(colour, UpscaledImage)
    assert kept.rgb.shape == (1, 60, 76) and colour.rgb.shape == (3, 60, 76)
    luma = (colour.rgb * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True)
    unclipped = ((colour.rgb > 0) & (colour.rgb < 1)).all(dim=0, keepdim=True)
    assert unclipped.float().mean() > 0.5
    assert (kept.rgb - luma)[unclipped].abs().max() < 1e-5
    upscale_to_file(loaded, model, tmp_path / "gray_x4.png", keep_gray=True)
    back = read_image(tmp_path / "gray_x4.png")
    assert back.was_gray and back.bit_depth == 8


def test_refuses_to_write_onto_the_input(model: DASR, tmp_path: Path) -> None:
    source = tmp_path / "a.png"
    write_png(source, torch.rand(3, 8, 8))
    before = source.read_bytes()
    with pytest.raises(ValueError, match="overwrite the input"):
        upscale_to_file(source, model, source)
    assert source.read_bytes() == before


class _OverflowsInHalf(nn.Module):
    """x4 network whose intermediate exceeds the fp16 range (65504) but not float32's."""

    scale = 4

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Conv2d(3, 48, 1)
        self.down = nn.Conv2d(48, 48, 1)
        with torch.no_grad():
            self.up.weight.fill_(1e5)
            self.up.bias.zero_()
            self.down.weight.fill_(1e-5 / 48 / 3)
            self.down.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.down(self.up(x)), 4)


def test_fp16_overflow_falls_back_to_fp32_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    net = _OverflowsInHalf().eval()
    image = torch.rand(3, 6, 7, generator=torch.Generator().manual_seed(8)) + 0.5
    reference = upscale(image.clamp(0, 1), net, precision="fp32")
    with caplog.at_level(logging.WARNING, logger="dasrlib.device"):
        out = upscale(image.clamp(0, 1), net, precision="fp16", tile=4, overlap=1)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, reference, atol=1e-5)
    assert any("NaN/Inf" in record.getMessage() for record in caplog.records)


# -- bf16 and channels-last on the CPU ----------------------------------------------------------


def _residual_error(out: torch.Tensor, reference: torch.Tensor, lr: torch.Tensor) -> float:
    """||out - reference|| / ||reference - bilinear(lr)||: rounding relative to the residual the
    network adds (the bilinear skip would hide any precision in the whole output)."""
    bilinear = F.interpolate(lr[None], scale_factor=4, mode="bilinear")[0]
    return float((out - reference).norm() / (reference - bilinear).norm())


def test_bf16_on_the_cpu_rounds_like_bf16(
    model: DASR, lr_image: torch.Tensor, untiled: torch.Tensor
) -> None:
    bf16 = upscale(lr_image, model, precision="bf16", device="cpu")
    assert 1e-3 < _residual_error(bf16, untiled, lr_image) < 3e-2  # bf16: 8 significant bits


@pytest.mark.parametrize(("precision", "bound"), [("fp32", 1e-5), ("bf16", 3e-2)])
def test_channels_last_changes_only_the_rounding(
    model: DASR, lr_image: torch.Tensor, untiled: torch.Tensor, precision: str, bound: float
) -> None:
    plain = upscale(lr_image, model, tile=16, precision=precision, channels_last=False)
    last = upscale(lr_image, model, tile=16, precision=precision, channels_last=True)
    assert _residual_error(last, plain, lr_image) < bound
    assert _residual_error(last, untiled, lr_image) < bound


def _record_convolutions(net: nn.Module) -> list[tuple[torch.dtype, bool, bool]]:
    """(output dtype, input channels-last, kernel channels-last) of every conv call of ``net``
    (and of copies of it: hooks are copied along)."""
    seen: list[tuple[torch.dtype, bool, bool]] = []

    def record(conv: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        layout = torch.channels_last
        seen.append(
            (
                output.dtype,
                inputs[0].is_contiguous(memory_format=layout),
                conv.weight.is_contiguous(memory_format=layout),
            )
        )

    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_hook(record)
    return seen


def test_bf16_on_the_cpu_runs_the_convolutions_in_bf16_channels_last() -> None:
    net = SRResNet(num_feat=8, num_block=1, generator=torch.Generator().manual_seed(4)).eval()
    seen = _record_convolutions(net)
    image = torch.rand(3, 12, 10, generator=torch.Generator().manual_seed(5))
    upscale(image, net, precision="bf16", device="cpu")
    assert len(seen) == 7 and all(dtype == torch.bfloat16 for dtype, _, _ in seen)
    assert all(tile_last and kernel_last for _, tile_last, kernel_last in seen)
    assert all(p.is_contiguous() for p in net.parameters())  # the caller's network is not changed
    seen.clear()
    upscale(image, net, precision="fp32", device="cpu")
    fp32_layout = prefers_channels_last(torch.device("cpu"), None)
    assert all(dtype == torch.float32 for dtype, _, _ in seen)
    assert all(kernel_last == fp32_layout for _, _, kernel_last in seen)


@pytest.mark.parametrize("has_bf16", [True, False])
def test_auto_precision_is_what_device_py_resolves(
    model: DASR, lr_image: torch.Tensor, monkeypatch: pytest.MonkeyPatch, has_bf16: bool
) -> None:
    monkeypatch.setattr(dasrlib.device, "cpu_has_bf16", lambda: has_bf16)
    auto = upscale(lr_image, model, precision="auto", device="cpu")
    resolved = upscale(lr_image, model, precision="bf16" if has_bf16 else "fp32", device="cpu")
    assert torch.equal(auto, resolved)
    fp32 = upscale(lr_image, model, precision="fp32", device="cpu")
    assert (_residual_error(auto, fp32, lr_image) > 1e-3) == has_bf16


def test_cli_verbose_log_names_the_resolved_precision(
    model: DASR,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(dasrlib.device, "cpu_has_bf16", lambda: True)
    save_weights(model, tmp_path / "tiny.safetensors")
    write_png(tmp_path / "a.png", torch.rand(3, 9, 11, generator=torch.Generator().manual_seed(6)))
    argv = ["-v", "upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "out")]
    argv += ["--model", str(tmp_path / "tiny.safetensors"), "--device", "cpu"]
    with caplog.at_level(logging.INFO, logger="dasrlib.cli"):
        assert dasr_main(argv) == 0
    logged = [record.getMessage() for record in caplog.records if record.name == "dasrlib.cli"]
    line = describe_precision(torch.device("cpu"), "auto")
    assert "bfloat16" in line and any(line in message for message in logged)


def test_explicit_device_must_match_the_model(model: DASR) -> None:
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            upscale(torch.rand(3, 8, 8), model, device="cuda")
    out = upscale(torch.rand(3, 8, 8), model, device="cpu")
    assert out.shape == (3, 32, 32)


# -- editing v by physical values (Sec. 4.6) ---------------------------------------------------


def test_edit_vector_touches_only_the_named_slots() -> None:
    v = torch.rand(33, generator=torch.Generator().manual_seed(9))
    assert torch.equal(edit_vector(v, {}), v)
    edited = edit_vector(v, {"blur_sigma": 1.2, "jpeg_quality": 70})
    changed = torch.nonzero(edited != v).flatten().tolist()
    names = [SLOTS[i].name for i in changed]
    assert names == ["blur1_sigma_x", "blur1_sigma_y", "jpeg1_quality"]
    decoded = decode_vector(edited)
    assert decoded["blur1_sigma_x"] == pytest.approx(1.2, abs=1e-5)
    assert decoded["blur1_sigma_y"] == pytest.approx(1.2, abs=1e-5)
    assert decoded["jpeg1_quality"] == pytest.approx(70, abs=1e-4)


def test_edit_noise_level_uses_the_noise_type_range() -> None:
    v = torch.zeros(33)
    gaussian = edit_vector(v, {"noise_level": 15.5, "noise_type": "gaussian"})
    poisson = edit_vector(v, {"noise_level": 1.525, "noise_type": "poisson"})
    index = next(slot.index for slot in SLOTS if slot.name == "noise1_level")
    assert gaussian[index] == pytest.approx((15.5 - 1) / (30 - 1))  # severe Gaussian [1, 30]
    assert poisson[index] == pytest.approx((1.525 - 0.05) / (3.0 - 0.05))  # severe Poisson
    assert decode_vector(poisson)["noise1_type"] == "poisson"


def test_unknown_parameter_lists_the_valid_names() -> None:
    with pytest.raises(ValueError, match="blur1_sigma_x.*noise_level"):
        edit_vector(torch.zeros(33), {"blurr_sigma": 1.0})


def test_fig5_edits_move_blur_and_noise_to_the_range_ends(model: DASR) -> None:
    v = torch.rand(33, generator=torch.Generator().manual_seed(10))
    edits = list(fig5_edits(v).values())
    assert [e["blur1_sigma_x"] for e in edits[:2]] == [3.0, 0.2]  # severe sigma range
    up, down = (decode_vector(edit_vector(v, e))["noise1_level"] for e in edits[2:])
    assert up > down


# -- which model ---------------------------------------------------------------------------------


def test_missing_default_model_says_where_it_looked_and_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MODEL_ROOT_ENV, str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError) as error:
        default_model_path()
    message = str(error.value)
    assert str(tmp_path / "results/models/dasr/model.safetensors") in message
    assert "--official" in message and "--model" in message
    published = tmp_path / "results/models/dasr/model.safetensors"
    published.parent.mkdir(parents=True)
    published.write_bytes(b"")
    assert default_model_path() == published


def test_loaded_image_fields_are_kept(model: DASR) -> None:
    image = LoadedImage(
        rgb=torch.rand(3, 5, 6), alpha=None, bit_depth=8, was_gray=False, path=Path("x.png")
    )
    result = upscale(image, model)
    assert isinstance(result, UpscaledImage)
    assert result.path == Path("x.png") and result.alpha is None and result.bit_depth == 8
    assert result.rgb.dtype == torch.float32 and result.rgb.shape == (3, 20, 24)
