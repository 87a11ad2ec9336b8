"""Training pairs: the shuffling queue keeps lr, hr, hr_usm, v and level of each image together."""

from __future__ import annotations

import pytest
import torch

from dasrlib.degradation.levels import Level, level_index
from dasrlib.degradation.ops import usm_sharpen
from dasrlib.degradation.pairs import TrainingBatch, TrainingPairSource

ID_SCALE = 4096.0


class CountingSampler:
    """Textured patches whose pixel (0, 0, 0) encodes a running image id (id / 4096)."""

    def __init__(self, patch: int = 32) -> None:
        self.patch = patch
        self.next_id = 0
        self.generator = torch.Generator().manual_seed(0)

    def sample(self, batch_size: int) -> torch.Tensor:
        coarse = torch.rand(batch_size, 3, 4, 4, generator=self.generator)
        out = torch.nn.functional.interpolate(
            coarse, size=(self.patch, self.patch), mode="bilinear"
        )
        for i in range(batch_size):
            out[i, 0, 0, 0] = (self.next_id + i) / ID_SCALE
        self.next_id += batch_size
        return out


def _ids(hr: torch.Tensor) -> list[int]:
    return [round(float(x) * ID_SCALE) for x in hr[:, 0, 0, 0]]


def _spy(source: TrainingPairSource) -> list[TrainingBatch]:
    """Record every freshly degraded batch the source makes."""
    made: list[TrainingBatch] = []
    fresh = source._fresh_batch

    def spy() -> TrainingBatch:
        batch = fresh()
        made.append(batch)
        return batch

    source._fresh_batch = spy  # type: ignore[method-assign]
    return made


def test_v_and_level_stay_with_their_image_through_the_queue() -> None:
    source = TrainingPairSource(
        CountingSampler(),
        batch_size=4,
        queue_size=12,
        generator=torch.Generator().manual_seed(1),
        device="cpu",
    )
    made = _spy(source)
    batches = [source.next_batch() for _ in range(8)]
    assert len(made) == 3 + 8  # the first call fills the queue (12 / 4 batches) first
    by_id = {}
    for fresh in made:
        for row, image_id in enumerate(_ids(fresh.hr)):
            by_id[image_id] = (fresh, row)
    seen = []
    for batch in batches:
        assert batch.lr.shape == (4, 3, 8, 8) and batch.v.shape == (4, 33)
        assert batch.level.dtype == torch.int64
        for row, image_id in enumerate(_ids(batch.hr)):
            fresh, origin = by_id[image_id]
            assert torch.equal(batch.v[row], fresh.v[origin])
            assert torch.equal(batch.lr[row], fresh.lr[origin])
            assert torch.equal(batch.hr_usm[row], fresh.hr_usm[origin])
            assert int(batch.level[row]) == int(fresh.level[origin])
            seen.append(image_id)
        torch.testing.assert_close(batch.hr_usm, usm_sharpen(batch.hr))
    assert len(set(seen)) == len(seen)  # every image comes out at most once
    # shuffled: returned batches mix images synthesised in different calls
    origins = [{id(by_id[i][0]) for i in _ids(b.hr)} for b in batches]
    assert any(len(o) > 1 for o in origins)


def test_level_probabilities_pick_one_level_per_fresh_batch() -> None:
    source = TrainingPairSource(
        CountingSampler(),
        batch_size=4,
        level_probs=(0.0, 0.0, 1.0),
        queue_size=0,
        generator=torch.Generator().manual_seed(0),
        device="cpu",
    )
    batch = source.next_batch()
    assert torch.all(batch.level == level_index(Level.SEVERE))
    assert float(batch.v[:, 28:30].sum()) == 4.0  # severe writes the final-order one-hot

    mixed = TrainingPairSource(
        CountingSampler(),
        batch_size=2,
        queue_size=0,
        generator=torch.Generator().manual_seed(0),
        device="cpu",
    )
    made = _spy(mixed)
    for _ in range(12):
        mixed.next_batch()
    for fresh in made:
        assert len(set(fresh.level.tolist())) == 1
    assert len({int(f.level[0]) for f in made}) == 3


def test_same_generator_seed_gives_the_same_batches() -> None:
    def run() -> TrainingBatch:
        source = TrainingPairSource(
            CountingSampler(),
            batch_size=2,
            queue_size=4,
            generator=torch.Generator().manual_seed(5),
            device="cpu",
        )
        source.next_batch()
        return source.next_batch()

    a, b = run(), run()
    assert torch.equal(a.lr, b.lr) and torch.equal(a.v, b.v) and torch.equal(a.level, b.level)


def test_usm_off_and_argument_checks() -> None:
    source = TrainingPairSource(
        CountingSampler(),
        batch_size=2,
        queue_size=0,
        generator=torch.Generator().manual_seed(0),
        device="cpu",
        usm=False,
        degrade_sharpened=False,
    )
    batch = source.next_batch()
    assert torch.equal(batch.hr_usm, batch.hr)
    g = torch.Generator()
    with pytest.raises(ValueError, match="multiple"):
        TrainingPairSource(
            CountingSampler(), batch_size=5, queue_size=12, generator=g, device="cpu"
        )
    with pytest.raises(ValueError, match="level_probs"):
        TrainingPairSource(
            CountingSampler(), batch_size=4, level_probs=(1, 0), generator=g, device="cpu"
        )
    with pytest.raises(ValueError, match="needs usm"):
        TrainingPairSource(CountingSampler(), batch_size=4, generator=g, device="cpu", usm=False)
