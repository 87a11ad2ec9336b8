"""Metrics against independent implementations (scikit-image) and analytic fixtures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from dasrlib.metrics import (
    ALEXNET_CHECKPOINT_NAME,
    LPIPSMetric,
    LPIPSUnavailable,
    LPIPSWeightsNotFound,
    load_lpips,
    lpips_linear_weights_path,
    psnr_y,
    ssim_y,
    to_uint8_rgb,
)


def _pair(seed: int, shape: tuple[int, int] = (48, 40)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    hr = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    noise = rng.normal(0.0, 12.0, hr.shape)
    sr = np.clip(hr.astype(np.float64) + noise, 0, 255).round().astype(np.uint8)
    return sr, hr


def _y_skimage(img: np.ndarray, crop: int) -> np.ndarray:
    y = rgb2ycbcr(img)[..., 0]
    return y[crop:-crop, crop:-crop] if crop else y


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("crop", [0, 4])
def test_psnr_y_matches_skimage(seed: int, crop: int) -> None:
    sr, hr = _pair(seed)
    expected = peak_signal_noise_ratio(_y_skimage(hr, crop), _y_skimage(sr, crop), data_range=255)
    assert psnr_y(sr, hr, crop_border=crop) == pytest.approx(expected, abs=0.01)


def test_psnr_y_identical_images_is_inf() -> None:
    _, hr = _pair(3)
    assert psnr_y(hr, hr.copy()) == math.inf
    # A difference only inside the cropped border is invisible too.
    sr = hr.copy()
    sr[:4] = 255 - sr[:4]
    assert psnr_y(sr, hr, crop_border=4) == math.inf
    assert math.isfinite(psnr_y(sr, hr, crop_border=0))


@pytest.mark.parametrize("offset", [1, 5, 20])
def test_psnr_y_constant_offset_analytic(offset: int) -> None:
    rng = np.random.default_rng(offset)
    hr = rng.integers(30, 200, (32, 32, 3), dtype=np.uint8)
    sr = (hr.astype(np.int32) + offset).astype(np.uint8)
    # Y changes by offset * (65.481 + 128.553 + 24.966) / 255 = offset * 219 / 255 everywhere.
    dy = offset * 219.0 / 255.0
    assert psnr_y(sr, hr) == pytest.approx(20 * math.log10(255.0 / dy), abs=1e-9)


def test_float_tensor_inputs_match_uint8_inputs() -> None:
    sr, hr = _pair(4)
    sr_t = torch.from_numpy(sr).permute(2, 0, 1).float() / 255.0
    hr_t = torch.from_numpy(hr).permute(2, 0, 1).float() / 255.0
    assert np.array_equal(to_uint8_rgb(sr_t), sr)
    assert psnr_y(sr_t, hr_t) == pytest.approx(psnr_y(sr, hr), abs=1e-12)
    assert psnr_y(sr_t[None], hr_t[None]) == pytest.approx(psnr_y(sr, hr), abs=1e-12)
    assert ssim_y(sr_t[None], hr) == pytest.approx(ssim_y(sr, hr), abs=1e-12)
    # Out-of-range values are clamped and rounded like an 8-bit save.
    assert to_uint8_rgb(torch.full((3, 2, 2), 1.7)).max() == 255
    assert to_uint8_rgb(torch.full((3, 2, 2), 0.5 / 255 + 1e-4)).max() == 1


def test_bad_inputs_raise() -> None:
    sr, hr = _pair(5)
    with pytest.raises(ValueError, match="differs"):
        psnr_y(sr[:-4], hr)
    with pytest.raises(TypeError, match="uint8"):
        psnr_y(sr.astype(np.float32), hr)
    with pytest.raises(ValueError, match="single image"):
        psnr_y(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8))


@pytest.mark.parametrize("seed", [0, 1])
def test_ssim_y_matches_skimage_gaussian(seed: int) -> None:
    sr, hr = _pair(seed, (64, 56))
    expected = structural_similarity(
        _y_skimage(sr, 4),
        _y_skimage(hr, 4),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
    )
    assert ssim_y(sr, hr) == pytest.approx(expected, abs=1e-6)
    assert ssim_y(hr, hr) == pytest.approx(1.0, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# LPIPS: the real loading path with a random AlexNet saved where torchvision caches it.
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def random_alexnet_cache(tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.manual_seed(0)  # test entry point: the stand-in weights are reproducible
    path = checkpoints / ALEXNET_CHECKPOINT_NAME
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    return str(path)


def test_lpips_linear_layers_ship_with_the_package() -> None:
    assert lpips_linear_weights_path().is_file()


@pytest.mark.filterwarnings("ignore:.*weights.*:UserWarning")  # lpips's own torchvision call
@pytest.mark.filterwarnings("ignore:.*pretrained.*:UserWarning")
def test_lpips_runs_from_torch_cache_and_matches_lpips_package(random_alexnet_cache: str) -> None:
    import lpips

    metric = load_lpips(device="cpu")
    assert isinstance(metric, LPIPSMetric)
    assert str(metric.alexnet_path) == random_alexnet_cache
    sr, hr = _pair(6, (64, 64))
    value = metric(sr, hr)
    assert math.isfinite(value) and value > 0
    assert metric(hr, hr) == pytest.approx(0.0, abs=1e-6)
    # The lpips package's own loading path (torchvision reads the same cached file) agrees.
    reference = lpips.LPIPS(net="alex", version="0.1", verbose=False).eval()
    to_t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float() / 127.5 - 1  # noqa: E731
    with torch.no_grad():
        expected = float(reference(to_t(sr), to_t(hr)))
    assert value == pytest.approx(expected, rel=1e-5)
    # Tensors in [0, 1] give the same value as the uint8 images.
    sr_t = torch.from_numpy(sr).permute(2, 0, 1).float() / 255.0
    hr_t = torch.from_numpy(hr).permute(2, 0, 1).float() / 255.0
    assert metric(sr_t, hr_t) == pytest.approx(value, rel=1e-6)


def test_lpips_explicit_path(tmp_path, random_alexnet_cache: str) -> None:
    moved = tmp_path / "elsewhere.pth"
    moved.write_bytes(open(random_alexnet_cache, "rb").read())
    metric = LPIPSMetric(weights_path=moved, device="cpu")
    assert metric.alexnet_path == moved


def test_lpips_wrong_weights_file_names_it(tmp_path) -> None:
    wrong = tmp_path / "not_alexnet.pth"
    torch.save({"weight": torch.zeros(2)}, wrong)
    with pytest.raises(ValueError, match="not_alexnet.pth"):
        LPIPSMetric(weights_path=wrong, device="cpu")


def test_lpips_missing_weights_reports_na(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("DASR_WEIGHTS_DIR", str(tmp_path / "weights"))
    expected = tmp_path / "hub" / "checkpoints" / ALEXNET_CHECKPOINT_NAME
    converted = tmp_path / "weights" / "imagenet-alexnet.safetensors"
    result = load_lpips(device="cpu")
    assert isinstance(result, LPIPSUnavailable)
    assert str(result) == (
        f"n/a: weights not found at {converted} "
        "(get them: python -m dasrlib.data fetch imagenet-features)"
    )
    with pytest.raises(LPIPSWeightsNotFound, match=str(tmp_path / "nope.pth")):
        LPIPSMetric(weights_path=tmp_path / "nope.pth", device="cpu")
    # Nothing was downloaded.
    assert not expected.exists()
