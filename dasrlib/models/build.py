"""`build_model`: any network of the package rebuilt from its recorded name and options.

Names: every backbone of `dasrlib.models.backbones` (``srresnet``, ``edsr`` alias ``edsr_m``,
``rrdb``, ``swinir``), the degradation ``predictor``, the ``discriminator``, ``dasr`` and the
Fig. 4 variants of `DASR_VARIANTS`. Every SR model built here maps [B, 3, H, W] in [0, 1] to
[B, 3, 4H, 4W] (DASR returns a `DASROutput`; wrap it in `DASRInference` for a plain SR model).
Each returned module carries ``architecture = {"name", "options"}`` so that checkpoints can record
how to rebuild it (`dasrlib.models.checkpoints.load_model`).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from dasrlib.models import backbones
from dasrlib.models.dasr import DASR, DASR_VARIANTS
from dasrlib.models.discriminator import UNetDiscriminatorSN
from dasrlib.models.predictor import DegradationPredictor

__all__ = ["build_model", "model_names"]

_COMPONENTS: dict[str, Callable[..., nn.Module]] = {
    "predictor": DegradationPredictor,
    "discriminator": UNetDiscriminatorSN,
}
"""The networks that are not super-resolution backbones."""


def model_names() -> tuple[str, ...]:
    """Every name `build_model` takes besides the Fig. 4 variants (backbones first)."""
    return (*(b.name for b in backbones.BACKBONES), *_COMPONENTS, "dasr")


def build_model(name: str, **options: object) -> nn.Module:
    """Rebuild a model from its recorded name and keyword options (unknown options raise).

    This is how a checkpoint's ``architecture`` metadata and the profiling CLI's ``--model``
    become a network; code that knows what it builds calls the class (`SRResNet`, `DASR`, ...)
    directly. A backbone name or alias builds its `dasrlib.models.backbones` entry; the Fig. 4
    variants of `DASR_VARIANTS` (``dasr_n3``, ``dasr_n9``, ``dasr_sigmoid``, ``dasr_moe``,
    ``dasr_mapping``, ``dasr_dcd``, ``dasr_edsr_m``) take `options` over the variant's.
    """
    if name in backbones.backbone_names():
        return backbones.backbone(name).build(**options)
    if name in _COMPONENTS:
        return _COMPONENTS[name](**options)
    if name in DASR_VARIANTS:
        return DASR(**{**DASR_VARIANTS[name], **options})
    known = ", ".join([*model_names(), *(v for v in DASR_VARIANTS if v != "dasr")])
    raise ValueError(f"unknown model {name!r}; expected one of: {known}")
