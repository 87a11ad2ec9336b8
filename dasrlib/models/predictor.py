"""Degradation predictor P and weighting module A (Sec. 3.1, Fig. 3).

Layouts follow the reference ``Degradation_Predictor``: P's convolutions are
``ConvNet.{0,2,...,10}`` (every conv, the last one included, followed by LeakyReLU(0.2), then
global average pooling);
A's two linear layers are ``MappingNet.{0,1}`` with no activation between them. The reference
checkpoint keeps both in one ``net_p`` file; here P and A are two modules so that v can be
supplied by hand (Fig. 5), and `import_official_dasr` maps the keys.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dasrlib.degradation.vector import NUM_SLOTS
from dasrlib.models.experts import init_default_

__all__ = ["DegradationPredictor", "WeightingModule"]


class DegradationPredictor(nn.Module):
    """P: six 5x5 convs (3->64, 64->64 x3 with the 4th at stride 2, 64->64, 64->v_dim), each
    followed by LeakyReLU(0.2), then global average pooling.

    Input [B, 3, H, W] in [0, 1] -> v_hat [B, v_dim] (0.468 M parameters, 18.0 GMACs at 256^2).
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        num_feat: int = 64,
        v_dim: int = NUM_SLOTS,
        use_bias: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.architecture = {
            "name": "predictor",
            "options": {
                "in_channels": in_channels,
                "num_feat": num_feat,
                "v_dim": v_dim,
                "use_bias": use_bias,
            },
        }
        channels = [in_channels, num_feat, num_feat, num_feat, num_feat, num_feat, v_dim]
        strides = [1, 1, 1, 2, 1, 1]
        layers: list[nn.Module] = []
        for index, stride in enumerate(strides):
            # The reference gives the first conv a bias whatever use_bias says.
            bias = use_bias or index == 0
            conv = nn.Conv2d(channels[index], channels[index + 1], 5, stride, 2, bias=bias)
            layers += [conv, nn.LeakyReLU(0.2, inplace=True)]
        self.ConvNet = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        if generator is not None:
            init_default_(list(self.modules()), generator=generator)

    def forward(self, lr: Tensor) -> Tensor:
        return self.pool(self.ConvNet(lr)).flatten(1)


class WeightingModule(nn.Module):
    """A: Linear(v_dim, 15) -> Linear(15, N), no activation between (Sec. 3.1); an optional
    sigmoid at the end is the Fig. 4(c) ablation. v [B, v_dim] -> a [B, N] (or [v_dim] -> [N])."""

    def __init__(
        self,
        *,
        v_dim: int = NUM_SLOTS,
        hidden: int = 15,
        num_experts: int = 5,
        sigmoid: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.num_experts = num_experts
        self.MappingNet = nn.Sequential(nn.Linear(v_dim, hidden), nn.Linear(hidden, num_experts))
        self.sigmoid = sigmoid
        if generator is not None:
            init_default_(list(self.modules()), generator=generator)

    def forward(self, v: Tensor) -> Tensor:
        a = self.MappingNet(v)
        return torch.sigmoid(a) if self.sigmoid else a

    @torch.no_grad()
    def add_zero_sum_weights(self, generator: torch.Generator) -> None:
        """Add to the last layer's weight a random matrix whose column sums over the experts are
        zero: drawn as PyTorch's default Linear init, U(-1/sqrt(hidden), 1/sqrt(hidden)), minus
        its mean over the experts. sum_i a_i is unchanged for every v (exactly for the linear
        weighting, to first order with the sigmoid), while a now differs from expert to expert
        and from image to image."""
        last = self.MappingNet[-1]
        bound = 1.0 / math.sqrt(last.in_features)
        noise = (2 * torch.rand(last.weight.shape, generator=generator) - 1) * bound
        noise -= noise.mean(dim=0, keepdim=True)
        last.weight += noise.to(last.weight)

    @torch.no_grad()
    def set_uniform_output(self) -> None:
        """Make A output a = 1/N for every v (zero last weight, bias 1/N): with identical experts
        the mixed network then equals the shared initial expert exactly (sum a = 1)."""
        last = self.MappingNet[-1]
        last.weight.zero_()
        value = 1.0 / self.num_experts
        if self.sigmoid:
            value = math.log(value / (1.0 - value)) if self.num_experts > 1 else 10.0
        last.bias.fill_(value)
