"""One training stage's state and its optimiser step (Sec. 4.1, Eq. 3).

`Trainer` holds the networks, optimisers, loss modules, data stream and validation set of one
stage; `step` is one iteration (generator, EMA, then discriminator); `checkpoint_state` and
`load_checkpoint_state` turn all of it into the checkpoint pair of `dasrlib.train.state` and back.
The loop around it is `dasrlib.train.loop`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from dasrlib import losses
from dasrlib.config import config_hash, to_dict
from dasrlib.data import open_hr_images
from dasrlib.degradation.pairs import TrainingBatch
from dasrlib.device import autocast_dtype, describe_precision, prefers_channels_last
from dasrlib.io import atomic_write_text
from dasrlib.models.checkpoints import save_weights
from dasrlib.models.dasr import DASR
from dasrlib.results import project_path, run_metadata
from dasrlib.train.build import (
    EMA,
    DistContext,
    build_discriminator,
    build_generator,
    build_perceptual,
    data_parallel,
    initial_state,
)
from dasrlib.train.config import TrainConfig, resume_hash
from dasrlib.train.state import (
    RUN_RECORD,
    STATE_FORMAT,
    optimizer_from_files,
    optimizer_to_files,
    prefixed,
    unprefixed,
    write_checkpoint,
)
from dasrlib.train.stream import DataStream, derive_seed, seeded_generator
from dasrlib.train.validation import ValidationSet, holdout, sr_of

__all__ = ["NonFiniteLossError", "Trainer"]

logger = logging.getLogger(__name__)

_EXPORT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class NonFiniteLossError(RuntimeError):
    """Too many consecutive non-finite losses; the last good checkpoint is left untouched."""


class Trainer:
    """One (single) stage: networks, optimisers, losses, data, validation, checkpoints.

    `dist_ctx` says which torchrun process this is (default: the only one); `device` is where
    everything runs. `prepare_data` must run before `step`.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        device: torch.device,
        dist_ctx: DistContext | None = None,
    ) -> None:
        if config.stage == "both":
            raise ValueError("a Trainer runs one stage; stage='both' runs through train()")
        dist_ctx = dist_ctx or DistContext()
        self.config = config
        self.config_hash = config_hash(config)  # recorded in every file the run writes
        self.resume_hash = resume_hash(config)
        self.dist = dist_ctx
        self.device = device
        self.run_dir = project_path(config.run.path)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.is_dasr = config.stage == "dasr"
        # a checkpoint's data.* state, kept until prepare_data restores the stream from it
        self.resumed_stream: dict[str, Tensor] = {}
        self.amp_dtype = autocast_dtype(device, config.run.precision)
        channels_last = config.run.channels_last
        self.channels_last = (
            prefers_channels_last(device, self.amp_dtype)
            if channels_last is None
            else channels_last
        )
        logger.info(
            "precision: %s",
            describe_precision(device, config.run.precision, channels_last=self.channels_last),
        )
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            if config.run.precision in ("tf32", "auto", "bf16"):
                torch.backends.cuda.matmul.allow_tf32 = True
                torch.backends.cudnn.allow_tf32 = True
        batch_size = config.data.batch_size
        if batch_size % dist_ctx.world_size:
            raise ValueError(
                f"batch_size {batch_size} is not divisible by {dist_ctx.world_size} processes"
            )
        self.local_batch = batch_size // dist_ctx.world_size
        self.weights = config.loss_weights  # the terms of Eq. 3 this stage uses
        logger.info("stage %s: loss terms %s", config.stage, self.weights)

        # Networks (seeded), initial weights, EMA.
        init_gen = seeded_generator(derive_seed(config.seed, "init"))
        self.generator = build_generator(config, generator=init_gen).to(device)
        if config.model.init_from is not None:
            self._load_initial_weights(initial_state(config.model.init_from))
        self.generator = self._layout(self.generator)
        self.generator.train()
        self.ema = EMA(self.generator, config.optimiser.ema_decay)
        self.iteration = 0
        self._break_expert_symmetry()
        optim = config.optimiser
        betas = tuple(optim.betas)
        # The fused kernel on the CPU: one pass over all parameters instead of a loop of small
        # tensor ops (the same update rule).
        fused = {"fused": True} if device.type == "cpu" else {}
        self.opt_g = torch.optim.Adam(
            self.generator.parameters(), lr=optim.lr, betas=betas, **fused
        )
        self.train_forward = data_parallel(
            self.generator,
            dist_ctx,
            device,
            find_unused=self.is_dasr and optim.predictor_warmup_iters > 0,
        )
        if config.run.compile:
            self.train_forward = torch.compile(self.train_forward)

        self.perceptual: losses.PerceptualLoss | None = None
        if "perceptual" in self.weights:
            self.perceptual = self._layout(build_perceptual(config).to(device))
        self.disc: nn.Module | None = None
        self.opt_d: torch.optim.Adam | None = None
        self.gan_loss = losses.GANLoss()
        if "adversarial" in self.weights:
            self.disc = self._layout(build_discriminator(config).to(device))
            self.opt_d = torch.optim.Adam(
                self.disc.parameters(), lr=optim.disc_lr, betas=betas, **fused
            )
            # The generator's adversarial term calls `self.disc` (frozen, no gradient sync); the
            # discriminator's own update goes through this (data-parallel) module.
            self.disc_train = data_parallel(self.disc, dist_ctx, device)
        fp16 = self.amp_dtype == torch.float16
        self.scaler_g = torch.amp.GradScaler(device.type, enabled=fp16)
        self.scaler_d = torch.amp.GradScaler(device.type, enabled=fp16)

        self.nonfinite_in_a_row = 0
        self.nonfinite_total = 0
        self.data: DataStream | None = None
        self.validation: ValidationSet | None = None

    # -- initialisation ---------------------------------------------------------------------

    def _layout(self, module: nn.Module) -> nn.Module:
        return module.to(memory_format=torch.channels_last) if self.channels_last else module

    def _load_initial_weights(self, state: dict[str, Tensor]) -> None:
        own = self.generator.state_dict()
        if set(state) == set(own):
            self.generator.load_state_dict(state)
            return
        if isinstance(self.generator, DASR):
            noise_gen = seeded_generator(derive_seed(self.config.seed, "expert_noise"))
            self.generator.init_experts_from(
                state, noise_std=self.config.model.expert_init_noise, generator=noise_gen
            )
            return
        self.generator.load_state_dict(state)  # raises naming the mismatched keys

    def _break_expert_symmetry(self) -> None:
        """DASR experts that are copies of one network never diverge by themselves
        (`DASR.break_expert_symmetry`): perturb A of the generator and of its EMA alike, seeded
        by the run's seed and iteration. Output-preserving; a no-op once the experts differ."""
        if not isinstance(self.generator, DASR):
            return
        seed = derive_seed(self.config.seed, "expert_symmetry", self.iteration)
        broken = [
            model.break_expert_symmetry(seeded_generator(seed))
            for model in (self.generator, self.ema.model)
        ]
        if any(broken):
            logger.info(
                "iteration %d: the %d experts are copies of one network; A's last layer gets "
                "zero-sum random weights so that they can diverge (sum of a unchanged)",
                self.iteration,
                self.generator.num_experts,
            )

    def prepare_data(self) -> None:
        """Open the HR images, hold out the validation images, start the data stream."""
        config, data = self.config, self.config.data
        embedded = data.data_root in (None, "embedded")
        root = None if embedded else project_path(data.data_root)
        images = open_hr_images(root, preload=True)
        train_images, val_images = holdout(config, images)
        logger.info(
            "data: %d training images, %d held out (%s)",
            len(train_images),
            0 if val_images is None else len(val_images),
            root or "embedded photos",
        )
        self.data = DataStream(
            train_images,
            patch_size=data.patch_size,
            batch_size=self.local_batch,
            level_probs=data.level_probs,
            queue_size=data.queue_size,
            block_iters=data.data_block_iters,
            seed=config.seed,
            rank=self.dist.rank,
            device=self.device,
            scale=data.scale,
            usm=data.usm_targets,
            prefetch=config.run.prefetch_data,
        )
        self.data.load_state_dict(self.resumed_stream, self.iteration)
        self.resumed_stream = {}
        self.validation = None
        if val_images is not None and self.dist.is_main:
            self.validation = ValidationSet.for_config(config, val_images, self.device)

    # -- one iteration ----------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _finite(self, loss: Tensor) -> bool:
        value = loss.detach().float()
        if self.dist.world_size > 1:
            value = value.clone()
            dist.all_reduce(value)  # any rank's NaN/inf makes every rank skip
        return bool(torch.isfinite(value))

    def lr_factor(self) -> float:
        """The learning-rate multiplier at the current iteration (`lr_gamma` per milestone)."""
        optim = self.config.optimiser
        passed = sum(1 for m in optim.lr_milestones if self.iteration >= m)
        return optim.lr_gamma**passed

    def _skip(self, what: str, values: dict[str, Tensor]) -> None:
        self.nonfinite_in_a_row += 1
        self.nonfinite_total += 1
        shown = {k: float(v.detach()) for k, v in values.items()}
        logger.warning(
            "iteration %d: non-finite %s loss %s; step skipped", self.iteration, what, shown
        )
        if self.nonfinite_in_a_row >= self.config.optimiser.max_nonfinite_in_a_row:
            raise NonFiniteLossError(
                f"{self.nonfinite_in_a_row} non-finite losses in a row (last at iteration "
                f"{self.iteration}, {what}: {shown}); the last good checkpoint is in "
                f"{self.ckpt_dir}. Lower lr, check the data, or raise max_nonfinite_in_a_row."
            )

    def generator_losses(
        self, batch: TrainingBatch, *, warmup: bool = False
    ) -> tuple[dict[str, Tensor], Tensor | None]:
        """Loss terms of Eq. 3 (unweighted) and their weighted sum as ``terms["total"]``; and sr.

        During the predictor warm-up the total is the regression loss alone (it reaches P only).
        """
        weights = self.weights
        lr_img = batch.lr
        target = batch.hr_usm if self.config.data.usm_targets else batch.hr
        if self.channels_last:
            lr_img = lr_img.contiguous(memory_format=torch.channels_last)
        terms: dict[str, Tensor] = {}
        sr = None
        with self._autocast():
            if warmup:
                # One process runs P alone; under DDP the wrapped forward keeps the ranks in step.
                v_hat = (
                    self.generator.predict_degradation(lr_img)
                    if self.dist.world_size == 1
                    else self.train_forward(lr_img).v_hat
                )
                terms["regression"] = losses.regression_loss(v_hat, batch.v)
                terms["total"] = terms["regression"]
                return terms, None
            output = self.train_forward(lr_img)
            sr = sr_of(output)
            if "pixel" in weights:
                terms["pixel"] = losses.pixel_loss(sr, target)
            if "regression" in weights:
                terms["regression"] = losses.regression_loss(output.v_hat, batch.v)
            if self.perceptual is not None:
                terms["perceptual"] = self.perceptual(sr, target)
            if self.disc is not None:
                self.disc.requires_grad_(False)
                terms["adversarial"] = self.gan_loss(self.disc(sr), True)
            terms["total"] = sum(weights[k] * v for k, v in terms.items())
        return terms, sr

    def step(self) -> dict[str, Tensor]:
        """One optimiser step (generator, then discriminator); returns the detached loss terms."""
        if self.data is None:
            raise RuntimeError("Trainer.step before prepare_data")
        optim = self.config.optimiser
        factor = self.lr_factor()
        for group in self.opt_g.param_groups:
            group["lr"] = optim.lr * factor
        batch = self.data.batch(self.iteration)
        if self.data.overlaps_step and self.iteration + 1 < self.config.schedule.iterations:
            self.data.prefetch(self.iteration + 1)  # synthesised while this step runs
        warmup = self.is_dasr and self.iteration < optim.predictor_warmup_iters
        terms, sr = self.generator_losses(batch, warmup=warmup)
        total = terms["total"]
        if not self._finite(total):
            self._skip("generator", terms)
            return {k: v.detach() for k, v in terms.items()}
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler_g.scale(total).backward()
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()
        self.ema.update(self.generator)

        if self.disc is not None and sr is not None:
            assert self.opt_d is not None
            for group in self.opt_d.param_groups:
                group["lr"] = optim.disc_lr * factor
            self.disc.requires_grad_(True)
            hr = (
                batch.hr.contiguous(memory_format=torch.channels_last)
                if self.channels_last
                else batch.hr
            )
            with self._autocast():  # real and fake in one forward (no normalisation layers)
                logits = self.disc_train(torch.cat([hr, sr.detach().to(hr.dtype)]))
                real = self.gan_loss(logits[: hr.shape[0]], True)
                fake = self.gan_loss(logits[hr.shape[0] :], False)
                d_total = real + fake
            terms["disc"] = d_total
            if not self._finite(d_total):
                self._skip("discriminator", {"disc": d_total})
                return {k: v.detach() for k, v in terms.items()}
            self.opt_d.zero_grad(set_to_none=True)
            self.scaler_d.scale(d_total).backward()
            self.scaler_d.step(self.opt_d)
            self.scaler_d.update()
        self.nonfinite_in_a_row = 0
        return {k: v.detach() for k, v in terms.items()}

    def advance(self) -> dict[str, Tensor]:
        """`step`, count the iteration, and start synthesising the next batch (CUDA prefetch)."""
        terms = self.step()
        self.iteration += 1
        if self.iteration < self.config.schedule.iterations:
            assert self.data is not None
            self.data.prefetch(self.iteration)
        return terms

    # -- checkpoints --------------------------------------------------------------------------

    def checkpoint_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Every tensor (prefixed) and the JSON state of a checkpoint at this iteration."""
        config = self.config
        tensors = {
            **prefixed("generator", self.generator.state_dict()),
            **prefixed("ema", self.ema.model.state_dict()),
        }
        if self.data is not None:
            tensors.update(prefixed("data", self.data.state_dict(self.iteration)))
        opt_g_tensors, opt_g_meta = optimizer_to_files(self.opt_g, "optimizer_g")
        tensors.update(opt_g_tensors)
        state: dict[str, Any] = {
            "format": STATE_FORMAT,
            "iteration": self.iteration,
            "stage": config.stage,
            "config": to_dict(config),
            "config_hash": self.config_hash,
            "resume_hash": self.resume_hash,
            "nonfinite_in_a_row": self.nonfinite_in_a_row,
            "nonfinite_total": self.nonfinite_total,
            "optimizer_g": opt_g_meta,
            "scaler_g": self.scaler_g.state_dict(),
            "world_size": self.dist.world_size,
            "rng": {
                "design": "data stream re-seeded from (seed, rank, block) every data_block_iters; "
                "its position within the block in the data.* tensors",
                "seed": config.seed,
                "data_block_iters": config.data.data_block_iters,
            },
            "torch": torch.__version__,
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if self.disc is not None and self.opt_d is not None:
            tensors.update(prefixed("discriminator", self.disc.state_dict()))
            opt_d_tensors, opt_d_meta = optimizer_to_files(self.opt_d, "optimizer_d")
            tensors.update(opt_d_tensors)
            state["optimizer_d"] = opt_d_meta
            state["scaler_d"] = self.scaler_d.state_dict()
        return tensors, state

    def load_checkpoint_state(self, tensors: dict[str, Tensor], state: dict[str, Any]) -> None:
        """Continue from a checkpoint (`dasrlib.train.state.resume_from` checked it fits)."""
        if state["world_size"] != self.dist.world_size:
            logger.warning(
                "resuming a %d-process run with %d processes: the data stream differs from an "
                "uninterrupted run",
                state["world_size"],
                self.dist.world_size,
            )
        self.generator.load_state_dict(unprefixed("generator", tensors))
        self.ema.model.load_state_dict(unprefixed("ema", tensors))
        optimizer_from_files(self.opt_g, "optimizer_g", tensors, state["optimizer_g"])
        self.scaler_g.load_state_dict(state["scaler_g"])
        if self.disc is not None and self.opt_d is not None:
            self.disc.load_state_dict(unprefixed("discriminator", tensors))
            optimizer_from_files(self.opt_d, "optimizer_d", tensors, state["optimizer_d"])
            self.scaler_d.load_state_dict(state["scaler_d"])
        self.iteration = state["iteration"]
        self.resumed_stream = unprefixed("data", tensors)
        self.nonfinite_in_a_row = state["nonfinite_in_a_row"]
        self.nonfinite_total = state["nonfinite_total"]
        logger.info("resumed %s at iteration %d", self.run_dir, self.iteration)
        self._break_expert_symmetry()

    def save_checkpoint(self) -> None:
        """Write the checkpoint pair of this iteration (main process only)."""
        if not self.dist.is_main:
            return
        tensors, state = self.checkpoint_state()
        write_checkpoint(self.ckpt_dir, tensors, state)
        logger.info("checkpoint at iteration %d in %s", self.iteration, self.ckpt_dir)

    # -- outputs --------------------------------------------------------------------------------

    def validate(self) -> list[dict[str, Any]]:
        """Validation rows (level, psnr_y_db, bicubic_psnr_y_db, n_images) of the EMA model."""
        if self.validation is None:
            return []
        rows = self.validation.evaluate(self.ema.model)
        for row in rows:
            logger.info(
                "iteration %d, %s: PSNR-Y %.2f dB (bicubic %.2f dB, %d images)",
                self.iteration,
                row["level"],
                row["psnr_y_db"],
                row["bicubic_psnr_y_db"],
                row["n_images"],
            )
        return rows

    def export(self) -> Path | None:
        """Write the EMA generator to ``<run>/model.safetensors`` (`load_model` reads it)."""
        if not self.dist.is_main:
            return None
        path = self.run_dir / "model.safetensors"
        model = self.ema.model
        if self.channels_last:  # export a plainly laid-out copy
            model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
        save_weights(
            model,
            path,
            dtype=_EXPORT_DTYPES[self.config.run.export_dtype],
            metadata={
                "iteration": self.iteration,
                "stage": self.config.stage,
                "config_hash": self.config_hash,
                "ema_decay": self.config.optimiser.ema_decay,
            },
        )
        return path

    def write_run_json(self, status: str, extra: dict[str, Any] | None = None) -> None:
        """Write ``<run>/run.json``: status, iteration, config and hashes, provenance."""
        if not self.dist.is_main:
            return
        config = self.config
        record = {
            "status": status,
            "iteration": self.iteration,
            "config": to_dict(config),
            "config_hash": self.config_hash,
            "resume_hash": self.resume_hash,
            "world_size": self.dist.world_size,
            "precision": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "fp32",
            "channels_last": self.channels_last,
            "loss_weights": self.weights,
            "perceptual": None
            if self.perceptual is None
            else {"network": self.perceptual.network, "weights": str(self.perceptual.weights_file)},
            "metadata": run_metadata(config=to_dict(config), seed=config.seed, device=self.device),
            **(extra or {}),
        }
        atomic_write_text(
            self.run_dir / RUN_RECORD, json.dumps(record, indent=2, default=str) + "\n"
        )
