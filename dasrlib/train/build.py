"""What a stage trains, built from its config: generator, discriminator, VGG loss, EMA, DDP.

Every network is built through its own constructor and initialised from a generator seeded from
(seed, label), so a run's initial weights depend on its config alone. Multi-process data
parallelism (``torchrun --nproc_per_node=K -m dasrlib.train ...``): one process per device,
`batch_size` is the total batch split evenly over the processes, each with its own data seed;
the generator and the discriminator are wrapped in ``DistributedDataParallel``, which averages
their gradients (with ``find_unused_parameters`` during a predictor warm-up, whose loss reaches P
alone). Rank 0 writes every file.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from dasrlib import losses
from dasrlib.device import resolve_device
from dasrlib.models import backbones
from dasrlib.models.checkpoints import read_state_dict
from dasrlib.models.dasr import DASR
from dasrlib.models.discriminator import UNetDiscriminatorSN
from dasrlib.results import project_path
from dasrlib.train.config import TrainConfig
from dasrlib.train.state import unprefixed
from dasrlib.train.stream import derive_seed, seeded_generator

__all__ = [
    "EMA",
    "DistContext",
    "build_discriminator",
    "build_generator",
    "build_perceptual",
    "data_parallel",
    "initial_state",
    "setup_distributed",
]

logger = logging.getLogger(__name__)


def build_generator(config: TrainConfig, *, generator: torch.Generator) -> nn.Module:
    """The network a (single) stage trains, initialised from `generator` (before `init_from`)."""
    model, scale = config.model, config.data.scale
    if config.stage == "dasr":
        return DASR(
            num_experts=model.num_experts,
            backbone=model.backbone,
            scale=scale,
            num_feat=model.num_feat,
            num_block=model.num_block,
            weighting=model.weighting,
            mixing=model.mixing,
            per_sample_impl=model.per_sample_impl,
            predictor_feat=model.predictor_feat,
            generator=generator,
        )
    entry = backbones.backbone(model.backbone)
    size = {"num_feat": model.num_feat, "num_block": model.num_block}
    options = size if entry.sized_by_config else {}  # else the published size (Table 2)
    if entry.seeded_by_generator:
        return entry.build(**options, scale=scale, generator=generator)
    # spandrel's networks initialise from the global RNG: draw under a fork seeded from the run.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        return entry.build(**options, scale=scale)


def build_discriminator(config: TrainConfig) -> UNetDiscriminatorSN:
    """The U-Net discriminator with spectral norm (Real-ESRGAN's), seeded from the run's seed."""
    disc_gen = seeded_generator(derive_seed(config.seed, "discriminator"))
    # spectral_norm draws its power-iteration vectors u, v from the global RNG: fork it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(config.seed, "spectral_norm"))
        return UNetDiscriminatorSN(num_feat=config.model.disc_num_feat, generator=disc_gen)


def build_perceptual(config: TrainConfig) -> losses.PerceptualLoss:
    """The VGG perceptual loss of Eq. 3 with the config's layer weights on the paper's layers.

    `vgg_network` "auto" takes VGG19 where its weights file is, else the converted VGG16; a
    random VGG (tests) without a weights file is VGG19 unless named.
    """
    loss = config.loss
    network = loss.vgg_network
    if not loss.allow_random_vgg_for_tests or loss.vgg_weights is not None:
        network, _ = losses.resolve_vgg_network(network, weights_path=loss.vgg_weights)
    elif network == "auto":
        network = "vgg19"
    names = losses.paper_layers(network)
    return losses.PerceptualLoss(
        network=network,
        layer_weights=dict(zip(names, loss.perceptual_layer_weights, strict=True)),
        weights_path=loss.vgg_weights,
        allow_random_vgg_for_tests=loss.allow_random_vgg_for_tests,
        generator=seeded_generator(derive_seed(config.seed, "random_vgg")),
    )


def initial_state(path: str) -> dict[str, Tensor]:
    """Weights to start from: a run folder's model.safetensors, a checkpoint's EMA, or a file."""
    source = project_path(path)
    if source.is_dir():
        source = source / "model.safetensors"
    if not source.is_file():
        raise FileNotFoundError(f"init_from: {source} does not exist")
    state = read_state_dict(source)
    if any(k.startswith("ema.") for k in state):  # a training checkpoint: take its EMA
        state = unprefixed("ema", state)
    logger.info("initialising from %s", source)
    return state


class EMA:
    """Exponential moving average of the parameters (decay 0.999, Sec. 4.1); buffers copied."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_params = list(self.model.parameters())
        params = [p.detach() for p in model.parameters()]
        if self.decay == 0.0:
            torch._foreach_copy_(ema_params, params)
        else:
            torch._foreach_lerp_(ema_params, params, 1.0 - self.decay)
        for ema_buffer, buffer in zip(self.model.buffers(), model.buffers(), strict=True):
            ema_buffer.copy_(buffer)


@dataclass(frozen=True)
class DistContext:
    """Which process this is under torchrun; the default is the single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_spec: str) -> tuple[DistContext, torch.device]:
    """Read torchrun's environment; init the process group (nccl on CUDA, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_spec)
    if world_size == 1:
        return DistContext(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank, world_size, local_rank, owns), device


def data_parallel(
    module: nn.Module, dist_ctx: DistContext, device: torch.device, *, find_unused: bool = False
) -> nn.Module:
    """`module` wrapped in ``DistributedDataParallel`` under torchrun; itself in one process."""
    if dist_ctx.world_size == 1:
        return module
    return nn.parallel.DistributedDataParallel(
        module,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=find_unused,
    )
