"""The training objective of Eq. 3: pixel, regression, perceptual (VGG19) and adversarial terms.

L = L_pixel + lambda_1 L_regression + lambda_2 L_perceptual + lambda_3 L_adversarial, with
lambda = (1, 1, 0.1) in the paper (Sec. 4.1). L_pixel and L_regression are L1. The perceptual term
compares VGG19 features taken before the ReLU at conv1_2, conv2_2, conv3_4, conv4_4 and conv5_4
(layer weights 0.1, 0.1, 1, 1, 1) with L1 after ImageNet normalisation, as in Real-ESRGAN. The
adversarial term is the vanilla (binary cross-entropy) GAN loss on the logits of the U-Net
discriminator.

The VGG19 weights are torchvision's ImageNet checkpoint, read from disk only (an explicit path,
else the torch hub cache); nothing is downloaded. Where that file is absent, ``network="auto"``
falls back to torchvision's ImageNet VGG16 features converted by
``python -m dasrlib.data fetch imagenet-features`` (`dasrlib.pretrained`), at conv1_2, conv2_2,
conv3_3, conv4_3 and conv5_3 with the same layer weights: a deviation from the paper, recorded as
`PerceptualLoss.network` in the run record. A randomly initialised VGG19 exists only for tests,
behind an argument whose name says so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "VGG16_LAYER_INDEX",
    "VGG_NETWORKS",
    "VGG19_CHECKPOINT_NAME",
    "VGG19_LAYER_INDEX",
    "GANLoss",
    "PerceptualLoss",
    "VGGWeightsNotFound",
    "default_vgg19_path",
    "paper_layers",
    "pixel_loss",
    "regression_loss",
    "resolve_vgg_network",
]

logger = logging.getLogger(__name__)

VGG19_CHECKPOINT_NAME = "vgg19-dcbb9e9d.pth"
"""File name of torchvision's ImageNet VGG19 weights (`VGG19_Weights.IMAGENET1K_V1`)."""

VGG19_LAYER_INDEX: dict[str, int] = {
    "conv1_1": 0,
    "conv1_2": 2,
    "conv2_1": 5,
    "conv2_2": 7,
    "conv3_1": 10,
    "conv3_2": 12,
    "conv3_3": 14,
    "conv3_4": 16,
    "conv4_1": 19,
    "conv4_2": 21,
    "conv4_3": 23,
    "conv4_4": 25,
    "conv5_1": 28,
    "conv5_2": 30,
    "conv5_3": 32,
    "conv5_4": 34,
}
"""Index of each conv layer in `torchvision.models.vgg19().features` (its output is pre-ReLU)."""

VGG16_LAYER_INDEX: dict[str, int] = {
    "conv1_1": 0,
    "conv1_2": 2,
    "conv2_1": 5,
    "conv2_2": 7,
    "conv3_1": 10,
    "conv3_2": 12,
    "conv3_3": 14,
    "conv4_1": 17,
    "conv4_2": 19,
    "conv4_3": 21,
    "conv5_1": 24,
    "conv5_2": 26,
    "conv5_3": 28,
}
"""Index of each conv layer in `torchvision.models.vgg16().features` (its output is pre-ReLU)."""

VGG_NETWORKS: dict[str, tuple[str, dict[str, int], tuple[str, ...]]] = {
    "vgg19": ("E", VGG19_LAYER_INDEX, ("conv1_2", "conv2_2", "conv3_4", "conv4_4", "conv5_4")),
    "vgg16": ("D", VGG16_LAYER_INDEX, ("conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3")),
}
"""network -> (torchvision cfg key, conv layer indices, the five layers of Eq. 3's loss)."""

PAPER_LAYER_WEIGHTS: dict[str, float] = {
    "conv1_2": 0.1,
    "conv2_2": 0.1,
    "conv3_4": 1.0,
    "conv4_4": 1.0,
    "conv5_4": 1.0,
}

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class VGGWeightsNotFound(FileNotFoundError):
    """The ImageNet VGG weights needed by the perceptual loss are not on disk."""

    def __init__(self, looked_in: Sequence[Path]) -> None:
        places = ", ".join(str(p) for p in looked_in)
        super().__init__(
            f"ImageNet VGG weights not found; looked in: {places}. Get the converted VGG16 with "
            "`python -m dasrlib.data fetch imagenet-features`, copy torchvision's "
            f"{VGG19_CHECKPOINT_NAME} there or pass its path (TrainConfig.vgg_weights), "
            "or set the perceptual loss weight to 0."
        )
        self.looked_in = list(looked_in)


def _converted_vgg16_path() -> Path:
    from dasrlib.pretrained import VGG16_FILE, weights_dir

    return weights_dir() / VGG16_FILE


def resolve_vgg_network(
    network: str, *, weights_path: str | os.PathLike[str] | None = None
) -> tuple[str, Path]:
    """(network, weights file) the perceptual loss uses; `network` is vgg19, vgg16 or auto.

    auto: VGG19 when `weights_path` is given or torchvision's VGG19 file is cached (the paper),
    else the converted VGG16 (the deviation). Raises `VGGWeightsNotFound` naming every place.
    """
    if network not in (*VGG_NETWORKS, "auto"):
        raise ValueError(f"unknown VGG network {network!r}; known: vgg19, vgg16, auto")
    if weights_path is not None:
        path = Path(weights_path)
        if not path.is_file():
            raise VGGWeightsNotFound([path])
        return ("vgg19" if network == "auto" else network), path
    candidates = {"vgg19": default_vgg19_path(), "vgg16": _converted_vgg16_path()}
    order = [network] if network != "auto" else ["vgg19", "vgg16"]
    for name in order:
        if candidates[name].is_file():
            return name, candidates[name]
    raise VGGWeightsNotFound([candidates[name] for name in order])


def paper_layers(network: str) -> tuple[str, ...]:
    """The five layers Eq. 3's perceptual term reads in `network` (weights 0.1, 0.1, 1, 1, 1)."""
    return VGG_NETWORKS[network][2]


def default_vgg19_path() -> Path:
    """Where torchvision caches VGG19: `torch.hub.get_dir()/checkpoints/vgg19-dcbb9e9d.pth`.

    `torch.hub.get_dir()` honours $TORCH_HOME (default ~/.cache/torch/hub).
    """
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_CHECKPOINT_NAME


def pixel_loss(sr: Tensor, target: Tensor) -> Tensor:
    """L_pixel of Eq. 3: mean absolute error between SR and the (USM-sharpened) HR, [B,3,H,W]."""
    return F.l1_loss(sr.float(), target.float())


def regression_loss(v_hat: Tensor, v: Tensor) -> Tensor:
    """L_regression of Eq. 3: mean absolute error between predicted and true v, [B,33]."""
    return F.l1_loss(v_hat.float(), v.float())


def _vgg_features(
    network: str,
    *,
    weights_path: Path | None,
    generator: torch.Generator | None,
) -> nn.Sequential:
    """torchvision VGG `features` (cfg of `network`), ImageNet weights from `weights_path`.

    `weights_path` None: random weights (tests only). A ``.safetensors`` file holds the converted
    features (``features.<i>.*``, `dasrlib.pretrained`); a ``.pth`` is torchvision's checkpoint.
    """
    from torchvision.models.vgg import cfgs, make_layers

    features = make_layers(cfgs[VGG_NETWORKS[network][0]], batch_norm=False)
    if weights_path is None:
        logger.warning(
            "perceptual loss uses a RANDOM %s (allow_random_vgg_for_tests=True)", network
        )
        with torch.no_grad():  # torchvision's VGG initialisation, drawn from `generator`
            for layer in features:
                if isinstance(layer, nn.Conv2d):
                    nn.init.kaiming_normal_(
                        layer.weight, mode="fan_out", nonlinearity="relu", generator=generator
                    )
                    nn.init.zeros_(layer.bias)
        return features
    if weights_path.suffix == ".safetensors":
        from dasrlib.pretrained import load_converted

        state = load_converted(weights_path)
    else:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    prefix = "features."
    feature_state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        features.load_state_dict(feature_state, strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"{weights_path} is not a torchvision {network.upper()} checkpoint: {err}"
        ) from err
    logger.info("perceptual loss: %s weights from %s", network, weights_path)
    return features


class PerceptualLoss(nn.Module):
    """L_perceptual of Eq. 3: weighted L1 between VGG pre-ReLU features of SR and target.

    Inputs [B,3,H,W] RGB in [0, 1]; ImageNet normalisation is applied inside. The VGG is frozen
    and in eval mode; gradients flow to the SR input only. The ReLUs are made non-inplace so the
    pre-activation features are not overwritten. `network` is "vgg19" (the paper), "vgg16" (the
    converted features) or "auto" (`resolve_vgg_network`); `layer_weights` names layers of that
    network (default: `paper_layers(network)` with 0.1, 0.1, 1, 1, 1). `network` and
    `weights_file` record what was used. `generator` seeds the random VGG of
    ``allow_random_vgg_for_tests=True`` (it is unused with real weights).
    """

    def __init__(
        self,
        *,
        network: str = "auto",
        layer_weights: dict[str, float] | None = None,
        weights_path: str | os.PathLike[str] | None = None,
        allow_random_vgg_for_tests: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        weights_file: Path | None = None
        if allow_random_vgg_for_tests and weights_path is None:
            network = "vgg19" if network == "auto" else network
            if network not in VGG_NETWORKS:
                raise ValueError(f"unknown VGG network {network!r}; known: vgg19, vgg16, auto")
        else:
            network, weights_file = resolve_vgg_network(network, weights_path=weights_path)
        index = VGG_NETWORKS[network][1]
        if layer_weights is None:
            paper = PAPER_LAYER_WEIGHTS.values()
            layer_weights = dict(zip(paper_layers(network), paper, strict=True))
        weights = dict(layer_weights)
        unknown = sorted(set(weights) - set(index))
        if unknown:
            raise ValueError(f"unknown {network} layers {unknown}; known: {sorted(index)}")
        features = _vgg_features(network, weights_path=weights_file, generator=generator)
        self.network = network
        self.weights_file = weights_file
        last = max(index[name] for name in weights)
        layers = list(features.children())[: last + 1]
        for i, layer in enumerate(layers):
            if isinstance(layer, nn.ReLU):
                layers[i] = nn.ReLU(inplace=False)
        self.vgg = nn.Sequential(*layers).eval().requires_grad_(False)
        self.layer_weights = {index[name]: w for name, w in weights.items()}
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        """Keep the VGG in eval mode whatever the caller asks (it has no dropout/BN here)."""
        super().train(mode)
        self.vgg.eval()
        return self

    def _features(self, x: Tensor) -> dict[int, Tensor]:
        x = (x - self.mean) / self.std
        out: dict[int, Tensor] = {}
        for i, layer in enumerate(self.vgg):
            x = layer(x)
            if i in self.layer_weights:
                out[i] = x
        return out

    def forward(self, sr: Tensor, target: Tensor) -> Tensor:
        """Scalar loss: sum over layers of weight * mean |phi(sr) - phi(target)|."""
        sr_features = self._features(sr)
        with torch.no_grad():
            target_features = self._features(target.detach())
        loss = sr.new_zeros((), dtype=torch.float32)
        for i, weight in self.layer_weights.items():
            loss = loss + weight * F.l1_loss(sr_features[i].float(), target_features[i].float())
        return loss


class GANLoss(nn.Module):
    """Vanilla GAN loss (binary cross-entropy on logits), the adversarial term of Eq. 3.

    `forward(logits, target_is_real)` returns the mean BCE against all-ones (real) or all-zeros
    (fake). The generator uses `target_is_real=True` on its own outputs; the discriminator uses
    True on HR images and False on detached SR outputs.
    """

    def forward(self, logits: Tensor, target_is_real: bool) -> Tensor:
        logits = logits.float()
        target = torch.ones_like(logits) if target_is_real else torch.zeros_like(logits)
        return F.binary_cross_entropy_with_logits(logits, target)
