"""Mixed convolution and DASR execution paths (Eq. 2): every path against the others."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from dasrlib.models.dasr import DASR
from dasrlib.models.experts import SRResNet
from dasrlib.models.mixed import PER_SAMPLE_IMPLS, ExpertBank, MixedWeights, split_layers

TINY = {"num_feat": 8, "num_block": 2, "predictor_feat": 8}


def _tiny_dasr(generator: torch.Generator, **options: object) -> DASR:
    model = DASR(**{**TINY, **options}, generator=generator)
    if isinstance(model.experts, ExpertBank):
        # Stronger, clearly different experts than BasicSR's 0.1-scaled init, so that the
        # comparisons below are sensitive.
        with torch.no_grad():
            bank = model.experts.bank
            bank.copy_(0.05 * torch.randn(bank.shape, generator=generator))
    return model.eval()


def _plain(model: DASR, index: int) -> SRResNet:
    plain = model.plain_expert()
    plain.load_state_dict(model.expert_state_dict(index))
    return plain.eval()


@pytest.fixture
def lr(generator: torch.Generator) -> Tensor:
    return torch.rand(3, 3, 12, 12, generator=generator)


def test_one_hot_weights_reproduce_each_expert_exactly(generator, lr):
    model = _tiny_dasr(generator, num_experts=3)
    outputs = []
    for index in range(3):
        a = torch.nn.functional.one_hot(torch.tensor(index), 3).float()
        mixed = model.super_resolve(lr, a)
        expected = _plain(model, index)(lr)
        torch.testing.assert_close(mixed, expected, rtol=0, atol=1e-6)
        outputs.append(expected)
    # The experts really differ, so the test above can fail.
    assert (outputs[0] - outputs[1]).abs().max() > 1e-2


def test_identical_experts_give_that_expert_for_weights_summing_to_one(generator, lr):
    """With identical experts, sum_i a_i W = (sum_i a_i) W: the output is the expert's exactly
    when sum(a) = 1 (any signs), and differs otherwise (there is no softmax in A)."""
    model = _tiny_dasr(generator, num_experts=4)
    with torch.no_grad():
        model.experts.bank.copy_(model.experts.bank[0].expand_as(model.experts.bank))
    expected = _plain(model, 0)(lr)
    raw = torch.randn(3, 4, generator=generator)
    a = raw - raw.mean(dim=1, keepdim=True) + 0.25  # rows sum to 1, entries of both signs
    torch.testing.assert_close(a.sum(dim=1), torch.ones(3))
    torch.testing.assert_close(model.super_resolve(lr, a), expected, rtol=0, atol=1e-5)
    doubled = model.super_resolve(lr, 2 * a)
    assert (doubled - expected).abs().max() > 1e-2


@pytest.mark.parametrize("mixing", ["weights", "single_expert_mapping", "dcd"])
@pytest.mark.parametrize("backbone", ["srresnet", "edsr_m"])
def test_fused_network_equals_per_sample_path(generator, lr, mixing, backbone):
    model = _tiny_dasr(generator, mixing=mixing, backbone=backbone)
    _perturb_dynamic_maps(model, generator)
    a = torch.randn(3, 5, generator=generator)
    batch = model.super_resolve(lr, a)
    for index in range(3):
        fused = model.fuse(a[index])
        assert all(
            type(m) is torch.nn.Conv2d for m in fused.modules() if "Conv" in type(m).__name__
        )
        torch.testing.assert_close(
            fused(lr[index : index + 1]), batch[index : index + 1], rtol=0, atol=1e-5
        )


def _perturb_dynamic_maps(model: DASR, generator: torch.Generator) -> None:
    """Give the zero-initialised dynamic maps of the Fig. 4(e)/(f) variants real values."""
    with torch.no_grad():
        for name, param in model.experts.named_parameters():
            if name in ("mapping", "lambda_map", "phi_map"):
                param.copy_(0.1 * torch.randn(param.shape, generator=generator))


@pytest.mark.parametrize("impl", PER_SAMPLE_IMPLS)
def test_batch_with_different_weights_equals_each_sample_alone(generator, lr, impl):
    model = _tiny_dasr(generator, per_sample_impl=impl)
    v = torch.rand(3, 33, generator=generator)
    batch = model(lr, v)
    assert batch.a.shape == (3, 5)
    assert (batch.a[0] - batch.a[1]).abs().max() > 1e-3
    for index in range(3):
        alone = model(lr[index : index + 1], v[index : index + 1])
        torch.testing.assert_close(alone.sr, batch.sr[index : index + 1], rtol=0, atol=1e-5)


def test_per_sample_impls_agree_in_values_and_gradients(generator, lr):
    """float64, so that the three implementations must agree to rounding."""
    model = _tiny_dasr(generator).double()
    lr = lr.double()
    a = torch.randn(3, 5, generator=generator, dtype=torch.float64)
    results = {}
    for impl in PER_SAMPLE_IMPLS:
        model.per_sample_impl = impl
        model.zero_grad()
        image = lr.clone().requires_grad_(True)
        coefficients = a.clone().requires_grad_(True)
        out = model.super_resolve(image, coefficients)
        weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
        (out * weights).sum().backward()
        results[impl] = (out, image.grad, coefficients.grad, model.experts.bank.grad.clone())
    reference = results["grouped"]
    for impl in ("bmm", "expert_sum"):
        for got, want in zip(results[impl], reference, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_shared_vector_v_uses_one_weight_set_for_the_batch(generator, lr):
    model = _tiny_dasr(generator)
    v = torch.rand(33, generator=generator)
    shared = model(lr, v)
    assert shared.a.shape == (5,)
    per_sample = model(lr, v.expand(3, 33))
    torch.testing.assert_close(shared.sr, per_sample.sr, rtol=0, atol=1e-5)
    torch.testing.assert_close(shared.v_hat, v)


def test_forward_without_v_uses_the_predictor(generator, lr):
    model = _tiny_dasr(generator)
    out = model(lr)
    torch.testing.assert_close(out.v_hat, model.predict_degradation(lr))
    torch.testing.assert_close(out.a, model.expert_weights(out.v_hat))
    assert out.sr.shape == (3, 3, 48, 48)


def test_classical_moe_mixes_the_outputs_of_all_experts(generator, lr):
    model = _tiny_dasr(generator, mixing="outputs", num_experts=3)
    a = torch.randn(3, 3, generator=generator)
    expected = sum(a[:, i].view(-1, 1, 1, 1) * _plain(model, i)(lr) for i in range(3))
    torch.testing.assert_close(model.super_resolve(lr, a), expected, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="no single fused network"):
        model.fuse(a[0])


@pytest.mark.parametrize("mixing", ["weights", "single_expert_mapping", "dcd"])
def test_init_experts_from_starts_as_the_pretrained_expert(generator, lr, mixing):
    pretrained = SRResNet(num_feat=8, num_block=2, generator=generator).eval()
    with torch.no_grad():
        for param in pretrained.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    model = DASR(**TINY, mixing=mixing, generator=generator).eval()
    model.init_experts_from(pretrained.state_dict())
    expected = pretrained(lr)
    torch.testing.assert_close(model(lr).sr, expected, rtol=0, atol=1e-5)

    if mixing == "weights":
        model.init_experts_from(pretrained.state_dict(), noise_std=0.01, generator=generator)
        bank = model.experts.bank.detach()
        assert (bank[0] - bank[1]).abs().max() > 0
        assert (bank[0] - bank[1]).abs().max() < 0.2 * bank[0].abs().max()
        for slot in model.experts.layout:  # bias noise follows the layer's weight scale too
            weight_std = float(
                bank[0, slot.weight_offset : slot.weight_offset + slot.weight_numel].std()
            )
            bias = slice(slot.bias_offset, slot.bias_offset + slot.out_channels)
            assert (bank[0, bias] - bank[1, bias]).abs().max() < 0.1 * weight_std


def _adam_steps(model: DASR, lr: Tensor, v: Tensor, target: Tensor, steps: int = 3) -> None:
    model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        loss = (model(lr, v).sr - target).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


def test_copied_experts_diverge_only_once_the_symmetry_is_broken(generator, lr):
    pretrained = SRResNet(num_feat=8, num_block=2, generator=generator).eval()
    stuck = DASR(**TINY, num_experts=3, generator=generator)
    stuck.init_experts_from(pretrained.state_dict())
    broken = DASR(**TINY, num_experts=3, generator=generator)
    broken.load_state_dict(stuck.state_dict())
    v = torch.rand(3, 33, generator=generator)  # every image its own v, so its own a
    target = torch.rand(3, 3, 48, 48, generator=generator)
    assert stuck.experts_are_copies() and broken.experts_are_copies()

    with torch.no_grad():
        before = broken.eval()(lr, v)
        assert broken.break_expert_symmetry(torch.Generator().manual_seed(0))
        after = broken(lr, v)
    # sum_i a_i and hence the network are unchanged; a itself now differs between experts
    torch.testing.assert_close(after.a.sum(1), before.a.sum(1), rtol=0, atol=1e-6)
    torch.testing.assert_close(after.sr, before.sr, rtol=0, atol=1e-6)
    assert (after.a - after.a[:, :1]).abs().max() > 1e-2

    _adam_steps(stuck, lr, v, target)
    _adam_steps(broken, lr, v, target)
    assert stuck.experts_are_copies()  # uniform A: the same gradient for every expert, for ever
    assert not broken.experts_are_copies()
    assert stuck.expert_spread() < 1e-6 < broken.expert_spread()
    assert not broken.break_expert_symmetry(torch.Generator().manual_seed(0))  # now a no-op


def test_mixing_is_one_matmul_over_the_flat_bank(generator):
    model = _tiny_dasr(generator, num_experts=3)
    a = torch.randn(2, 3, generator=generator)
    flat = model.mixed_parameters(a)
    assert flat.shape == (2, model.experts.bank.shape[1])
    torch.testing.assert_close(flat, a @ model.experts.bank)
    first = model.experts.layout[0]
    state = model.expert_state_dict(1)
    assert state[f"{first.name}.weight"].shape == first.weight_shape


def test_unknown_options_fail_loudly(generator):
    with pytest.raises(ValueError, match="mixing"):
        DASR(**TINY, mixing="softmax")
    with pytest.raises(ValueError, match="backbone"):
        DASR(**TINY, backbone="rcan")
    with pytest.raises(ValueError, match="per_sample_impl"):
        DASR(**TINY, per_sample_impl="loop")
    with pytest.raises(TypeError):
        DASR(**TINY, num_expert=5)  # typo


def _graph_nodes(tensor: Tensor) -> set[str]:
    """Names of every autograd node that ``tensor``'s backward pass runs."""
    seen, names, stack = set(), set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


@pytest.mark.parametrize("impl", ["grouped", "grouped_cl", "bmm"])
def test_per_layer_mixing_equals_slicing_one_flat_vector(generator, lr, impl):
    """`ExpertBank.mix_layers` (the training path) against mixing all of [B, P] at once and
    slicing each layer out of it: same outputs and gradients w.r.t. lr, a and the bank; and no
    layer slices a [B, P] tensor, whose backward would build a [B, P] zero gradient per layer."""
    model = _tiny_dasr(generator, per_sample_impl=impl)
    a = torch.randn(3, 5, generator=generator)
    results = []
    for per_layer in (True, False):
        model.zero_grad()
        image = lr.clone().requires_grad_(True)
        coefficients = a.clone().requires_grad_(True)
        if per_layer:
            out = model.super_resolve(image, coefficients)
            assert "SliceBackward0" not in _graph_nodes(out)
        else:
            flat = model.experts.mix(coefficients)
            out = model.network(image, MixedWeights(flat=flat, impl=impl))
            assert "SliceBackward0" in _graph_nodes(out)  # the check above can fail
        weights = torch.linspace(-1, 1, out.numel()).view_as(out)
        (out * weights).sum().backward()
        results.append((out, image.grad, coefficients.grad, model.experts.bank.grad.clone()))
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert results[1][3].abs().max() > 0


def test_split_layers_views_each_layer_of_the_flat_vector(generator):
    model = _tiny_dasr(generator)
    layout = model.experts.layout
    bank = model.experts.bank.detach()
    layers = split_layers(layout, bank)
    assert len(layers) == len(layout)
    for slot, (weight, bias) in zip(layout, layers, strict=True):
        start = slot.weight_offset
        torch.testing.assert_close(
            weight, bank[:, start : start + slot.weight_numel], rtol=0, atol=0
        )
        torch.testing.assert_close(
            bias, bank[:, slot.bias_offset : slot.bias_offset + slot.out_channels], rtol=0, atol=0
        )
    a = torch.randn(2, 5, generator=generator)
    for (weight, bias), (mixed_w, mixed_b) in zip(
        split_layers(layout, a @ bank), model.experts.mix_layers(a), strict=True
    ):
        torch.testing.assert_close(mixed_w, weight)
        torch.testing.assert_close(mixed_b, bias)


def test_grouped_channels_last_path_equals_grouped_in_values_and_gradients(generator, lr):
    """``grouped_cl`` (batch folded into channels-last, pixel shuffles in that folded layout,
    activations out of place) against ``grouped`` on NCHW: same outputs and gradients w.r.t. lr,
    a and the bank; the activations really stay folded through the pixel shuffles."""
    model = _tiny_dasr(generator)
    a = torch.randn(3, 5, generator=generator)
    shuffle_outputs: list[Tensor] = []
    hook = model.network.pixel_shuffle.register_forward_hook(
        lambda _module, _inputs, output: shuffle_outputs.append(output)
    )
    results = []
    for impl, layout in (("grouped_cl", torch.channels_last), ("grouped", torch.contiguous_format)):
        model.per_sample_impl = impl
        model.zero_grad()
        image = lr.contiguous(memory_format=layout).requires_grad_(True)
        coefficients = a.clone().requires_grad_(True)
        out = model.super_resolve(image, coefficients)
        assert "CopySlices" not in _graph_nodes(out)  # no in-place op on a view of a conv output
        weights = torch.linspace(-1, 1, out.numel()).view_as(out)
        (out * weights).sum().backward()
        results.append((out, image.grad, coefficients.grad, model.experts.bank.grad.clone()))
    hook.remove()
    for output in shuffle_outputs[:2]:  # grouped_cl's two shuffles: (H, W, B, C) in memory
        batch, channels, _, width = output.shape
        assert output.stride() == (channels, 1, width * batch * channels, batch * channels)
    for got, want in zip(*results, strict=True):  # fp32 rounding of different conv kernels
        scale = float(want.detach().abs().max())
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6 * scale)
    assert results[1][3].abs().max() > 0
