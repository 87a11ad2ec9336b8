"""Degradation space: kernels, operations, the level walk and its randomness (Sec. 3.2)."""

from __future__ import annotations

import dataclasses
import functools
import io
import math
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from dasrlib.degradation.kernels import filter2d, gaussian_kernels, sinc_kernels
from dasrlib.degradation.levels import LEVEL_SPECS, Level, LevelSpec, level_spec
from dasrlib.degradation.ops import (
    bicubic_downsample,
    bilinear_resize,
    gaussian_noise,
    jpeg_compress,
    poisson_noise,
    quantize_8bit,
    resize_per_sample,
    usm_sharpen,
)
from dasrlib.degradation.pipeline import degrade

HR = 64
BATCH = 4


def _smooth_images(batch: int, size: int, seed: int) -> torch.Tensor:
    """Natural-ish images: random coarse colours, bilinearly enlarged, plus fine texture."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, size // 8, size // 8, generator=g)
    img = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic")
    img = img + 0.08 * torch.rand(batch, 3, size, size, generator=g)
    return img.clamp(0, 1)


def _photo(size: int = 128) -> np.ndarray:
    from skimage import data

    return data.astronaut()[80 : 80 + size, 160 : 160 + size].copy()


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / torch.mean((a - b) ** 2)))


@pytest.fixture(scope="module")
def hr() -> torch.Tensor:
    return _smooth_images(BATCH, HR, seed=1)


def _force(spec: LevelSpec, **probabilities: Any) -> LevelSpec:
    """Copy of `spec` with every probability of the named kinds forced (blur, noise, ...)."""
    stages = []
    for stage in spec.stages:
        fields = {}
        for name in ("blur", "noise", "jpeg"):
            op = getattr(stage, name)
            if op is not None and name in probabilities:
                fields[name] = dataclasses.replace(op, prob=probabilities[name])
        if stage.noise is not None and "gaussian" in probabilities:
            noise = fields.get("noise", stage.noise)
            fields["noise"] = dataclasses.replace(noise, gaussian_prob=probabilities["gaussian"])
        if stage.noise is not None and "gray" in probabilities:
            noise = fields.get("noise", stage.noise)
            fields["noise"] = dataclasses.replace(noise, gray_prob=probabilities["gray"])
        if stage.blur is not None and "iso" in probabilities:
            blur = fields.get("blur", stage.blur)
            fields["blur"] = dataclasses.replace(blur, iso_prob=probabilities["iso"])
        if stage.resize is not None and "resize" in probabilities:
            fields["resize"] = dataclasses.replace(stage.resize, probs=probabilities["resize"])
        stages.append(dataclasses.replace(stage, **fields))
    final = spec.final
    if final.sinc is not None and "sinc" in probabilities:
        final = dataclasses.replace(
            final, sinc=dataclasses.replace(final.sinc, prob=probabilities["sinc"])
        )
    if final.jpeg is not None and "jpeg" in probabilities:
        final = dataclasses.replace(
            final, jpeg=dataclasses.replace(final.jpeg, prob=probabilities["jpeg"])
        )
    if "sinc_first" in probabilities:
        final = dataclasses.replace(final, sinc_first_prob=probabilities["sinc_first"])
    return dataclasses.replace(spec, stages=tuple(stages), final=final)


# ----------------------------------------------------------------------------- level data


def test_levels_carry_design_numbers() -> None:
    weak, standard, severe = (LEVEL_SPECS[lv] for lv in (Level.WEAK, Level.STANDARD, Level.SEVERE))
    assert [len(s.stages) for s in (weak, standard, severe)] == [1, 1, 2]
    assert weak.stages[0].blur.sigma == (0.2, 0.8)
    assert standard.stages[0].resize.probs == (0.3, 0.4, 0.3)
    assert severe.stages[0].resize.scale == (0.15, 1.5)
    assert severe.stages[1].blur.prob == 0.8
    assert severe.stages[1].noise.gaussian_sigma == (1.0, 25.0)
    assert severe.stages[1].noise.poisson_scale == (0.05, 2.5)
    assert severe.stages[1].jpeg is None and severe.final.jpeg.quality == (30.0, 95.0)
    assert severe.final.sinc.prob == 0.8 and severe.final.sinc_first_prob == 0.5
    assert weak.final.sinc is None and weak.final.jpeg is None
    assert all(s.stages[0].noise.gray_prob == 0.4 for s in (weak, standard, severe))
    assert LEVEL_SPECS[Level.BICUBIC].stages == ()
    with pytest.raises(ValueError, match="unknown degradation level"):
        level_spec("medium")


# ----------------------------------------------------------------------------- kernels


def test_gaussian_kernels_sum_to_one_and_isotropic_ones_are_symmetric() -> None:
    sizes = torch.tensor([7, 13, 21, 21])
    sigma_x = torch.tensor([0.3, 1.5, 3.0, 2.5])
    sigma_y = torch.tensor([0.3, 1.5, 3.0, 0.4])
    theta = torch.tensor([0.0, 0.0, 0.0, 0.7])
    k = gaussian_kernels(sizes, sigma_x, sigma_y, theta)
    assert k.shape == (4, 21, 21)
    torch.testing.assert_close(k.sum(dim=(1, 2)), torch.ones(4))
    for i in range(3):  # isotropic: symmetric under transposition and flips
        torch.testing.assert_close(k[i], k[i].T)
        torch.testing.assert_close(k[i], k[i].flip(0))
        torch.testing.assert_close(k[i], k[i].flip(1))
    # support limited to the drawn size: a 7x7 kernel padded to 21 is zero outside the centre
    assert float(k[0].abs().sum() - k[0, 7:14, 7:14].abs().sum()) == 0.0
    # anisotropic and rotated: not symmetric under transposition, but point-symmetric
    assert not torch.allclose(k[3], k[3].T)
    torch.testing.assert_close(k[3], k[3].flip(0).flip(1))


def test_gaussian_kernel_matches_the_closed_form() -> None:
    sx, sy, theta = 2.0, 0.8, 0.5
    k = gaussian_kernels(
        torch.tensor([21]), torch.tensor([sx]), torch.tensor([sy]), torch.tensor([theta])
    )[0]
    u = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    inv = np.linalg.inv(u @ np.diag([sx**2, sy**2]) @ u.T)
    ax = np.arange(-10, 11)
    xx, yy = np.meshgrid(ax, ax)
    grid = np.stack([xx, yy], axis=-1)
    ref = np.exp(-0.5 * np.einsum("...i,ij,...j->...", grid, inv, grid))
    np.testing.assert_allclose(k.numpy(), ref / ref.sum(), rtol=1e-4, atol=1e-7)


def test_sinc_kernels_sum_to_one_and_follow_the_bessel_formula() -> None:
    from scipy import special

    k = sinc_kernels(torch.tensor([9, 21]), torch.tensor([math.pi / 3, 2.5]))
    assert k.shape == (2, 21, 21)
    torch.testing.assert_close(k.sum(dim=(1, 2)), torch.ones(2))
    torch.testing.assert_close(k[1], k[1].T)
    ax = np.arange(-10, 11)
    r = np.sqrt(ax[:, None] ** 2 + ax[None, :] ** 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = 2.5 * special.j1(2.5 * r) / (2 * np.pi * r)
    ref[10, 10] = 2.5**2 / (4 * np.pi)
    np.testing.assert_allclose(k[1].numpy(), ref / ref.sum(), rtol=1e-4, atol=1e-6)


def test_filter2d_applies_each_sample_its_own_kernel() -> None:
    img = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    delta = torch.zeros(5, 5)
    delta[2, 2] = 1
    box = torch.full((5, 5), 1 / 25)
    out = filter2d(img, torch.stack([delta, box]))
    torch.testing.assert_close(out[0], img[0])
    torch.testing.assert_close(out[1], filter2d(img[1:], box)[0])
    # the box filter of a constant image is the constant (reflect padding keeps the borders)
    flat = torch.full((1, 3, 8, 8), 0.3)
    torch.testing.assert_close(filter2d(flat, box), flat)


# ----------------------------------------------------------------------------- operations


def test_resize_uses_each_sample_mode() -> None:
    img = torch.rand(3, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    out = resize_per_sample(img, (10, 10), torch.tensor([0, 1, 2]))
    expected = [
        torch.nn.functional.interpolate(img[0:1], size=(10, 10), mode="area"),
        torch.nn.functional.interpolate(
            img[1:2], size=(10, 10), mode="bilinear", align_corners=False
        ),
        torch.nn.functional.interpolate(
            img[2:3], size=(10, 10), mode="bicubic", align_corners=False
        ),
    ]
    torch.testing.assert_close(out, torch.cat(expected))


@pytest.mark.parametrize(
    ("shape", "size"),
    [((64, 64), (16, 16)), ((37, 53), (101, 29)), ((513, 340), (250, 1000)), ((5, 7), (5, 7))],
)
def test_bilinear_resize_matches_torch(shape: tuple[int, int], size: tuple[int, int]) -> None:
    img = torch.rand(2, 3, *shape, generator=torch.Generator().manual_seed(0))
    expected = torch.nn.functional.interpolate(img, size=size, mode="bilinear", align_corners=False)
    # torch computes source positions in float32, bilinear_resize in float64
    torch.testing.assert_close(bilinear_resize(img, size), expected, atol=1e-4, rtol=0)


def _at_threads(threads: int, fn: Any) -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def _degrade_seed_1(hr: torch.Tensor, level: Level) -> torch.Tensor:
    return degrade(hr, level, generator=torch.Generator().manual_seed(1))[0]


def test_bilinear_resize_and_degrade_are_the_same_on_any_thread_count() -> None:
    """torch's CPU bilinear kernel rounds some pixels differently on 1 and 2 threads."""
    img = torch.rand(1, 3, 480, 500, generator=torch.Generator().manual_seed(0))
    one, two = (_at_threads(n, lambda: bilinear_resize(img, (300, 312))) for n in (1, 2))
    assert torch.equal(one, two)
    # with torch's kernel, 2106 (weak) and 10 (standard) of these LR values differ
    hr = _smooth_images(4, 384, seed=3)
    for level in (Level.WEAK, Level.STANDARD):
        one, two = (_at_threads(n, functools.partial(_degrade_seed_1, hr, level)) for n in (1, 2))
        assert torch.equal(one, two), level


@pytest.mark.parametrize("sigma", [5.0, 20.0])
def test_gaussian_noise_level_matches_request(sigma: float) -> None:
    flat = torch.full((2, 3, 96, 96), 0.5)
    g = torch.Generator().manual_seed(3)
    noise = gaussian_noise(
        flat, torch.tensor([sigma, sigma]), torch.tensor([False, True]), generator=g
    )
    measured = (noise * 255).std(dim=(1, 2, 3))
    assert torch.all((measured - sigma).abs() < 0.1 * sigma), measured
    torch.testing.assert_close(noise[1, 0], noise[1, 2])  # gray: one plane for all channels
    assert not torch.allclose(noise[0, 0], noise[0, 2])


def test_poisson_noise_follows_shot_noise_and_gray_flag() -> None:
    flat = torch.full((2, 3, 96, 96), 0.5)
    g = torch.Generator().manual_seed(4)
    noise = poisson_noise(flat, torch.tensor([1.0, 2.0]), torch.tensor([False, True]), generator=g)
    # one distinct level -> vals = 1: counts ~ Poisson(0.5), noise std = sqrt(0.5) * scale
    std = noise.std(dim=(1, 2, 3))
    expected = torch.tensor([math.sqrt(0.5), 2 * math.sqrt(0.5)])
    assert torch.all((std - expected).abs() < 0.1 * expected), std
    torch.testing.assert_close(noise[1, 0], noise[1, 1])


def _pil_jpeg(photo: np.ndarray, quality: int) -> torch.Tensor:
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="JPEG", quality=quality)
    return torch.from_numpy(np.array(Image.open(buf))).permute(2, 0, 1).float() / 255


@pytest.mark.parametrize("size", [128, 75])
def test_jpeg_agrees_with_pillow_and_degrades_with_quality(size: int) -> None:
    photo = _photo(128)[:size, :size].copy()
    x = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
    original = x[0]
    errors = []
    for quality in (10, 30, 60, 90):
        pil = _pil_jpeg(photo, quality)
        ours = jpeg_compress(x, torch.tensor([float(quality)]))[0]
        torch.testing.assert_close(ours, quantize_8bit(ours))  # decoded samples are 8-bit
        assert _psnr(ours, pil) > 40.0, quality
        # most pixels identical, the rest off by about one level (libjpeg's integer arithmetic)
        assert float(((ours - pil).abs() < 1e-6).float().mean()) > 0.5, quality
        assert abs(_psnr(ours, original) - _psnr(pil, original)) < 0.3, quality
        errors.append(float(((ours - original) ** 2).mean()))
    assert errors[0] > errors[1] > errors[2] > errors[3]


def test_jpeg_agrees_with_kornias_codec() -> None:
    from kornia.enhance import jpeg_codec_differentiable

    photo = torch.from_numpy(_photo(128)).permute(2, 0, 1).float()[None] / 255
    x = photo.repeat(3, 1, 1, 1)
    quality = torch.tensor([25.0, 50.0, 90.0])
    ours = jpeg_compress(x, quality)
    theirs = quantize_8bit(jpeg_codec_differentiable(x, quality))
    for i in range(3):
        assert _psnr(ours[i], theirs[i]) > 38.0


def test_jpeg_quality_tables_follow_libjpeg_scaling() -> None:
    from dasrlib.degradation.jpeg import quantization_tables

    luma, chroma = quantization_tables(torch.tensor([50.0, 100.0, 10.0, 75.0]))
    assert luma[0, 0, 0] == 16 and chroma[0, 0, 0] == 17  # quality 50: the Annex K tables
    assert torch.all(luma[1] == 1) and torch.all(chroma[1] == 1)  # quality 100
    assert luma[2, 0, 0] == 80 and luma[2, 7, 7] == 255  # 16 * 500 / 100; clipped at 255
    assert luma[3, 0, 0] == 8  # (16 * 50 + 50) // 100


def test_jpeg_accepts_sizes_not_multiple_of_16_and_per_sample_quality() -> None:
    photo = torch.from_numpy(_photo(64)).permute(2, 0, 1).float()[None] / 255
    x = photo[..., :37, :23].repeat(2, 1, 1, 1)
    out = jpeg_compress(x, torch.tensor([20.0, 95.0]))
    assert out.shape == x.shape
    assert _psnr(out[0], x[0]) < _psnr(out[1], x[1])


def test_usm_sharpen_boosts_edges_and_keeps_flat_regions() -> None:
    img = torch.full((1, 3, 64, 64), 0.2)
    img[..., :, 32:] = 0.8
    out = usm_sharpen(img)
    assert out.shape == img.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert float(out[0, 0, 10, 31]) < 0.2 and float(out[0, 0, 10, 32]) > 0.8  # overshoot at edge
    flat = torch.full((1, 3, 64, 64), 0.4)
    torch.testing.assert_close(usm_sharpen(flat), flat)


def test_usm_sharpen_matches_the_2d_definition() -> None:
    from dasrlib.degradation.kernels import opencv_gaussian_kernel

    img = _smooth_images(1, 64, seed=5)
    kernel = opencv_gaussian_kernel(51)
    assert kernel.shape == (51, 51)
    blur = filter2d(img, kernel)
    residual = img - blur
    mask = filter2d((residual.abs() * 255 > 10).float(), kernel)
    expected = mask * (img + 0.5 * residual).clamp(0, 1) + (1 - mask) * img
    torch.testing.assert_close(usm_sharpen(img), expected, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- the level walk


@pytest.mark.parametrize("level", list(Level))
def test_output_shape_range_and_8bit_levels(level: Level, hr: torch.Tensor) -> None:
    lr, record = degrade(hr, level, generator=torch.Generator().manual_seed(0))
    assert lr.shape == (BATCH, 3, HR // 4, HR // 4) and lr.dtype == torch.float32
    assert float(lr.min()) >= 0 and float(lr.max()) <= 1
    torch.testing.assert_close(lr * 255, (lr * 255).round(), atol=1e-4, rtol=0)
    assert record.level is level and record.batch_size == BATCH
    v = record.vector()
    assert v.shape == (BATCH, 33) and float(v.min()) >= 0 and float(v.max()) <= 1


def test_bicubic_level_is_plain_bicubic_downsampling(hr: torch.Tensor) -> None:
    lr, _ = degrade(hr, "bicubic", generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(lr, quantize_8bit(bicubic_downsample(hr)))


@pytest.mark.parametrize("level", [Level.WEAK, Level.SEVERE])
def test_same_seed_same_output_different_seed_different(level: Level, hr: torch.Tensor) -> None:
    a, rec_a = degrade(hr, level, generator=torch.Generator().manual_seed(7))
    b, rec_b = degrade(hr, level, generator=torch.Generator().manual_seed(7))
    c, _ = degrade(hr, level, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert rec_a.to_dicts() == rec_b.to_dicts()
    assert not torch.equal(a, c)


def test_global_random_state_is_untouched(hr: torch.Tensor) -> None:
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    degrade(hr, "severe", generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.rand(3), before)


def test_parameters_are_drawn_per_sample() -> None:
    hr = _smooth_images(16, 32, seed=2)
    _, record = degrade(hr, "severe", generator=torch.Generator().manual_seed(0))
    stage = record.stages[0]
    assert len(set(stage.blur.sigma_x.tolist())) == 16
    assert len(set(stage.jpeg.quality.tolist())) == 16
    assert len(set(stage.noise.level.tolist())) == 16
    assert len(set(stage.resize.mode.tolist())) > 1
    assert len(set(record.final.mode.tolist())) > 1
    assert 0 < int(record.final.sinc_first.sum()) < 16


def test_every_branch_runs_forced_on(hr: torch.Tensor) -> None:
    spec = _force(
        level_spec("severe"),
        blur=1.0,
        noise=1.0,
        jpeg=1.0,
        sinc=1.0,
        iso=0.0,
        gaussian=1.0,
        gray=1.0,
        resize=(1.0, 0.0, 0.0),
        sinc_first=1.0,
    )
    lr, record = degrade(hr, "severe", generator=torch.Generator().manual_seed(0), spec=spec)
    params = record.to_dicts()
    for p in params:
        assert p["blur1_applied"] and p["blur2_applied"] and p["sinc_applied"]
        assert not p["blur1_isotropic"] and p["noise1_type"] == "gaussian" and p["noise2_gray"]
        assert p["resize1_direction"] == "up" and p["resize1_scale"] >= 1.0
        assert p["final_order"] == "resize_sinc_then_jpeg" and p["jpeg2_applied"]
    assert lr.shape == (BATCH, 3, HR // 4, HR // 4)


def test_every_branch_runs_forced_off(hr: torch.Tensor) -> None:
    spec = _force(
        level_spec("severe"),
        blur=0.0,
        noise=0.0,
        jpeg=0.0,
        sinc=0.0,
        iso=1.0,
        gaussian=0.0,
        gray=0.0,
        resize=(0.0, 1.0, 0.0),
        sinc_first=0.0,
    )
    lr, record = degrade(hr, "severe", generator=torch.Generator().manual_seed(0), spec=spec)
    for p in record.to_dicts():
        assert not (p["blur1_applied"] or p["blur2_applied"] or p["sinc_applied"])
        assert not (p["noise1_applied"] or p["jpeg1_applied"] or p["jpeg2_applied"])
        assert p["blur1_isotropic"] and p["blur1_rotation"] == 0.0
        assert p["blur1_sigma_y"] == p["blur1_sigma_x"]
        assert p["resize1_direction"] == "down" and p["resize1_scale"] <= 1.0
        assert p["final_order"] == "jpeg_then_resize_sinc"
    # with every random operation off, LR is only resizing of the HR
    assert lr.shape == (BATCH, 3, HR // 4, HR // 4)
    v = record.vector()
    assert float(v[:, [0, 1, 2, 3, 4, 8, 9, 18, 22, 26, 27]].abs().sum()) == 0.0


def test_poisson_branch_and_noise_off_branch_change_the_output(hr: torch.Tensor) -> None:
    base = _force(level_spec("weak"), blur=0.0, jpeg=0.0, resize=(0.0, 0.0, 1.0))
    clean, _ = degrade(
        hr, "weak", generator=torch.Generator().manual_seed(0), spec=_force(base, noise=0.0)
    )
    poisson, rec = degrade(
        hr, "weak", generator=torch.Generator().manual_seed(0), spec=_force(base, gaussian=0.0)
    )
    assert all(p["noise1_type"] == "poisson" for p in rec.to_dicts())
    assert not torch.equal(clean, poisson)
    assert float(rec.vector()[:, 21].min()) == 1.0  # one-hot Poisson


def test_psnr_falls_from_weak_to_standard_to_severe() -> None:
    hr = _smooth_images(8, HR, seed=11)
    reference = quantize_8bit(bicubic_downsample(hr))
    mean_psnr = {}
    for level in (Level.WEAK, Level.STANDARD, Level.SEVERE):
        values = []
        for seed in range(3):
            lr, _ = degrade(hr, level, generator=torch.Generator().manual_seed(seed))
            values += [_psnr(lr[i], reference[i]) for i in range(hr.shape[0])]
        mean_psnr[level] = sum(values) / len(values)
    assert mean_psnr[Level.WEAK] > mean_psnr[Level.STANDARD] > mean_psnr[Level.SEVERE], mean_psnr


def test_degrade_rejects_bad_input(hr: torch.Tensor) -> None:
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="divisible"):
        degrade(hr[..., :62], "weak", generator=g)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        degrade(hr[:, :1], "weak", generator=g)
    with pytest.raises(ValueError, match="spec is for level"):
        degrade(hr, "weak", generator=g, spec=level_spec("severe"))


def test_to_dicts_is_json_serialisable(hr: torch.Tensor) -> None:
    import json

    _, record = degrade(hr, "severe", generator=torch.Generator().manual_seed(0))
    dicts = record.to_dicts()
    assert len(dicts) == BATCH
    assert json.loads(json.dumps(dicts)) == dicts
    assert {"blur1_sigma_x", "noise2_level", "jpeg2_quality", "sinc_omega_c", "final_mode"} <= set(
        dicts[0]
    )


def test_categorical_draws_follow_the_probabilities() -> None:
    from dasrlib.degradation.pipeline import _categorical

    g = torch.Generator().manual_seed(0)
    counts = torch.bincount(_categorical(g, 20000, (0.3, 0.3, 0.4)), minlength=3) / 20000
    torch.testing.assert_close(counts, torch.tensor([0.3, 0.3, 0.4]), atol=0.015, rtol=0)
    assert torch.all(_categorical(g, 100, (0.0, 1.0, 0.0)) == 1)
    assert torch.all(_categorical(g, 100, (0.0, 0.0, 2.0)) == 2)
    with pytest.raises(ValueError, match="invalid probabilities"):
        _categorical(g, 1, (0.0, 0.0))
