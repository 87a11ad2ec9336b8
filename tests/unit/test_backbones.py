"""Every entry of the backbone table (`dasrlib.models.backbones`) is built, run, trained one step
and round-tripped through a weights file; a new entry is tested by being added.

`TinyNet` shows what adding a backbone takes: its module (here, in this file) and one
`Backbone` entry. The fixture adds that entry to the table; nothing else names it, yet config
validation, training, DASR, `build_model` and `load_model` all accept it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from dasrlib.models import backbones
from dasrlib.models.backbones import Backbone
from dasrlib.models.build import build_model, model_names
from dasrlib.models.checkpoints import load_model, save_weights
from dasrlib.models.dasr import DASR
from dasrlib.models.mixed import MixedConv2d, MixedWeights, PixelShuffle, apply_layer
from dasrlib.train.build import build_generator
from dasrlib.train.config import config_from_parameters


class TinyNet(nn.Module):
    """A minimal backbone: convs with ReLU, then a pixel-shuffle upsampler, plus bilinear skip.

    It follows the expert protocol (``conv_layer=``; ``forward(x, mixed)`` through
    `apply_layer`), so DASR can mix it.
    """

    def __init__(
        self,
        *,
        num_feat: int = 8,
        num_block: int = 1,
        scale: int = 4,
        conv_layer: type[nn.Module] = nn.Conv2d,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.architecture = {
            "name": "tinynet",
            "options": {"num_feat": num_feat, "num_block": num_block, "scale": scale},
        }

        def conv(cin: int, cout: int) -> nn.Module:
            return (
                MixedConv2d(cin, cout, 3)
                if conv_layer is MixedConv2d
                else conv_layer(cin, cout, 3, 1, 1)
            )

        channels = [3] + [num_feat] * num_block
        self.body = nn.ModuleList(conv(a, b) for a, b in zip(channels, channels[1:], strict=False))
        self.conv_up = conv(num_feat, 3 * scale * scale)
        self.shuffle = PixelShuffle(scale)
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.05, generator=generator)
                nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, mixed: MixedWeights | None = None) -> Tensor:
        out = x
        for layer in self.body:
            out = torch.relu(apply_layer(layer, out, mixed))
        out = self.shuffle(apply_layer(self.conv_up, out, mixed))
        base = nn.functional.interpolate(x, scale_factor=self.scale, mode="bilinear")
        return out + base


TINYNET = Backbone(
    name="tinynet",
    build=TinyNet,
    sized_by_config=True,
    seeded_by_generator=True,
    expert="tinynet",
    tiny_options={"num_feat": 4, "num_block": 2},
)
"""Adding a backbone: this entry in `dasrlib.models.backbones.BACKBONES`."""


@pytest.fixture(autouse=True)
def with_tinynet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backbones, "BACKBONES", (*backbones.BACKBONES, TINYNET))


ENTRIES = {entry.name: entry for entry in (*backbones.BACKBONES, TINYNET)}


def _build_tiny(entry: Backbone, **extra: object) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # spandrel's networks draw from the global RNG
        options = {**entry.tiny_options, **extra}
        if entry.seeded_by_generator:
            options["generator"] = torch.Generator().manual_seed(0)
        return entry.build(**options)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_every_backbone_builds_runs_trains_and_round_trips(name: str, tmp_path: Path) -> None:
    entry = backbones.backbone(name)
    model = _build_tiny(entry)
    assert model.architecture["name"] == entry.name
    image = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    out = model(image)
    assert out.shape == (2, 3, 64, 64)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    loss = (out - torch.nn.functional.interpolate(image, scale_factor=4)).abs().mean()
    assert torch.isfinite(loss)
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any((p - b).abs().max() > 0 for p, b in zip(model.parameters(), before, strict=True))
    model.eval()
    save_weights(model, tmp_path / "m.safetensors")
    loaded = load_model(tmp_path / "m.safetensors").eval()
    assert type(loaded) is type(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(image), model(image), rtol=0, atol=0)
    for alias in entry.names:
        assert type(build_model(alias, **entry.tiny_options)) is type(model)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_every_backbone_trains_as_a_stage(name: str) -> None:
    entry = backbones.backbone(name)
    size = {"num_feat": 4, "num_block": 1} if entry.sized_by_config else {}
    config = config_from_parameters({"stage": "baseline", "backbone": name, **size})
    model = build_generator(config, generator=torch.Generator().manual_seed(0))
    if entry.sized_by_config:  # else the published size (Table 2)
        assert model.architecture["options"]["num_feat"] == 4
    assert model.architecture["name"] == entry.name


@pytest.mark.parametrize("name", sorted(n for n, e in ENTRIES.items() if e.expert))
def test_every_expert_backbone_is_mixed_by_dasr(name: str) -> None:
    entry = backbones.backbone(name)
    tiny = {"num_feat": 4, "num_block": 1, "num_experts": 2, "predictor_feat": 4}
    model = DASR(backbone=name, **tiny, generator=torch.Generator().manual_seed(0)).eval()
    assert model.architecture["options"]["backbone"] == entry.expert
    lr = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    a = torch.tensor([0.25, 0.75])
    with torch.no_grad():
        fused = model.fuse(a)
        assert fused.architecture["name"] == entry.name
        torch.testing.assert_close(fused(lr), model.super_resolve(lr, a), atol=1e-5, rtol=0)
    config = config_from_parameters({"stage": "dasr", "backbone": name, **tiny})
    built = build_generator(config, generator=torch.Generator().manual_seed(0))
    assert isinstance(built, DASR) and built.backbone == entry.expert


def test_the_example_entry_is_known_everywhere_and_only_through_the_table() -> None:
    assert "tinynet" in backbones.backbone_names() and "tinynet" in backbones.expert_names()
    assert "tinynet" in model_names()
    with pytest.raises(ValueError, match="unknown backbone 'rcan'"):
        backbones.backbone("rcan")
    with pytest.raises(ValueError, match="rcan"):
        config_from_parameters({"stage": "baseline", "backbone": "rcan"})
    with pytest.raises(ValueError, match="DASR backbone 'rrdb'"):
        config_from_parameters({"stage": "dasr", "backbone": "rrdb"})


def test_the_table_lists_the_paper_networks_with_their_aliases() -> None:
    assert [b.name for b in backbones.BACKBONES if b is not TINYNET] == [
        "srresnet",
        "edsr",
        "rrdb",
        "swinir",
    ]
    assert backbones.backbone("edsr_m").name == "edsr"
    assert backbones.backbone("edsr").expert == "edsr_m"
    assert [b.name for b in backbones.BACKBONES if b.expert] == ["srresnet", "edsr", "tinynet"]
    with pytest.raises(ValueError, match="not a name"):
        Backbone(
            name="x", build=TinyNet, sized_by_config=True, seeded_by_generator=True, expert="y"
        )
