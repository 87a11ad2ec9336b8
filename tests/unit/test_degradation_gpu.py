"""Degradation on a CUDA device: same results as the CPU operations, seeded, aligned queue."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from dasrlib.degradation.kernels import filter2d, gaussian_kernels, sinc_kernels
from dasrlib.degradation.levels import Level
from dasrlib.degradation.ops import jpeg_compress, resize_per_sample, usm_sharpen
from dasrlib.degradation.pairs import TrainingBatch, TrainingPairSource
from dasrlib.degradation.pipeline import degrade

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CUDA = torch.device("cuda")


def _images(batch: int = 6, size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(batch, 3, size // 8, size // 8, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic").clamp(0, 1)


def test_operations_match_between_cpu_and_cuda() -> None:
    x = _images()
    n = x.shape[0]
    sizes = torch.tensor([7, 9, 13, 15, 21, 21])
    sigma = torch.linspace(0.3, 3.0, n)
    theta = torch.linspace(-3.0, 3.0, n)
    k = gaussian_kernels(sizes, sigma, sigma.flip(0), theta)
    torch.testing.assert_close(
        gaussian_kernels(
            sizes.to(CUDA), sigma.to(CUDA), sigma.flip(0).to(CUDA), theta.to(CUDA)
        ).cpu(),
        k,
        atol=1e-6,
        rtol=1e-5,
    )
    s = sinc_kernels(sizes, torch.linspace(1.1, 3.1, n))
    torch.testing.assert_close(
        sinc_kernels(sizes.to(CUDA), torch.linspace(1.1, 3.1, n, device=CUDA)).cpu(), s
    )
    torch.testing.assert_close(
        filter2d(x.to(CUDA), k.to(CUDA)).cpu(), filter2d(x, k), atol=1e-5, rtol=0
    )
    modes = torch.arange(n) % 3
    torch.testing.assert_close(
        resize_per_sample(x.to(CUDA), (27, 27), modes.to(CUDA)).cpu(),
        resize_per_sample(x, (27, 27), modes),
        atol=1e-5,
        rtol=0,
    )
    q = torch.linspace(30, 95, n)
    # The codec rounds (8-bit samples, quantised coefficients): a value on a rounding edge may
    # round differently on the two devices, moving a pixel, or rarely a block, by a few levels.
    jpeg_gap = jpeg_compress(x.to(CUDA), q.to(CUDA)).cpu() - jpeg_compress(x, q)
    assert float((jpeg_gap != 0).float().mean()) < 0.02
    assert float(10 * torch.log10(1 / jpeg_gap.pow(2).mean().clamp_min(1e-12))) > 45.0
    torch.testing.assert_close(usm_sharpen(x.to(CUDA)).cpu(), usm_sharpen(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("level", list(Level))
def test_cuda_degrade_is_seeded_and_in_range(level: Level) -> None:
    hr = _images().to(CUDA)
    a, rec_a = degrade(hr, level, generator=torch.Generator(device=CUDA).manual_seed(3))
    b, rec_b = degrade(hr, level, generator=torch.Generator(device=CUDA).manual_seed(3))
    assert a.device.type == "cuda" and a.shape == (6, 3, 16, 16)
    assert torch.equal(a, b) and rec_a.to_dicts() == rec_b.to_dicts()
    v = rec_a.vector()
    assert v.device.type == "cuda" and float(v.min()) >= 0 and float(v.max()) <= 1


def test_cuda_queue_keeps_v_with_its_image() -> None:
    class Sampler:
        def __init__(self) -> None:
            self.next_id = 0

        def sample(self, batch_size: int) -> torch.Tensor:
            out = _images(batch_size, 32).to(CUDA)
            out[:, 0, 0, 0] = (
                torch.arange(self.next_id, self.next_id + batch_size, device=CUDA) / 4096
            )
            self.next_id += batch_size
            return out

    source = TrainingPairSource(
        Sampler(),
        batch_size=4,
        queue_size=8,
        generator=torch.Generator(device=CUDA).manual_seed(0),
        device=CUDA,
    )
    made: list[TrainingBatch] = []
    fresh = source._fresh_batch

    def spy() -> TrainingBatch:
        batch = fresh()
        made.append(batch)
        return batch

    source._fresh_batch = spy  # type: ignore[method-assign]
    out = [source.next_batch() for _ in range(4)]
    by_id = {}
    for batch in made:
        for row, value in enumerate(batch.hr[:, 0, 0, 0].tolist()):
            by_id[round(value * 4096)] = (batch, row)
    for batch in out:
        assert batch.v.device.type == "cuda"
        for row, value in enumerate(batch.hr[:, 0, 0, 0].tolist()):
            origin, index = by_id[round(value * 4096)]
            assert torch.equal(batch.v[row], origin.v[index])
            assert int(batch.level[row]) == int(origin.level[index])


def test_cuda_testset_rebuild_is_byte_identical(
    make_image_file: Callable[..., Path], tmp_path: Path
) -> None:
    from dasrlib.testsets import build_testsets

    make_image_file("hr/a.png", width=64, height=48, seed=1)
    make_image_file("hr/b.png", width=40, height=44, seed=2)
    trees = []
    for name in ("one", "two"):
        build_testsets(tmp_path / "hr", tmp_path / name, levels=("weak", "severe"), device="cuda")
        root = tmp_path / name
        trees.append({p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*.png")})
    assert trees[0] == trees[1] and len(trees[0]) == 6
