"""Models (Sec. 3.1): mixed convolution, experts, predictor P, weighting A, DASR, baselines,
discriminator and checkpoints. See docs/ARCHITECTURE.md for the contracts."""

from dasrlib.models.build import build_model
from dasrlib.models.checkpoints import (
    CheckpointError,
    import_official_dasr,
    load_model,
    load_third_party,
    load_weights,
    save_weights,
)
from dasrlib.models.dasr import (
    DASR,
    DASR_VARIANTS,
    DASRInference,
    DASROutput,
)
from dasrlib.models.discriminator import UNetDiscriminatorSN
from dasrlib.models.experts import EDSR, SRResNet
from dasrlib.models.mixed import ExpertBank, MixedConv2d, MixedWeights
from dasrlib.models.predictor import DegradationPredictor, WeightingModule

__all__ = [
    "DASR",
    "DASR_VARIANTS",
    "EDSR",
    "CheckpointError",
    "DASRInference",
    "DASROutput",
    "DegradationPredictor",
    "ExpertBank",
    "MixedConv2d",
    "MixedWeights",
    "SRResNet",
    "UNetDiscriminatorSN",
    "WeightingModule",
    "build_model",
    "import_official_dasr",
    "load_model",
    "load_third_party",
    "load_weights",
    "save_weights",
]
