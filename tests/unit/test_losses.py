"""Loss terms of Eq. 3: values, the VGG19 feature taps, weight loading and its failure message."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dasrlib import losses
from dasrlib.losses import GANLoss, PerceptualLoss, VGGWeightsNotFound


@pytest.fixture(scope="module")
def random_perceptual() -> PerceptualLoss:
    return PerceptualLoss(
        allow_random_vgg_for_tests=True, generator=torch.Generator().manual_seed(0)
    )


def test_pixel_and_regression_are_l1() -> None:
    a, b = torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 0.25)
    assert losses.pixel_loss(a, b).item() == pytest.approx(0.25)
    v_hat, v = torch.zeros(2, 33), torch.ones(2, 33)
    v_hat[0] = 1.0
    assert losses.regression_loss(v_hat, v).item() == pytest.approx(0.5)


def test_gan_loss_is_bce_on_logits() -> None:
    gan = GANLoss()
    zeros = torch.zeros(2, 1, 8, 8)
    assert gan(zeros, True).item() == pytest.approx(math.log(2))
    assert gan(zeros, False).item() == pytest.approx(math.log(2))
    confident = torch.full((1, 1, 2, 2), 10.0)
    assert gan(confident, True).item() < 1e-3
    assert gan(confident, False).item() > 9.0


def test_perceptual_taps_pre_relu_features_with_paper_weights(random_perceptual) -> None:
    loss = random_perceptual
    assert loss.layer_weights == {2: 0.1, 7: 0.1, 16: 1.0, 25: 1.0, 34: 1.0}
    assert len(loss.vgg) == 35  # cut after conv5_4
    assert all(not m.inplace for m in loss.vgg if isinstance(m, torch.nn.ReLU))
    x = torch.rand(1, 3, 32, 32)
    features = loss._features(x)
    # Pre-activation: conv outputs take negative values (a ReLU output never would).
    assert all(f.min() < 0 for f in features.values())
    assert not any(p.requires_grad for p in loss.parameters())


def test_perceptual_zero_on_equal_inputs_and_grad_flows_to_sr_only(random_perceptual) -> None:
    target = torch.rand(2, 3, 32, 32)
    assert random_perceptual(target.clone(), target).item() == 0.0
    sr = (target + 0.1 * torch.randn_like(target)).requires_grad_(True)
    value = random_perceptual(sr, target)
    value.backward()
    assert value.item() > 0
    assert sr.grad is not None and sr.grad.abs().sum() > 0


def test_perceptual_equals_weighted_sum_of_layer_l1(random_perceptual) -> None:
    sr, target = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    fs, ft = random_perceptual._features(sr), random_perceptual._features(target)
    expected = sum(w * F.l1_loss(fs[i], ft[i]) for i, w in random_perceptual.layer_weights.items())
    assert random_perceptual(sr, target).item() == pytest.approx(expected.item(), rel=1e-5)


def test_missing_vgg_weights_name_where_they_were_looked_for(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("DASR_WEIGHTS_DIR", str(tmp_path / "weights"))
    expected = tmp_path / "torch_home" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    assert losses.default_vgg19_path() == expected
    with pytest.raises(VGGWeightsNotFound, match="vgg19-dcbb9e9d.pth") as info:
        PerceptualLoss()
    assert str(expected) in str(info.value)
    assert str(tmp_path / "weights" / "imagenet-vgg16.safetensors") in str(info.value)
    assert "fetch imagenet-features" in str(info.value)
    with pytest.raises(VGGWeightsNotFound, match="imagenet-vgg16.safetensors"):
        PerceptualLoss(network="vgg16")
    explicit = tmp_path / "nowhere" / "vgg19.pth"
    with pytest.raises(VGGWeightsNotFound, match=str(explicit)):
        PerceptualLoss(weights_path=explicit)


def test_vgg_weights_load_from_a_torchvision_format_file(tmp_path) -> None:
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(1)
    stand_in = make_layers(cfgs["E"], batch_norm=False)  # vgg19().features, random weights
    state = {f"features.{k}": v.half() for k, v in stand_in.state_dict().items()}  # small file
    state["classifier.0.bias"] = torch.zeros(4)  # other keys of the real file are ignored
    path = tmp_path / "vgg19-dcbb9e9d.pth"
    torch.save(state, path)
    loss = PerceptualLoss(weights_path=path)
    assert torch.equal(loss.vgg[34].weight, stand_in[34].weight.half().float())
    bad = tmp_path / "not_vgg.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="not a torchvision VGG19 checkpoint"):
        PerceptualLoss(weights_path=bad)


def test_random_vgg_is_seeded_by_its_generator() -> None:
    def make(seed: int) -> PerceptualLoss:
        return PerceptualLoss(
            allow_random_vgg_for_tests=True, generator=torch.Generator().manual_seed(seed)
        )

    assert torch.equal(make(3).vgg[34].weight, make(3).vgg[34].weight)
    assert not torch.equal(make(3).vgg[34].weight, make(4).vgg[34].weight)


def test_unknown_layer_name_is_an_error() -> None:
    with pytest.raises(ValueError, match="conv9_9"):
        PerceptualLoss(layer_weights={"conv9_9": 1.0}, allow_random_vgg_for_tests=True)
