"""The training-data stream: its stored position continues it exactly, and only where it fits."""

from __future__ import annotations

import pytest
import torch

from dasrlib.degradation.pairs import batch_fields
from dasrlib.train.stream import DataStream


def _stream(rank: int = 0, prefetch: bool = False, queue_size: int = 4) -> DataStream:
    images = [
        torch.randint(0, 256, (3, 48, 48), generator=torch.Generator().manual_seed(i)).byte()
        for i in range(3)
    ]
    return DataStream(
        images,
        patch_size=32,
        batch_size=2,
        level_probs=(0.3, 0.3, 0.4),
        queue_size=queue_size,
        block_iters=6,
        seed=7,
        rank=rank,
        device=torch.device("cpu"),
        scale=4,
        usm=True,
        prefetch=prefetch,
    )


def _equal(a, b) -> bool:
    pairs = zip(batch_fields(a).values(), batch_fields(b).values(), strict=True)
    return all(torch.equal(x, y) for x, y in pairs)


@pytest.mark.parametrize("prefetch", [False, True])
def test_a_stored_position_continues_the_stream_exactly(prefetch: bool) -> None:
    reference = _stream()
    expected = [reference.batch(i) for i in range(5)]
    first = _stream(prefetch=prefetch)
    for i in range(2):
        first.batch(i)
        first.prefetch(i + 1)
    state = first.state_dict(2)
    first.close()
    assert ("batch.lr" in state) == prefetch
    second = _stream(prefetch=prefetch)
    assert second.load_state_dict(state, 2)
    for i in range(2, 5):
        assert _equal(second.batch(i), expected[i]), i
        second.prefetch(i + 1)
    second.close()


def test_a_position_that_does_not_fit_falls_back_to_replay() -> None:
    stream = _stream()
    for i in range(3):
        stream.batch(i)
    state = stream.state_dict(3)
    assert stream.state_dict(2) == {}  # the stream is past iteration 2
    assert not _stream(rank=1).load_state_dict(state, 3)  # another rank's stream
    assert not _stream().load_state_dict(state, 4)  # another iteration
    assert not _stream(queue_size=6).load_state_dict(state, 3)  # another queue
    assert not _stream().load_state_dict({}, 3)
    replayed = _stream()
    assert _equal(replayed.batch(3), stream.batch(3))
