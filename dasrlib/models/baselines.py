"""Table 2 baselines: RRDB (the ESRGAN generator) and SwinIR, from spandrel's architecture code.

Both map [B, 3, H, W] in [0, 1] to [B, 3, 4H, 4W] and carry ``architecture = {"name",
"options"}`` so that checkpoints can record how to rebuild them; they are entries of the backbone
table (`dasrlib.models.backbones`).
"""

from __future__ import annotations

import warnings

from torch import nn

__all__ = ["build_rrdb", "build_swinir"]


def build_rrdb(*, num_feat: int = 64, num_block: int = 23, scale: int = 4) -> nn.Module:
    """ESRGAN's RRDBNet (spandrel ``ESRGAN``): 23 RRDB blocks, 16.70 M parameters, x4."""
    from spandrel.architectures.ESRGAN import ESRGAN

    model = ESRGAN(in_nc=3, out_nc=3, num_filters=num_feat, num_blocks=num_block, scale=scale)
    model.architecture = {
        "name": "rrdb",
        "options": {"num_feat": num_feat, "num_block": num_block, "scale": scale},
    }
    return model


def build_swinir(
    *,
    embed_dim: int = 180,
    depths: tuple[int, ...] | list[int] = (6, 6, 6, 6, 6, 6),
    num_heads: tuple[int, ...] | list[int] = (6, 6, 6, 6, 6, 6),
    window_size: int = 8,
    mlp_ratio: float = 2.0,
    scale: int = 4,
) -> nn.Module:
    """SwinIR with the real-world "nearest+conv" upsampler (spandrel ``SwinIR``).

    The defaults are Real-SwinIR-M (embed 180, six RSTB of depth 6 with 6 heads, window 8, MLP
    ratio 2, one-conv residual): 11.72 M parameters, the size of Table 2. Inputs of any size are
    reflect-padded to a multiple of the window inside and the output cropped.
    """
    from spandrel.architectures.SwinIR import SwinIR

    if len(depths) != len(num_heads):
        raise ValueError(f"depths {depths} and num_heads {num_heads} differ in length")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.meshgrid", category=UserWarning)
        model = SwinIR(
            upscale=scale,
            in_chans=3,
            img_size=64,
            window_size=window_size,
            img_range=1.0,
            depths=list(depths),
            embed_dim=embed_dim,
            num_heads=list(num_heads),
            mlp_ratio=mlp_ratio,
            upsampler="nearest+conv",
            resi_connection="1conv",
        )
    model.architecture = {
        "name": "swinir",
        "options": {
            "embed_dim": embed_dim,
            "depths": list(depths),
            "num_heads": list(num_heads),
            "window_size": window_size,
            "mlp_ratio": mlp_ratio,
            "scale": scale,
        },
    }
    return model
