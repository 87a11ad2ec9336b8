"""U-Net discriminator with spectral normalisation (Real-ESRGAN), the D of the GAN loss (Eq. 3).

Layer names and the legacy ``torch.nn.utils.spectral_norm`` parametrisation (``weight_orig``,
``weight_u``, ``weight_v``) follow Real-ESRGAN's ``UNetDiscriminatorSN``, so its checkpoints load.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import spectral_norm

from dasrlib.models.experts import init_default_

__all__ = ["UNetDiscriminatorSN"]


class UNetDiscriminatorSN(nn.Module):
    """Input [B, 3, H, W] in [0, 1] (H, W divisible by 8) -> per-pixel logits [B, 1, H, W].

    Three stride-2 downsampling convs (64 -> 128 -> 256 -> 512 features), three bilinear upsampling
    stages with skip connections, two refinement convs and a 1-channel output conv.
    """

    def __init__(
        self,
        *,
        num_in_ch: int = 3,
        num_feat: int = 64,
        skip_connection: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.skip_connection = skip_connection
        self.architecture = {
            "name": "discriminator",
            "options": {
                "num_in_ch": num_in_ch,
                "num_feat": num_feat,
                "skip_connection": skip_connection,
            },
        }
        nf = num_feat
        self.conv0 = nn.Conv2d(num_in_ch, nf, 3, 1, 1)
        if generator is not None:
            init_default_([self.conv0], generator=generator)
        self.conv1 = self._sn(nn.Conv2d(nf, nf * 2, 4, 2, 1, bias=False), generator)
        self.conv2 = self._sn(nn.Conv2d(nf * 2, nf * 4, 4, 2, 1, bias=False), generator)
        self.conv3 = self._sn(nn.Conv2d(nf * 4, nf * 8, 4, 2, 1, bias=False), generator)
        self.conv4 = self._sn(nn.Conv2d(nf * 8, nf * 4, 3, 1, 1, bias=False), generator)
        self.conv5 = self._sn(nn.Conv2d(nf * 4, nf * 2, 3, 1, 1, bias=False), generator)
        self.conv6 = self._sn(nn.Conv2d(nf * 2, nf, 3, 1, 1, bias=False), generator)
        self.conv7 = self._sn(nn.Conv2d(nf, nf, 3, 1, 1, bias=False), generator)
        self.conv8 = self._sn(nn.Conv2d(nf, nf, 3, 1, 1, bias=False), generator)
        self.conv9 = nn.Conv2d(nf, 1, 3, 1, 1)
        if generator is not None:
            init_default_([self.conv9], generator=generator)

    @staticmethod
    def _sn(conv: nn.Conv2d, generator: torch.Generator | None) -> nn.Module:
        """``spectral_norm(conv)``; with a generator, the kernel and the power-iteration vectors
        u, v (which ``spectral_norm`` draws from the global RNG) are drawn from it."""
        if generator is None:
            return spectral_norm(conv)
        init_default_([conv], generator=generator)
        conv = spectral_norm(conv)
        with torch.no_grad():
            for name in ("weight_u", "weight_v"):
                vector = getattr(conv, name)
                draw = torch.randn(vector.shape, generator=generator, dtype=vector.dtype)
                vector.copy_(F.normalize(draw, dim=0, eps=1e-12))
        return conv

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % 8 or x.shape[-2] % 8:
            raise ValueError(f"discriminator input sides must be divisible by 8, got {x.shape}")
        x0 = F.leaky_relu(self.conv0(x), 0.2)
        x1 = F.leaky_relu(self.conv1(x0), 0.2)
        x2 = F.leaky_relu(self.conv2(x1), 0.2)
        x3 = F.leaky_relu(self.conv3(x2), 0.2)

        x3 = F.interpolate(x3, scale_factor=2, mode="bilinear", align_corners=False)
        x4 = F.leaky_relu(self.conv4(x3), 0.2)
        if self.skip_connection:
            x4 = x4 + x2
        x4 = F.interpolate(x4, scale_factor=2, mode="bilinear", align_corners=False)
        x5 = F.leaky_relu(self.conv5(x4), 0.2)
        if self.skip_connection:
            x5 = x5 + x1
        x5 = F.interpolate(x5, scale_factor=2, mode="bilinear", align_corners=False)
        x6 = F.leaky_relu(self.conv6(x5), 0.2)
        if self.skip_connection:
            x6 = x6 + x0

        out = F.leaky_relu(self.conv7(x6), 0.2)
        out = F.leaky_relu(self.conv8(out), 0.2)
        return self.conv9(out)
