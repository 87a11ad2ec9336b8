"""Expert topologies (Sec. 3.1): SRResNet (BasicSR MSRResNet) and EDSR / EDSR-M.

Each topology is written once. Built with the default ``conv_layer=nn.Conv2d`` it is an ordinary
network whose state-dict keys are BasicSR's (``conv_first``, ``body.N.conv1``, ``upconv1``, ...),
so BasicSR checkpoints load. Built with ``conv_layer=MixedConv2d`` it holds no parameters and reads
its kernels from a `MixedWeights` passed to ``forward`` (the DASR experts, Eq. 2).

Call contract: input [B, 3, H, W] in [0, 1], output [B, 3, scale*H, scale*W] (not clamped).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dasrlib.models.mixed import MixedConv2d, MixedWeights, PixelShuffle, apply_layer

__all__ = ["EDSR", "SRResNet", "ConvLayer", "ResidualBlockNoBN", "init_basicsr_", "init_default_"]

ConvLayer = Callable[..., nn.Module]  # (in_channels, out_channels, kernel_size) -> conv module
EDSR_RGB_MEAN = (0.4488, 0.4371, 0.4040)  # DIV2K mean used by BasicSR's EDSR


def _conv(conv_layer: ConvLayer, in_ch: int, out_ch: int) -> nn.Module:
    if conv_layer is MixedConv2d:
        return MixedConv2d(in_ch, out_ch, 3)
    return conv_layer(in_ch, out_ch, 3, 1, 1)


def _inplace_activations(conv_layer: ConvLayer) -> bool:
    """In-place activations, except after mixed convolutions: their outputs are views of one
    batch-folded convolution (`MixedConv2d`), and an in-place op on a view makes autograd rebuild
    the whole base tensor in the backward pass (``CopySlices``)."""
    return conv_layer is not MixedConv2d


def _check_scale(scale: int) -> None:
    if scale not in (2, 3, 4):
        raise ValueError(f"scale {scale} is not supported; expected 2, 3 or 4")


@torch.no_grad()
def init_basicsr_(
    convs: list[nn.Module], *, scale: float, generator: torch.Generator | None
) -> None:
    """BasicSR's ``default_init_weights``: Kaiming normal times ``scale``, zero bias (meta
    tensors, which hold no values, are skipped: `DASR.fuse` builds its network on meta)."""
    for conv in convs:
        if isinstance(conv, nn.Conv2d) and not conv.weight.is_meta:
            nn.init.kaiming_normal_(conv.weight, generator=generator)
            conv.weight.mul_(scale)
            if conv.bias is not None:
                conv.bias.zero_()


@torch.no_grad()
def init_default_(layers: list[nn.Module], *, generator: torch.Generator | None) -> None:
    """PyTorch's default ``nn.Conv2d`` / ``nn.Linear`` initialisation, drawn from ``generator``
    (other modules and meta tensors skipped)."""
    for layer in layers:
        if isinstance(layer, (nn.Conv2d, nn.Linear)) and not layer.weight.is_meta:
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
            if layer.bias is not None:
                fan_in = layer.weight[0].numel()
                bound = 1.0 / math.sqrt(fan_in)
                nn.init.uniform_(layer.bias, -bound, bound, generator=generator)


class ResidualBlockNoBN(nn.Module):
    """Conv-ReLU-Conv residual block without batch norm; ``x + res_scale * body(x)``."""

    def __init__(self, *, num_feat: int, res_scale: float = 1.0, conv_layer: ConvLayer) -> None:
        super().__init__()
        self.res_scale = res_scale
        self.conv1 = _conv(conv_layer, num_feat, num_feat)
        self.conv2 = _conv(conv_layer, num_feat, num_feat)
        self.relu = nn.ReLU(inplace=_inplace_activations(conv_layer))

    def forward(self, x: Tensor, mixed: MixedWeights | None = None) -> Tensor:
        out = self.relu(apply_layer(self.conv1, x, mixed))
        out = apply_layer(self.conv2, out, mixed)
        if self.res_scale != 1.0:
            out = out * self.res_scale
        return x + out


def _upsampler(conv_layer: ConvLayer, num_feat: int, scale: int) -> nn.ModuleList:
    """BasicSR ``Upsample`` layout: [conv, PixelShuffle(2)] x log2(scale), or [conv, PS(3)]."""
    layers: list[nn.Module] = []
    if scale == 3:
        layers += [_conv(conv_layer, num_feat, 9 * num_feat), PixelShuffle(3)]
    else:
        for _ in range(int(math.log2(scale))):
            layers += [_conv(conv_layer, num_feat, 4 * num_feat), PixelShuffle(2)]
    return nn.ModuleList(layers)


class SRResNet(nn.Module):
    """BasicSR's MSRResNet: the DASR expert (Sec. 3.1; 1.518 M parameters, 166.2 GMACs at 256^2).

    conv_first, ``num_block`` residual blocks (conv-ReLU-conv, no BN), upconv1 (+ upconv2 for x4)
    each followed by PixelShuffle and LeakyReLU(0.1), conv_hr, conv_last, plus the bilinear
    upsampled input. Input [B, 3, H, W] in [0, 1] -> [B, 3, scale*H, scale*W].
    """

    def __init__(
        self,
        *,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_block: int = 16,
        scale: int = 4,
        conv_layer: ConvLayer = nn.Conv2d,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        _check_scale(scale)
        self.scale = scale
        self.architecture = {
            "name": "srresnet",
            "options": {
                "num_in_ch": num_in_ch,
                "num_out_ch": num_out_ch,
                "num_feat": num_feat,
                "num_block": num_block,
                "scale": scale,
            },
        }
        self.conv_first = _conv(conv_layer, num_in_ch, num_feat)
        self.body = nn.ModuleList(
            ResidualBlockNoBN(num_feat=num_feat, conv_layer=conv_layer) for _ in range(num_block)
        )
        if scale == 4:
            self.upconv1 = _conv(conv_layer, num_feat, num_feat * 4)
            self.upconv2 = _conv(conv_layer, num_feat, num_feat * 4)
            self.pixel_shuffle = PixelShuffle(2)
        else:
            self.upconv1 = _conv(conv_layer, num_feat, num_feat * scale * scale)
            self.pixel_shuffle = PixelShuffle(scale)
        self.conv_hr = _conv(conv_layer, num_feat, num_feat)
        self.conv_last = _conv(conv_layer, num_feat, num_out_ch)
        self.lrelu = nn.LeakyReLU(negative_slope=0.1, inplace=_inplace_activations(conv_layer))
        init_basicsr_(list(self.modules()), scale=0.1, generator=generator)

    def forward(self, x: Tensor, mixed: MixedWeights | None = None) -> Tensor:
        out = self.lrelu(apply_layer(self.conv_first, x, mixed))
        for block in self.body:
            out = block(out, mixed)
        out = self.lrelu(self.pixel_shuffle(apply_layer(self.upconv1, out, mixed)))
        if self.scale == 4:
            out = self.lrelu(self.pixel_shuffle(apply_layer(self.upconv2, out, mixed)))
        out = self.lrelu(apply_layer(self.conv_hr, out, mixed))
        out = apply_layer(self.conv_last, out, mixed)
        base = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return out + base


class EDSR(nn.Module):
    """BasicSR's EDSR; the defaults are EDSR-M (BasicSR ``EDSR_Mx4``: 64 features, 16 blocks,
    residual scaling 1), the "EDSR" of Table 2 and the backbone of Fig. 4(g): 1.518 M parameters,
    130.0 GMACs at 256^2. EDSR-L is ``num_feat=256, num_block=32, res_scale=0.1``.

    Input [B, 3, H, W] in [0, 1] -> [B, 3, scale*H, scale*W]; the DIV2K mean is subtracted and the
    range scaled to 255 inside, as in BasicSR.
    """

    def __init__(
        self,
        *,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_block: int = 16,
        res_scale: float = 1.0,
        scale: int = 4,
        img_range: float = 255.0,
        conv_layer: ConvLayer = nn.Conv2d,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        _check_scale(scale)
        if num_in_ch != 3 or num_out_ch != 3:
            raise ValueError("EDSR's mean shift is defined for RGB (3 channels in and out)")
        self.scale = scale
        self.img_range = img_range
        self.architecture = {
            "name": "edsr",
            "options": {
                "num_feat": num_feat,
                "num_block": num_block,
                "res_scale": res_scale,
                "scale": scale,
                "img_range": img_range,
            },
        }
        self.register_buffer("mean", torch.tensor(EDSR_RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.conv_first = _conv(conv_layer, num_in_ch, num_feat)
        self.body = nn.ModuleList(
            ResidualBlockNoBN(num_feat=num_feat, res_scale=res_scale, conv_layer=conv_layer)
            for _ in range(num_block)
        )
        self.conv_after_body = _conv(conv_layer, num_feat, num_feat)
        self.upsample = _upsampler(conv_layer, num_feat, scale)
        self.conv_last = _conv(conv_layer, num_feat, num_out_ch)
        init_default_(list(self.modules()), generator=generator)

    def forward(self, x: Tensor, mixed: MixedWeights | None = None) -> Tensor:
        mean = self.mean.to(x.dtype)
        x = (x - mean) * self.img_range
        x = apply_layer(self.conv_first, x, mixed)
        res = x
        for block in self.body:
            res = block(res, mixed)
        res = apply_layer(self.conv_after_body, res, mixed) + x
        for layer in self.upsample:
            res = apply_layer(layer, res, mixed)
        out = apply_layer(self.conv_last, res, mixed)
        return out / self.img_range + mean
