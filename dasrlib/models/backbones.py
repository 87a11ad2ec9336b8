"""The one table of SR backbones: every plain network the package trains, mixes or profiles.

Each `Backbone` entry says, read top to bottom, how the network is built and how the rest of the
package uses it; nothing else lists backbone names:

- `dasrlib.models.build.build_model` builds it by `name` (or an alias) from keyword options, which
  is how checkpoints (``architecture`` metadata) and ``python -m dasrlib.profiling`` rebuild it;
- training (`dasrlib.train.build.build_generator`) builds it for ``stage`` pretrain or baseline,
  sized by the config's ``num_feat`` / ``num_block`` when `sized_by_config`;
- DASR (Sec. 3.1) mixes the convolutions of an entry with an `expert` name (its constructor
  takes ``conv_layer=``), and a DASR run's experts start from the entry's pretrained plain
  network (Sec. 4.1): the pretraining backbone of a topology is its entry's `name`;
- `dasrlib.train.config` accepts the names, and the tests run every entry
  (tests/unit/test_backbones.py: build the `tiny_options` version, forward, one training step,
  save and load).

Adding a backbone is its module (a keyword-only ``nn.Module`` mapping [B, 3, H, W] in [0, 1] to
[B, 3, sH, sW] that records ``architecture = {"name", "options"}``) plus one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from torch import nn

from dasrlib.models.baselines import build_rrdb, build_swinir
from dasrlib.models.experts import EDSR, SRResNet

__all__ = [
    "BACKBONES",
    "Backbone",
    "backbone",
    "backbone_names",
    "expert_names",
]


@dataclass(frozen=True, kw_only=True)
class Backbone:
    """One SR network known by name (see the module docstring for who reads which field)."""

    name: str
    """The config and checkpoint name (what the constructor records in ``architecture``)."""
    build: Callable[..., nn.Module]
    """Keyword constructor: ``build(scale=..., **options)``; with `seeded_by_generator` it also
    takes ``generator=``; with an `expert` name also ``conv_layer=``, ``num_feat=`` and
    ``num_block=``."""
    sized_by_config: bool
    """Training passes the config's ``num_feat`` and ``num_block``; otherwise the constructor's
    defaults (the published size, e.g. Table 2's RRDB and SwinIR)."""
    seeded_by_generator: bool
    """The constructor draws its initial weights from ``generator=``; otherwise from the global
    RNG, which training forks and seeds from the run's generator."""
    expert: str | None = None
    """The name DASR records for this network as its expert topology; None: not a DASR expert."""
    aliases: tuple[str, ...] = ()
    """Other names of the same network, accepted wherever `name` is (the `expert` name if it
    differs from `name`)."""
    tiny_options: Mapping[str, object] = field(default_factory=dict)
    """Options of a tiny version (a few features): what the tests build."""

    def __post_init__(self) -> None:
        if self.expert is not None and self.expert not in self.names:
            raise ValueError(f"backbone {self.name!r}: expert name {self.expert!r} is not a name")

    @property
    def names(self) -> tuple[str, ...]:
        """`name`, then the aliases."""
        return (self.name, *self.aliases)


BACKBONES: tuple[Backbone, ...] = (
    Backbone(
        name="srresnet",
        build=SRResNet,
        sized_by_config=True,
        seeded_by_generator=True,
        expert="srresnet",
        tiny_options={"num_feat": 8, "num_block": 1},
    ),
    Backbone(
        name="edsr",  # EDSR-M, the backbone of Fig. 4(g) and Table 2's EDSR
        build=EDSR,
        sized_by_config=True,
        seeded_by_generator=True,
        expert="edsr_m",
        aliases=("edsr_m",),
        tiny_options={"num_feat": 8, "num_block": 1},
    ),
    Backbone(
        name="rrdb",  # ESRGAN's RRDBNet, Table 2
        build=build_rrdb,
        sized_by_config=False,
        seeded_by_generator=False,
        tiny_options={"num_feat": 8, "num_block": 1},
    ),
    Backbone(
        name="swinir",  # Real-SwinIR-M, Table 2
        build=build_swinir,
        sized_by_config=False,
        seeded_by_generator=False,
        tiny_options={"embed_dim": 12, "depths": [1], "num_heads": [2], "window_size": 8},
    ),
)
"""Every backbone, in the order the help texts list them."""


def backbone(name: str) -> Backbone:
    """The entry called `name` (or an alias); ValueError listing the known names otherwise."""
    for entry in BACKBONES:
        if name in entry.names:
            return entry
    raise ValueError(f"unknown backbone {name!r}; expected one of {list(backbone_names())}")


def backbone_names() -> tuple[str, ...]:
    """Every backbone name and alias (what ``stage`` pretrain and baseline accept)."""
    return tuple(n for entry in BACKBONES for n in entry.names)


def expert_names() -> tuple[str, ...]:
    """Every name (and alias) of a backbone DASR can mix (what ``stage`` dasr accepts)."""
    return tuple(n for entry in BACKBONES if entry.expert is not None for n in entry.names)
