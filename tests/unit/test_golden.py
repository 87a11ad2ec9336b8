"""Golden outputs: fixed-seed tiny networks and the degradation pipeline on fixed inputs, compared
with committed reference files (tests/golden/*.safetensors, a few KB each), so that a change of
numerics fails here instead of silently moving a table.

Everything runs on the CPU in float32. The inputs and initial weights come from seeded
``torch.Generator`` draws, so a change of torch's CPU generator also shows up here.

Regenerate after an intended numerics change (and say why in the commit message)::

    python -m pytest tests/unit/test_golden.py --update-golden
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from dasrlib.degradation.pipeline import degrade
from dasrlib.models.dasr import DASR, DASRInference
from dasrlib.models.experts import SRResNet

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "golden"
ATOL, RTOL = 1e-5, 1e-5
"""Float32 on the CPU: room for summation order (thread counts), far below a numerics change."""

MAX_LEVELS, MEAN_LEVELS = 4, 0.15
"""8-bit outputs (the degraded LR images): another CPU's summation order (its vector width) can
move a value across a rounding boundary, so a pixel differs by one level, and the JPEG stage
spreads that flip over its 8 x 8 block (measured between two CPUs: 3 pixels of 384 by one level
after `weak`, 28 by up to 3 levels after `standard`, mean 0.1 level). These images are compared in
levels instead: at most MAX_LEVELS anywhere and MEAN_LEVELS on average, which a 0.3 % change of
the input already exceeds at every level."""


def _rand(*shape: int, seed: int) -> Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def dasr_tiny_forward() -> dict[str, Tensor]:
    """DASR (N = 3, 8 features, 1 block): per-sample training path on two images, then the
    fused inference path (`DASRInference`) on the first."""
    model = DASR(
        num_experts=3,
        num_feat=8,
        num_block=1,
        predictor_feat=8,
        generator=torch.Generator().manual_seed(0),
    ).eval()
    lr = _rand(2, 3, 6, 6, seed=1)
    out = model(lr)
    return {
        "sr": out.sr,
        "v_hat": out.v_hat,
        "a": out.a,
        "sr_fused": DASRInference(model)(lr[:1]),
    }


@torch.no_grad()
def srresnet_tiny_forward() -> dict[str, Tensor]:
    """SRResNet (8 features, 2 blocks) on one 8 x 8 image."""
    model = SRResNet(num_feat=8, num_block=2, generator=torch.Generator().manual_seed(0)).eval()
    return {"sr": model(_rand(1, 3, 8, 8, seed=2))}


def degradation_levels() -> dict[str, Tensor]:
    """`degrade` of two 32 x 32 HR patches at every level: LR images and the 33-slot v."""
    return _degraded(_rand(2, 3, 32, 32, seed=3))


def _degraded(hr: Tensor) -> dict[str, Tensor]:
    """`hr` degraded at every level, each with its own fixed seed."""
    outputs = {}
    for seed, level in enumerate(("bicubic", "weak", "standard", "severe")):
        lr, record = degrade(hr, level, generator=torch.Generator().manual_seed(10 + seed))
        outputs[f"{level}_lr"] = lr
        outputs[f"{level}_v"] = record.vector()
    return outputs


CASES: dict[str, Callable[[], dict[str, Tensor]]] = {
    "dasr_tiny_forward": dasr_tiny_forward,
    "srresnet_tiny_forward": srresnet_tiny_forward,
    "degradation_levels": degradation_levels,
}


def _differences(actual: dict[str, Tensor], expected: dict[str, Tensor]) -> list[str]:
    if actual.keys() != expected.keys():
        return [f"keys {sorted(actual)} != {sorted(expected)}"]
    problems = []
    for key, value in actual.items():
        want = expected[key]
        if value.shape != want.shape or value.dtype != want.dtype:
            problems.append(
                f"{key}: {value.dtype} {tuple(value.shape)} != {want.dtype} {tuple(want.shape)}"
            )
        elif _is_8bit(want):
            levels = (value - want).abs() * 255.0
            if levels.max() > MAX_LEVELS + 1e-3 or levels.mean() > MEAN_LEVELS:
                problems.append(
                    f"{key}: max {levels.max().item():.0f} levels, mean {levels.mean().item():.3f}"
                )
        elif not torch.allclose(value, want, atol=ATOL, rtol=RTOL):
            problems.append(f"{key}: max |difference| {(value - want).abs().max().item():.3g}")
    return problems


def _is_8bit(image: Tensor) -> bool:
    """An image tensor whose values all lie on the 256 levels of an 8-bit file."""
    levels = image * 255.0
    return image.dim() == 4 and bool(torch.allclose(levels, levels.round(), atol=1e-3, rtol=0))


@pytest.mark.parametrize("name", sorted(CASES))
def test_outputs_match_the_golden_files(name: str, request: pytest.FixtureRequest) -> None:
    outputs = {k: v.contiguous().float() for k, v in CASES[name]().items()}
    path = GOLDEN_DIR / f"{name}.safetensors"
    if request.config.getoption("--update-golden"):
        GOLDEN_DIR.mkdir(exist_ok=True)
        save_file(outputs, path, metadata={"torch": torch.__version__, "case": name})
        pytest.skip(f"rewrote {path.name}")
    assert path.is_file(), f"{path} is missing: run pytest {__file__} --update-golden"
    problems = _differences(outputs, load_file(path))
    assert not problems, f"{path.name} differs: " + "; ".join(problems)


def test_the_comparison_catches_a_small_numerics_change() -> None:
    expected = load_file(GOLDEN_DIR / "srresnet_tiny_forward.safetensors")
    nudged = {"sr": expected["sr"] * (1 + 1e-3)}
    assert _differences(nudged, expected) and not _differences(dict(expected), expected)


def test_the_8bit_comparison_allows_a_rounding_flip_and_catches_a_small_input_change() -> None:
    """One pixel a level off passes; degrading a 0.3 % darker input fails at every level."""
    expected = load_file(GOLDEN_DIR / "degradation_levels.safetensors")
    flipped = dict(expected)
    flipped["weak_lr"] = expected["weak_lr"].clone()
    flipped["weak_lr"][0, 0, 0, 0] += 1 / 255
    assert not _differences(flipped, expected)
    darker = _degraded(_rand(2, 3, 32, 32, seed=3) * 0.997)
    for level in ("bicubic", "weak", "standard", "severe"):
        key = f"{level}_lr"
        assert _differences({key: darker[key]}, {key: expected[key]}), level


def test_golden_files_stay_small() -> None:
    sizes = {p.name: p.stat().st_size for p in GOLDEN_DIR.glob("*.safetensors")}
    assert set(sizes) == {f"{name}.safetensors" for name in CASES}
    assert max(sizes.values()) < 32_000, sizes
