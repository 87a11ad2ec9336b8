"""Fast inference paths (dasrlib.accel) against the eager DASR path; benchmark scripts on CPU."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from dasrlib.accel import (
    FastDASR,
    GraphCache,
    GraphedSR,
    PreparedNetwork,
    accelerate,
    compile_for_shape,
    prepare,
    resolve_dtype,
)
from dasrlib.device import cpu_has_bf16
from dasrlib.models.dasr import DASR, DASRInference
from dasrlib.models.experts import SRResNet
from dasrlib.models.mixed import MixedWeights, channels_last_flat

REPO = Path(__file__).resolve().parents[2]
TINY = {"num_feat": 8, "num_block": 2, "predictor_feat": 8}


def _tiny_dasr(generator: torch.Generator, **options: object) -> DASR:
    model = DASR(**{**TINY, **options}, generator=generator)
    with torch.no_grad():  # clearly different experts, so a wrong mix shows
        model.experts.bank.copy_(0.05 * torch.randn(model.experts.bank.shape, generator=generator))
        # A predictor and weighting sensitive enough that different images get different a
        # (the default-initialised tiny P maps every image to nearly the same v_hat).
        for layer in model.predictor.ConvNet:
            if isinstance(layer, nn.Conv2d):
                layer.weight.mul_(3.0)
        model.weighting.MappingNet[0].weight.mul_(10.0)
    return model.eval()


def _rel(out: Tensor, ref: Tensor) -> float:
    return float((out.double() - ref.double()).norm() / ref.double().norm())


@pytest.fixture
def lr(generator: torch.Generator) -> Tensor:
    """Two images with different statistics (so P gives them different v_hat)."""
    batch = torch.rand(2, 3, 12, 14, generator=generator)
    batch[1] = 0.2 * batch[1] + 0.7
    return batch


@pytest.mark.parametrize("backbone", ["srresnet", "edsr_m"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_dasr_float32_equals_the_eager_inference_path(generator, lr, backbone, channels_last):
    model = _tiny_dasr(generator, backbone=backbone)
    with torch.no_grad():
        expected = DASRInference(model)(lr)
        out = FastDASR(model, channels_last=channels_last)(lr)
    assert out.dtype == torch.float32 and out.is_contiguous()
    assert _rel(out, expected) < 1e-6  # float32 rounding (channels-last sums in another order)
    # Each image got its own weighting: the batch differs from running image 0's a on both.
    a0 = model.expert_weights(model.predict_degradation(lr[:1]))[0]
    with torch.no_grad():
        shared = model.super_resolve(lr, a0)
    assert (shared[1] - out[1]).abs().max() > 1e-3


def test_fast_dasr_bfloat16_is_close_and_leaves_the_model_alone(generator, lr):
    model = _tiny_dasr(generator)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        expected = DASRInference(model)(lr)
        out = FastDASR(model, dtype="bf16", channels_last=True)(lr)
    assert out.dtype == torch.float32
    # bf16 rounding through a deliberately amplifying random network (outputs of several
    # units): a few percent; an exact match would mean bf16 never ran.
    assert 0 < _rel(out, expected) < 5e-2
    for key, value in model.state_dict().items():
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_predictor_in_another_dtype_changes_only_the_weights(generator, lr):
    model = _tiny_dasr(generator)
    exact = FastDASR(model)
    cheap = FastDASR(model, predictor_dtype="bf16")
    assert next(cheap.predictor.parameters()).dtype == torch.bfloat16
    assert cheap.bank.dtype == torch.float32
    with torch.no_grad():
        flat, flat_cheap = exact.adapt(lr[:1]), cheap.adapt(lr[:1])
        assert 0 < _rel(flat_cheap, flat) < 5e-2
        assert _rel(cheap(lr), exact(lr)) < 5e-2


def test_fast_dasr_refuses_output_mixing(generator):
    model = DASR(**TINY, mixing="outputs", generator=generator)
    with pytest.raises(ValueError, match="mixing='weights'"):
        FastDASR(model)


def test_channels_last_bank_commutes_with_mixing_and_reads_as_channels_last(generator):
    model = _tiny_dasr(generator)
    layout = model.experts.layout
    bank = model.experts.bank.detach()
    a = torch.randn(model.num_experts, generator=generator)
    torch.testing.assert_close(
        a @ channels_last_flat(layout, bank), channels_last_flat(layout, a @ bank)
    )
    flat_cl = a @ channels_last_flat(layout, bank)
    conv = model.network.body[0].conv1
    weight, bias = conv._params(flat_cl, channels_last=True)
    expected_weight, expected_bias = conv._params(a @ bank)
    assert weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(weight, expected_weight)
    torch.testing.assert_close(bias, expected_bias)
    # Not the identity: the reordering really moves values.
    assert not torch.equal(channels_last_flat(layout, bank), bank)
    with pytest.raises(ValueError, match="channels-last"):
        conv(torch.rand(2, 8, 4, 4), MixedWeights(flat=flat_cl.expand(2, -1), channels_last=True))


def test_prepared_network_matches_the_network(generator, lr):
    network = SRResNet(num_feat=8, num_block=2, generator=generator).eval()
    with torch.no_grad():
        expected = network(lr)
        out = PreparedNetwork(network, channels_last=True)(lr)
        half = prepare(network, precision="bf16")(lr)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert _rel(half, expected) < 1e-2
    assert next(network.parameters()).dtype == torch.float32


def test_graphed_sr_falls_back_to_eager_on_cpu_and_checks_the_shape(generator, lr):
    model = _tiny_dasr(generator)
    fast = FastDASR(model)
    graphed = GraphedSR(fast, lr)
    assert not graphed.captured
    with torch.no_grad():
        expected = DASRInference(model)(lr)
    torch.testing.assert_close(graphed(lr), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="captured for"):
        graphed(lr[:1])
    eager = compile_for_shape(fast, lr, mode="eager")
    torch.testing.assert_close(eager(lr), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(compile_for_shape(fast, lr)(lr), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="unknown mode"):
        compile_for_shape(fast, lr, mode="fast")


def test_accelerate_on_cpu_is_the_prepared_model_without_grad(generator, lr):
    model = _tiny_dasr(generator)
    fast = accelerate(model, precision="fp32", channels_last=True)
    out = fast(lr)
    assert not out.requires_grad
    with torch.no_grad():
        assert _rel(out, DASRInference(model)(lr)) < 1e-6


def test_graph_cache_calls_through_on_cpu(generator, lr):
    calls: list[tuple[int, ...]] = []

    def network(x: Tensor) -> Tensor:
        calls.append(tuple(x.shape))
        return x * 2

    cache = GraphCache(network, max_graphs=2)
    torch.testing.assert_close(cache(lr), lr * 2)
    assert calls == [tuple(lr.shape)] and not cache.graphs
    with pytest.raises(ValueError, match="max_graphs"):
        GraphCache(network, max_graphs=0)


def test_resolve_dtype():
    assert resolve_dtype("tf32") is torch.float32
    assert resolve_dtype(torch.float16) is torch.float16
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_dtype("int8")


def test_fuse_uses_no_random_numbers_and_keeps_buffers(generator, lr):
    model = _tiny_dasr(generator, backbone="edsr_m")
    a = torch.randn(model.num_experts, generator=generator)
    state = torch.random.get_rng_state()
    fused = model.fuse(a)
    assert torch.equal(torch.random.get_rng_state(), state)  # nothing drawn, nothing wasted
    assert not any(t.is_meta for t in [*fused.parameters(), *fused.buffers()])
    with torch.no_grad():
        torch.testing.assert_close(fused(lr), model.super_resolve(lr, a), rtol=1e-5, atol=1e-6)
    assert isinstance(fused.conv_first, nn.Conv2d)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_graph_replay_matches_eager_on_fresh_inputs(generator):
    model = _tiny_dasr(generator).cuda()
    lr = torch.rand(1, 3, 32, 40, generator=generator).cuda()
    fast = FastDASR(model, dtype="fp16", channels_last=True)
    graphed = GraphedSR(fast, lr)
    assert graphed.captured
    for _ in range(2):
        fresh = torch.rand(1, 3, 32, 40, generator=generator).cuda()
        with torch.no_grad():
            expected = DASRInference(model)(fresh)
        assert _rel(graphed(fresh), expected) < 1e-2


# --------------------------------------------------------------------------------------------
# The benchmark scripts, tiny, on the CPU
# --------------------------------------------------------------------------------------------


def _run_script(args: list[str]) -> int:
    """Run a benchmark script's ``main`` in this process (no second torch import)."""
    script = REPO / args[0]
    sys.path.insert(0, str(script.parent))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{script.stem}", script)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.main(args[1:])
    finally:
        sys.path.remove(str(script.parent))


TINY_ARGS = ["--num-feat", "8", "--num-block", "2", "--predictor-feat", "8"]


@pytest.mark.slow
def test_inference_benchmark_writes_ratios_and_errors(tmp_path, capsys):
    out = tmp_path / "inference_cpu.json"
    done = _run_script(
        ["benchmarks/inference.py", "--device", "cpu", "--size", "16x20", *TINY_ARGS]
        + ["--repeats", "2", "--warmup", "1", "--out", str(out)]
    )
    assert done == 0
    report = json.loads(out.read_text())
    bf16_modes = {"bf16", "bf16_cl"} if cpu_has_bf16() else set()
    assert set(report["latency_ratio"]) == {"fp32", "fp32_cl"} | bf16_modes
    assert all(ratio > 0 for ratio in report["latency_ratio"].values())
    assert report["input"] == {"batch": 1, "height": 16, "width": 20, "scale": 4}
    assert report["environment"]["torch"] == torch.__version__
    dasr = report["modes"]["fp32"]["variants"]["dasr"]
    assert dasr["correct"] and dasr["rel_l2_error"] < 1e-5 and dasr["n"] == 2
    assert set(report["modes"]["fp32"]["variants"]) == {
        "srresnet",
        "dasr",
        "dasr_front",
        "dasr_library",
        "dasr_naive",
    }
    front = report["modes"]["fp32_cl"]["variants"]["dasr_front"]
    assert front["correct"] and 0 < front["ratio_to_srresnet"]
    assert report["gmacs"]["ratio"] > 1.0 and report["gmacs"]["predictor"] > 0
    assert report["all_correct"] is True
    assert "latency_ratio" in capsys.readouterr().out


@pytest.mark.slow
def test_large_benchmark_writes_a_uint8_output(tmp_path):
    out = tmp_path / "inference_large_cpu.json"
    done = _run_script(
        ["benchmarks/inference.py", "--device", "cpu", "--large", *TINY_ARGS]
        + ["--large-size", "48", "--tile", "16", "--out", str(out)]
    )
    assert done == 0
    report = json.loads(out.read_text())
    assert report.get("error") is None, report.get("error")
    assert report["output"] == {"shape": [1, 3, 192, 192], "dtype": "torch.uint8"}
    assert report["ok"] is True and report["host_rss_extra_mb"] is not None


@pytest.mark.slow
def test_train_step_benchmark_writes_train_ratio(tmp_path):
    out = tmp_path / "train_step_cpu.json"
    args = ["--device", "cpu", "--batch", "2", "--lr-size", "8", "--num-feat", "8"]
    args += ["--num-block", "2", "--repeats", "1", "--warmup", "1", "--objectives", "l1"]
    args += ["--impls", "grouped,grouped_cl", "--end-to-end", "0", "--queue-size", "2"]
    args += ["--channels-last", "off"]  # pinned: the trainer's own default depends on the CPU
    assert _run_script(["benchmarks/train_step.py", *args, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    ratios = report["train_ratios"]
    assert set(ratios) == {"l1/cl=False/dasr_grouped", "l1/cl=False/dasr_grouped_cl"}
    assert report["train_ratio"] == max(ratios.values()) > 0
    assert report["train_ratio_best"] in ratios
