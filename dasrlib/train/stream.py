"""The deterministic training-data stream: batches as a function of (seed, rank, iteration).

Exact resume (Sec. 4.1 schedule). The only randomness after initialisation is the data
stream, and it is made a deterministic function of (seed, rank, iteration): iterations are grouped
into blocks of `data_block_iters`; each block starts a fresh patch sampler generator and a fresh
`TrainingPairSource` (its 192-sample queue refilled) seeded from (seed, rank, block). A checkpoint
holds the stream's position (`DataStream.state_dict`: both generators, the queue, the batch already
synthesised for the next step), so a resume continues where the stream stopped; without it (an
older checkpoint, another rank's state) the resume rebuilds block k // data_block_iters and draws
k % data_block_iters batches to reach the same position. Either way k steps + resume + k steps
equal 2k steps bit for bit on the CPU.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import torch
from torch import Tensor

from dasrlib.data import ImageList, PatchSampler
from dasrlib.degradation.pairs import TrainingBatch, TrainingPairSource, batch_fields
from dasrlib.train.state import prefixed, unprefixed

__all__ = ["DataStream", "derive_seed", "seeded_generator"]

logger = logging.getLogger(__name__)


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed from `seed` and labels (stable across processes, machines and versions)."""
    text = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def seeded_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A `torch.Generator` on `device` seeded with `seed`."""
    return torch.Generator(device=device).manual_seed(seed)


class DataStream:
    """Training batches as a deterministic function of (seed, rank, iteration); see the module doc.

    `batch(i)` returns the batch of iteration i; consecutive calls cost one synthesis each, a jump
    rebuilds the block of i and draws up to `block_iters - 1` batches to reach it. With
    `prefetch`, `prefetch(i)` starts synthesising batch i while the training step runs: on CUDA on
    a side stream (its host-side draws then wait for that stream only, not for the training step
    queued on the main stream), and `batch(i)` hands it to the current stream (`wait_stream` +
    `record_stream`); on the CPU in one background thread, which fills the cores while the step
    runs single-threaded Python. Only that thread touches the stream's generators between
    `prefetch` and `batch`, so the batches are the same either way.
    """

    def __init__(
        self,
        images: ImageList | Sequence[Tensor],
        *,
        patch_size: int,
        batch_size: int,
        level_probs: Sequence[float],
        queue_size: int,
        block_iters: int,
        seed: int,
        rank: int,
        device: torch.device,
        scale: int,
        usm: bool,
        prefetch: bool = False,
    ) -> None:
        self.seed, self.rank, self.block_iters = seed, rank, block_iters
        self.batch_size, self.level_probs, self.device = batch_size, tuple(level_probs), device
        self.scale, self.usm = scale, usm
        self.queue_size = queue_size if queue_size % batch_size == 0 else 0
        if queue_size and not self.queue_size:
            raise ValueError(f"queue_size {queue_size} is not a multiple of the batch {batch_size}")
        # Patch positions are drawn on the CPU (no device sync); degradations on `device`.
        self._patch_generator = torch.Generator()
        self._pair_generator = torch.Generator(device=device)
        self.sampler = PatchSampler(
            images,
            patch_size=patch_size,
            generator=self._patch_generator,
            device=device,
            scale=scale,
        )
        self._source: TrainingPairSource | None = None
        self._next = -1
        self._stream: torch.cuda.Stream | None = None
        self._ready: tuple[int, TrainingBatch] | None = None
        self._worker: ThreadPoolExecutor | None = None
        self._pending: tuple[int, Future[TrainingBatch]] | None = None
        if prefetch and device.type == "cpu":
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="data-stream")
        if prefetch and device.type == "cuda":
            self._stream = torch.cuda.Stream(device=device)
            # The images were uploaded on the current stream: the side stream starts after that.
            self._stream.wait_stream(torch.cuda.current_stream(device))

    def _start_block(self, block: int) -> None:
        self._patch_generator.manual_seed(derive_seed(self.seed, "patches", self.rank, block))
        self._pair_generator.manual_seed(derive_seed(self.seed, "pairs", self.rank, block))
        self._source = TrainingPairSource(
            self.sampler,
            batch_size=self.batch_size,
            level_probs=self.level_probs,
            queue_size=self.queue_size,
            generator=self._pair_generator,
            device=self.device,
            scale=self.scale,
            usm=self.usm,
            degrade_sharpened=self.usm,
        )

    def _synthesise(self, iteration: int) -> TrainingBatch:
        block, offset = divmod(iteration, self.block_iters)
        if iteration != self._next or offset == 0:
            self._start_block(block)
            if offset:
                logger.info(
                    "data stream: drawing %d batches to reach iteration %d", offset, iteration
                )
            assert self._source is not None
            for _ in range(offset):
                self._source.next_batch()
        assert self._source is not None
        self._next = iteration + 1
        return self._source.next_batch()

    def prefetch(self, iteration: int) -> None:
        """Start synthesising the batch of `iteration` (CUDA side stream or CPU thread)."""
        if self._worker is not None:
            if self._pending is None and self._ready is None:
                self._pending = (iteration, self._worker.submit(self._synthesise, iteration))
            return
        if self._stream is None or (self._ready is not None and self._ready[0] == iteration):
            return
        with torch.cuda.stream(self._stream):
            self._ready = (iteration, self._synthesise(iteration))

    @property
    def overlaps_step(self) -> bool:
        """True when `prefetch` runs on a CPU thread: call it before the step to overlap them."""
        return self._worker is not None

    def _settle(self) -> None:
        """Wait for the CPU prefetch thread's batch and hold it as the ready one."""
        if self._pending is not None:
            ahead, future = self._pending
            self._pending = None
            self._ready = (ahead, future.result())  # a failed synthesis raises here

    def close(self) -> None:
        """Stop the CPU prefetch thread, keeping the batch it was synthesising (`state_dict`)."""
        if self._worker is not None:
            try:
                self._settle()
            finally:
                self._worker.shutdown(wait=True)
                self._worker = None

    def batch(self, iteration: int) -> TrainingBatch:
        """The training batch of `iteration` (0-based), ready for the current stream."""
        self._settle()
        ready, self._ready = self._ready, None
        if ready is not None and ready[0] == iteration:
            batch = ready[1]
        elif self._stream is None:
            return self._synthesise(iteration)
        else:
            with torch.cuda.stream(self._stream):
                batch = self._synthesise(iteration)
        if self._stream is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(self._stream)
            for tensor in batch_fields(batch).values():
                tensor.record_stream(current)  # freed memory is not reused before it is done
        return batch

    # -- resume -----------------------------------------------------------------------------------

    def state_dict(self, iteration: int) -> dict[str, Tensor]:
        """The stream's position for continuing at `iteration`, or {} when it is not there.

        Holds the (rank, iteration, next synthesis, block length, batch), both generators'
        states, the pair queue and, when prefetch already synthesised it, the batch of
        `iteration` (live tensors, not copies: write them before the next step).
        """
        self._settle()
        ready = self._ready if self._ready is not None and self._ready[0] == iteration else None
        if self._source is None or self._next != iteration + (ready is not None):
            return {}
        if self._stream is not None:  # the queue and the ready batch were written there
            torch.cuda.current_stream(self.device).wait_stream(self._stream)
        position = [self.rank, iteration, self._next, self.block_iters, self.batch_size]
        state = {
            "position": torch.tensor(position),
            "patch_generator": self._patch_generator.get_state(),
            "pair_generator": self._pair_generator.get_state(),
            **prefixed("source", self._source.queue_state()),
        }
        if ready is not None:
            fields = batch_fields(ready[1])
            if fields["hr_usm"] is fields["hr"]:  # no sharpening: one tensor, stored once
                del fields["hr_usm"]
            state.update(prefixed("batch", fields))
        return state

    def load_state_dict(self, state: dict[str, Tensor], iteration: int) -> bool:
        """Continue at `iteration` from a `state_dict`; False (the stream will replay its block
        instead) when the state is another rank's, another position's or does not fit."""
        if not state or state["position"].numel() != 5:
            return False
        rank, at, next_iteration, block_iters, batch_size = state["position"].tolist()
        here = (self.rank, iteration, self.block_iters, self.batch_size)
        if (rank, at, block_iters, batch_size) != here:
            return False  # another rank, iteration, block length or per-process batch
        if state["pair_generator"].numel() != self._pair_generator.get_state().numel():
            return False  # the degradations were drawn on another kind of device
        self._start_block(at // block_iters)
        assert self._source is not None
        try:
            self._source.load_queue_state(unprefixed("source", state))
        except ValueError as err:
            logger.warning("data stream: the checkpoint's %s; replaying the block instead", err)
            self._next = -1
            return False
        self._patch_generator.set_state(state["patch_generator"])
        self._pair_generator.set_state(state["pair_generator"])
        self._next = next_iteration
        ready = {k: t.to(self.device) for k, t in unprefixed("batch", state).items()}
        if ready:
            ready.setdefault("hr_usm", ready["hr"])
            self._ready = (iteration, TrainingBatch(**ready))
        logger.info("data stream: continuing at iteration %d from the checkpoint", iteration)
        return True
