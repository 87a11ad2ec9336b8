"""Checkpoints: safetensors round trip, .pth unwrapping, errors, official and spandrel import."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from dasrlib.models.build import build_model
from dasrlib.models.checkpoints import (
    CheckpointError,
    import_official_dasr,
    load_model,
    load_third_party,
    load_weights,
    read_metadata,
    read_state_dict,
    save_weights,
)
from dasrlib.models.dasr import DASR
from dasrlib.models.discriminator import UNetDiscriminatorSN
from dasrlib.models.experts import SRResNet

TINY_DASR = {"num_experts": 3, "num_feat": 8, "num_block": 2, "predictor_feat": 8}


def test_safetensors_round_trip_rebuilds_the_model(tmp_path, generator):
    model = DASR(mixing="dcd", **TINY_DASR, generator=generator).eval()
    with torch.no_grad():
        model.experts.phi_map.normal_(generator=generator)
    path = save_weights(model, tmp_path / "nested" / "dasr.safetensors", metadata={"step": 7})
    assert read_metadata(path)["metadata"] == {"step": 7}
    assert read_metadata(path)["architecture"]["options"]["mixing"] == "dcd"
    loaded = load_model(path)
    assert isinstance(loaded, DASR) and loaded.mixing == "dcd"
    image = torch.rand(2, 3, 8, 8, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(loaded(image).sr, model(image).sr, rtol=0, atol=0)
    assert not list(tmp_path.glob("nested/*.tmp"))


def test_save_weights_casts_to_the_requested_dtype(tmp_path, generator):
    model = SRResNet(num_feat=8, num_block=1, generator=generator)
    path = save_weights(model, tmp_path / "half.safetensors", dtype=torch.float16)
    assert {t.dtype for t in read_state_dict(path).values()} == {torch.float16}
    fresh = load_weights(SRResNet(num_feat=8, num_block=1), path)
    torch.testing.assert_close(fresh.conv_first.weight, model.conv_first.weight.half().float())


def test_discriminator_round_trip_keeps_spectral_norm_state(tmp_path, generator):
    torch.manual_seed(0)
    model = UNetDiscriminatorSN(num_feat=8)
    path = save_weights(model, tmp_path / "d.safetensors")
    assert "conv1.weight_orig" in read_state_dict(path)
    loaded = load_model(path)
    image = torch.rand(1, 3, 16, 16, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(loaded(image), model.eval()(image))


def test_pth_files_are_unwrapped_preferring_ema(tmp_path, generator):
    raw = SRResNet(num_feat=8, num_block=1, generator=generator)
    ema = SRResNet(num_feat=8, num_block=1, generator=generator)
    path = tmp_path / "net_g_5000.pth"
    torch.save({"params": raw.state_dict(), "params_ema": ema.state_dict()}, path)
    model = load_weights(SRResNet(num_feat=8, num_block=1), path)
    torch.testing.assert_close(model.conv_first.weight, ema.conv_first.weight)
    model = load_weights(SRResNet(num_feat=8, num_block=1), path, prefer_ema=False)
    torch.testing.assert_close(model.conv_first.weight, raw.conv_first.weight)
    ddp = tmp_path / "ddp.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in raw.state_dict().items()}}, ddp)
    torch.testing.assert_close(
        load_weights(SRResNet(num_feat=8, num_block=1), ddp).conv_last.bias, raw.conv_last.bias
    )


def test_mismatched_files_name_the_file_and_the_keys(tmp_path, generator):
    state = SRResNet(num_feat=8, num_block=1, generator=generator).state_dict()
    del state["conv_hr.bias"]
    state["extra.weight"] = torch.zeros(1)
    state["conv_last.weight"] = torch.zeros(3, 8, 5, 5)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as error:
        load_weights(SRResNet(num_feat=8, num_block=1), path)
    message = str(error.value)
    assert str(path) in message
    assert "conv_hr.bias" in message and "extra.weight" in message
    assert "conv_last.weight: file (3, 8, 5, 5) vs model (3, 8, 3, 3)" in message
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_weights(SRResNet(), tmp_path / "nowhere.pth")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="notes.txt"):
        load_weights(SRResNet(), tmp_path / "notes.txt")
    plain = tmp_path / "plain.safetensors"
    save_weights(torch.nn.Linear(2, 2), plain)
    with pytest.raises(CheckpointError, match="no architecture"):
        load_model(plain)


# -- official DASR import ---------------------------------------------------------------------

OFFICIAL_LAYERS = ["conv_first"] + [f"body.{i}.conv{j}" for i in range(2) for j in (1, 2)]
OFFICIAL_LAYERS += ["upconv1", "upconv2", "conv_hr", "conv_last"]


def _official_state(generator: torch.Generator, n: int = 3, nf: int = 8, pnf: int = 8):
    """Random tensors in the reference layout (MSRResNetDynamic + Degradation_Predictor)."""
    shapes = {
        "conv_first": (nf, 3),
        "upconv1": (4 * nf, nf),
        "upconv2": (4 * nf, nf),
        "conv_hr": (nf, nf),
        "conv_last": (3, nf),
    }
    g_state: dict[str, Tensor] = {}
    for name in OFFICIAL_LAYERS:
        out_c, in_c = shapes.get(name, (nf, nf))
        g_state[f"{name}.weight"] = 0.1 * torch.randn(n, out_c, in_c, 3, 3, generator=generator)
        g_state[f"{name}.bias"] = 0.05 * torch.randn(n, out_c, generator=generator)
    p_state: dict[str, Tensor] = {}
    channels = [3, pnf, pnf, pnf, pnf, pnf, 33]
    for i in range(6):
        w = 0.1 * torch.randn(channels[i + 1], channels[i], 5, 5, generator=generator)
        p_state[f"ConvNet.{2 * i}.weight"] = w
        p_state[f"ConvNet.{2 * i}.bias"] = 0.05 * torch.randn(channels[i + 1], generator=generator)
    p_state["MappingNet.0.weight"] = 0.3 * torch.randn(15, 33, generator=generator)
    p_state["MappingNet.0.bias"] = 0.1 * torch.randn(15, generator=generator)
    p_state["MappingNet.1.weight"] = 0.3 * torch.randn(n, 15, generator=generator)
    p_state["MappingNet.1.bias"] = 0.3 + 0.1 * torch.randn(n, generator=generator)
    return g_state, p_state


def _reference_forward(g: dict[str, Tensor], p: dict[str, Tensor], lr: Tensor) -> Tensor:
    """An independent re-statement of the reference network for one image [1, 3, H, W]."""
    h = lr
    for i in range(6):
        h = F.conv2d(
            h,
            p[f"ConvNet.{2 * i}.weight"],
            p[f"ConvNet.{2 * i}.bias"],
            stride=2 if i == 3 else 1,
            padding=2,
        )
        h = F.leaky_relu(h, 0.2)
    v = h.mean(dim=(2, 3))
    a = F.linear(
        F.linear(v, p["MappingNet.0.weight"], p["MappingNet.0.bias"]),
        p["MappingNet.1.weight"],
        p["MappingNet.1.bias"],
    )[0]

    def conv(name: str, x: Tensor) -> Tensor:
        weight = (a.view(-1, 1, 1, 1, 1) * g[f"{name}.weight"]).sum(0)
        bias = (a.view(-1, 1) * g[f"{name}.bias"]).sum(0)
        return F.conv2d(x, weight, bias, padding=1)

    out = F.leaky_relu(conv("conv_first", lr), 0.1)
    for i in range(2):
        out = out + conv(f"body.{i}.conv2", F.relu(conv(f"body.{i}.conv1", out)))
    out = F.leaky_relu(F.pixel_shuffle(conv("upconv1", out), 2), 0.1)
    out = F.leaky_relu(F.pixel_shuffle(conv("upconv2", out), 2), 0.1)
    out = conv("conv_last", F.leaky_relu(conv("conv_hr", out), 0.1))
    return out + F.interpolate(lr, scale_factor=4, mode="bilinear", align_corners=False)


def test_official_checkpoints_import_and_match_a_reference_forward(tmp_path, generator):
    g_state, p_state = _official_state(generator)
    torch.save({"params": g_state}, tmp_path / "net_g.pth")
    torch.save({"params_ema": p_state}, tmp_path / "net_p.pth")
    model = import_official_dasr(tmp_path / "net_g.pth", tmp_path / "net_p.pth")
    assert model.num_experts == 3 and model.scale == 4
    lr = torch.rand(2, 3, 12, 12, generator=generator)
    with torch.no_grad():
        ours = model(lr).sr
        for index in range(2):
            reference = _reference_forward(g_state, p_state, lr[index : index + 1])
            assert reference.abs().max() > 0.5  # a non-trivial network
            torch.testing.assert_close(ours[index : index + 1], reference, rtol=0, atol=1e-5)


def test_official_import_names_the_file_and_the_bad_keys(tmp_path, generator):
    g_state, p_state = _official_state(generator)
    torch.save({"params": p_state}, tmp_path / "net_p.pth")
    broken = dict(g_state)
    del broken["conv_hr.bias"]
    broken["conv_extra.weight"] = torch.zeros(1)
    torch.save({"params": broken}, tmp_path / "net_g.pth")
    with pytest.raises(CheckpointError) as error:
        import_official_dasr(tmp_path / "net_g.pth", tmp_path / "net_p.pth")
    message = str(error.value)
    assert "net_g.pth" in message and "conv_hr.bias" in message and "conv_extra" in message
    torch.save({"params": g_state}, tmp_path / "net_g.pth")
    p_state["MappingNet.1.weight"] = torch.zeros(4, 15)
    p_state["MappingNet.1.bias"] = torch.zeros(4)
    torch.save({"params": p_state}, tmp_path / "net_p.pth")
    with pytest.raises(CheckpointError, match=re.escape("4 weights")):
        import_official_dasr(tmp_path / "net_g.pth", tmp_path / "net_p.pth")


# -- third-party models through spandrel ----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("rrdb", {"num_feat": 8, "num_block": 1}),
        ("swinir", {"embed_dim": 12, "depths": [1], "num_heads": [2], "window_size": 8}),
    ],
)
def test_third_party_checkpoints_load_through_spandrel(tmp_path: Path, generator, name, options):
    torch.manual_seed(0)
    model = build_model(name, **options).eval()
    path = tmp_path / f"{name}.pth"
    torch.save({"params_ema": model.state_dict()}, path)
    loaded = load_third_party(path)
    image = torch.rand(1, 3, 16, 16, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(loaded(image), model(image))
    with pytest.raises(CheckpointError, match="x4 model, expected x2"):
        load_third_party(path, scale=2)


def test_unknown_third_party_file_is_named(tmp_path):
    path = tmp_path / "mystery.pth"
    torch.save({"encoder.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(CheckpointError, match="mystery.pth"):
        load_third_party(path)


@pytest.mark.parametrize("damage", ["empty", "truncated", "not safetensors"])
def test_unreadable_safetensors_names_the_file(tmp_path: Path, damage: str) -> None:
    good = save_weights(SRResNet(num_feat=4, num_block=1), tmp_path / "good.safetensors")
    bad = tmp_path / "bad.safetensors"
    data = good.read_bytes()
    bad.write_bytes({"empty": b"", "truncated": data[:-10], "not safetensors": b"{" * 100}[damage])
    for reader in (read_state_dict, read_metadata, load_model):
        with pytest.raises(CheckpointError, match=re.escape(str(bad))):
            reader(bad)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path: Path, suffix: str) -> None:
    model = SRResNet(num_feat=4, num_block=1)
    with torch.no_grad():
        model.conv_last.bias[0] = float("inf")
    path = tmp_path / f"diverged{suffix}"
    if suffix == ".pth":
        torch.save(model.state_dict(), path)
    else:
        save_weights(model, path)
    with pytest.raises(CheckpointError, match=r"diverged.*NaN or Inf.*conv_last\.bias"):
        load_weights(SRResNet(num_feat=4, num_block=1), path)
