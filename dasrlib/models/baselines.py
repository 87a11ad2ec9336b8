"""Table 2 baselines (RRDB, SwinIR) and `build_model`, which rebuilds a recorded architecture.

RRDB (the ESRGAN generator) and SwinIR come from spandrel's architecture code; SRResNet, EDSR,
the predictor, DASR and the discriminator are this package's. Every SR model built here maps
[B, 3, H, W] in [0, 1] to [B, 3, 4H, 4W] (DASR returns a `DASROutput`; wrap it in `DASRInference`
for a plain SR model). Each returned module carries ``architecture = {"name", "options"}`` so that
checkpoints can record how to rebuild it (`dasrlib.models.checkpoints.load_model`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

from torch import nn

from dasrlib.models.dasr import DASR, DASR_VARIANTS
from dasrlib.models.discriminator import UNetDiscriminatorSN
from dasrlib.models.experts import EDSR, SRResNet
from dasrlib.models.predictor import DegradationPredictor

__all__ = ["MODEL_NAMES", "build_model", "build_rrdb", "build_swinir"]

MODEL_NAMES = ("srresnet", "edsr", "rrdb", "swinir", "predictor", "discriminator", "dasr")


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


_CONSTRUCTORS: dict[str, Callable[..., nn.Module]] = {
    "srresnet": SRResNet,
    "edsr": EDSR,
    "rrdb": build_rrdb,
    "swinir": build_swinir,
    "predictor": DegradationPredictor,
    "discriminator": UNetDiscriminatorSN,
}


def build_model(name: str, **options: object) -> nn.Module:
    """Rebuild a model from its recorded name and keyword options (unknown options raise).

    This is how a checkpoint's ``architecture`` metadata and the profiling CLI's ``--model``
    become a network; code that knows what it builds calls the class (`SRResNet`, `DASR`, ...)
    or `build_rrdb` / `build_swinir` directly. Names: ``srresnet``, ``edsr`` (EDSR-M), ``rrdb``,
    ``swinir``, ``predictor``, ``discriminator``, ``dasr`` and the Fig. 4 variants of
    `DASR_VARIANTS` (``dasr_n3``, ``dasr_n9``, ``dasr_sigmoid``, ``dasr_moe``, ``dasr_mapping``,
    ``dasr_dcd``, ``dasr_edsr_m``), whose options override the variant's.
    """
    if name in _CONSTRUCTORS:
        return _CONSTRUCTORS[name](**options)
    if name in DASR_VARIANTS:
        return DASR(**{**DASR_VARIANTS[name], **options})
    known = ", ".join([*MODEL_NAMES, *(v for v in DASR_VARIANTS if v != "dasr")])
    raise ValueError(f"unknown model {name!r}; expected one of: {known}")
