"""Architectures: the paper's parameter and GMAC counts, key names, and a training step for each."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dasrlib.models.baselines import build_swinir
from dasrlib.models.build import build_model
from dasrlib.models.dasr import DASR, DASR_VARIANTS, DASRInference
from dasrlib.models.discriminator import UNetDiscriminatorSN
from dasrlib.models.experts import EDSR, SRResNet
from dasrlib.models.predictor import DegradationPredictor
from dasrlib.profiling import count_gmacs, count_parameters


def _meta(name: str, **options: object) -> nn.Module:
    return build_model(name, **options).to("meta")


@pytest.mark.parametrize(
    ("name", "millions"),
    [("srresnet", 1.518), ("edsr", 1.518), ("predictor", 0.468), ("dasr", 8.056), ("rrdb", 16.70)],
)
def test_parameter_counts_match_the_paper(name, millions):
    count = count_parameters(build_model(name))
    assert abs(count / 1e6 - millions) / millions < 1e-3, count


def test_dasr_parameters_are_n_experts_plus_predictor_and_weighting():
    expert = count_parameters(SRResNet())
    predictor = count_parameters(DegradationPredictor())
    for n in (3, 5, 9):
        weighting = 33 * 15 + 15 + 15 * n + n
        assert count_parameters(DASR(num_experts=n)) == n * expert + predictor + weighting


@pytest.mark.parametrize(
    ("name", "gmacs"),
    [("srresnet", 166.2), ("edsr", 130.0), ("predictor", 18.0), ("rrdb", 1175.0), ("dasr", 184.2)],
)
def test_gmacs_at_256_match_the_paper(name, gmacs):
    # Meta tensors: the FLOP counter sees every op's shapes and computes nothing.
    measured = count_gmacs(_meta(name), size=256)
    assert abs(measured - gmacs) / gmacs < 0.01, measured


def test_dasr_costs_one_expert_and_classical_moe_costs_n():
    expert = count_gmacs(_meta("srresnet"), size=64)
    predictor = count_gmacs(_meta("predictor"), size=64)
    dasr = count_gmacs(_meta("dasr"), size=64)
    mixing = 5 * count_parameters(SRResNet()) / 1e9
    assert dasr == pytest.approx(expert + predictor + mixing, rel=1e-4)
    moe = count_gmacs(_meta("dasr_moe"), size=64)
    assert moe == pytest.approx(5 * expert + predictor, rel=1e-3)


def test_srresnet_uses_basicsr_key_names():
    keys = set(SRResNet().state_dict())
    for key in (
        "conv_first.weight",
        "body.15.conv2.bias",
        "upconv1.weight",
        "upconv2.bias",
        "conv_hr.weight",
        "conv_last.bias",
    ):
        assert key in keys
    assert "upconv2.weight" not in SRResNet(scale=2).state_dict()
    edsr_keys = set(EDSR().state_dict())
    assert {"conv_after_body.weight", "upsample.0.weight", "upsample.2.weight"} <= edsr_keys


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_experts_upscale_by_their_scale(generator, scale):
    image = torch.rand(1, 3, 8, 8, generator=generator)
    for model in (
        SRResNet(num_feat=8, num_block=1, scale=scale),
        EDSR(num_feat=8, num_block=1, scale=scale),
    ):
        assert model(image).shape == (1, 3, 8 * scale, 8 * scale)


def test_predictor_layout_follows_the_reference():
    predictor = DegradationPredictor()
    convs = [m for m in predictor.ConvNet if isinstance(m, nn.Conv2d)]
    assert [c.stride[0] for c in convs] == [1, 1, 1, 2, 1, 1]
    assert [c.kernel_size[0] for c in convs] == [5] * 6
    assert [c.out_channels for c in convs] == [64, 64, 64, 64, 64, 33]
    assert all(isinstance(predictor.ConvNet[i], nn.LeakyReLU) for i in range(1, 12, 2))
    assert list(predictor.state_dict())[:2] == ["ConvNet.0.weight", "ConvNet.0.bias"]


def test_weighting_module_is_two_linear_layers_and_optional_sigmoid(generator):
    model = DASR(num_feat=8, num_block=1, predictor_feat=8, generator=generator)
    v = torch.rand(4, 33, generator=generator)
    first, second = model.weighting.MappingNet
    torch.testing.assert_close(model.expert_weights(v), second(first(v)))
    sig = DASR(num_feat=8, num_block=1, predictor_feat=8, weighting="sigmoid", generator=generator)
    a = sig.expert_weights(v)
    assert ((a > 0) & (a < 1)).all()


def test_inference_module_returns_the_sr_image(generator):
    model = DASR(num_feat=8, num_block=1, predictor_feat=8, generator=generator).eval()
    image = torch.rand(2, 3, 8, 8, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(DASRInference(model)(image), model(image).sr, atol=1e-5, rtol=0)


TINY_OPTIONS: dict[str, dict[str, object]] = {
    "srresnet": {"num_feat": 8, "num_block": 1},
    "edsr": {"num_feat": 8, "num_block": 1},
    "rrdb": {"num_feat": 8, "num_block": 1},
    "swinir": {"embed_dim": 12, "depths": [1], "num_heads": [2], "window_size": 8},
    "predictor": {"num_feat": 8},
    "discriminator": {"num_feat": 8},
    **{name: {"num_feat": 8, "num_block": 1, "predictor_feat": 8} for name in DASR_VARIANTS},
}


@pytest.mark.parametrize("name", sorted(TINY_OPTIONS))
def test_every_architecture_trains_one_step_without_nan(generator, name):
    torch.manual_seed(0)  # spandrel's and spectral norm's initialisers draw from the global RNG
    model = build_model(name, **TINY_OPTIONS[name])
    image = torch.rand(2, 3, 16, 16, generator=generator)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    out = model(image)
    if isinstance(model, DASR):
        loss = out.sr.abs().mean() + out.v_hat.abs().mean()
        out = out.sr
    else:
        loss = out.abs().mean()
    expected = {"predictor": (2, 33), "discriminator": (2, 1, 16, 16)}.get(name, (2, 3, 64, 64))
    assert tuple(out.shape) == expected
    before = [p.detach().clone() for p in model.parameters()]
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any((p - b).abs().max() > 0 for p, b in zip(model.parameters(), before, strict=True))
    assert torch.isfinite(model(image).sr if isinstance(model, DASR) else model(image)).all()


def test_discriminator_with_a_generator_ignores_the_global_rng():
    states = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        model = UNetDiscriminatorSN(num_feat=8, generator=torch.Generator().manual_seed(3))
        states.append(model.state_dict())
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        torch.testing.assert_close(states[0][key], states[1][key], rtol=0, atol=0, msg=key)
    torch.testing.assert_close(states[0]["conv1.weight_u"].norm(), torch.tensor(1.0))


def test_swinir_pads_sizes_that_are_not_window_multiples(generator):
    model = build_swinir(**TINY_OPTIONS["swinir"]).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 10, 13, generator=generator)).shape == (1, 3, 40, 52)


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="srresnet"):
        build_model("edsr_xl")
