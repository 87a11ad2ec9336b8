"""The training-data stream: its stored position continues it exactly, and only where it fits."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from dasrlib.degradation.pairs import batch_fields
from dasrlib.train.stream import DataStream


def _stream(
    rank: int = 0, prefetch: bool = False, queue_size: int = 4, usm: bool = True, batch: int = 2
) -> DataStream:
    images = [
        torch.randint(0, 256, (3, 48, 48), generator=torch.Generator().manual_seed(i)).byte()
        for i in range(3)
    ]
    return DataStream(
        images,
        patch_size=32,
        batch_size=batch,
        level_probs=(0.3, 0.3, 0.4),
        queue_size=queue_size,
        block_iters=6,
        seed=7,
        rank=rank,
        device=torch.device("cpu"),
        scale=4,
        usm=usm,
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
    assert not _stream(batch=1).load_state_dict(state, 3)  # another per-process batch
    other_device = {**state, "pair_generator": state["pair_generator"][:16]}  # a CUDA state
    assert not _stream().load_state_dict(other_device, 3)
    assert not _stream().load_state_dict({}, 3)
    replayed = _stream()
    assert _equal(replayed.batch(3), stream.batch(3))


def test_a_stream_without_queue_or_sharpening_stores_its_one_hr_tensor_once(tmp_path) -> None:
    """Without USM the batch's hr_usm is hr itself: safetensors refuses shared tensors, so the
    state holds it once and the resume restores both."""
    reference = _stream(queue_size=0, usm=False)
    expected = [reference.batch(i) for i in range(3)]
    first = _stream(queue_size=0, usm=False, prefetch=True)
    first.batch(0)
    first.prefetch(1)
    state = first.state_dict(1)
    first.close()
    save_file(state, str(tmp_path / "state.safetensors"))
    second = _stream(queue_size=0, usm=False)
    assert second.load_state_dict(load_file(str(tmp_path / "state.safetensors")), 1)
    for i in (1, 2):
        batch = second.batch(i)
        assert _equal(batch, expected[i]) and torch.equal(batch.hr_usm, batch.hr)
