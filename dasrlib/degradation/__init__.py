"""The DASR degradation space (Sec. 3.2): levels as data, one `degrade`, the 33-slot vector v,
GPU-batched training pairs and unsharp-mask sharpening of the ground truth.

Submodules: `levels` (the level specifications), `kernels` (Gaussian / sinc kernels, per-sample
filtering), `ops` (resize, noise, JPEG, USM), `pipeline` (`degrade`), `record` (what was drawn),
`vector` (the 33-slot table, encode / decode), `pairs` (`TrainingPairSource`).
"""

from .kernels import filter2d, gaussian_kernels, sinc_kernels
from .levels import (
    LEVEL_SPECS,
    RESIZE_MODES,
    BlurSpec,
    FinalSpec,
    JpegSpec,
    Level,
    LevelSpec,
    NoiseSpec,
    ResizeSpec,
    SincSpec,
    StageSpec,
    level_index,
    level_spec,
)
from .ops import bicubic_downsample, jpeg_compress, quantize_8bit, usm_sharpen
from .pairs import TrainingBatch, TrainingPairSource
from .pipeline import degrade
from .record import DegradationRecord
from .vector import (
    LAYOUTS,
    NUM_SLOTS,
    SLOTS,
    Slot,
    decode_vector,
    encode_physical,
    encode_vector,
    parameter_names,
    slot_writers,
)

__all__ = [
    "LAYOUTS",
    "LEVEL_SPECS",
    "NUM_SLOTS",
    "RESIZE_MODES",
    "SLOTS",
    "BlurSpec",
    "DegradationRecord",
    "FinalSpec",
    "JpegSpec",
    "Level",
    "LevelSpec",
    "NoiseSpec",
    "ResizeSpec",
    "SincSpec",
    "Slot",
    "StageSpec",
    "TrainingBatch",
    "TrainingPairSource",
    "bicubic_downsample",
    "decode_vector",
    "degrade",
    "encode_physical",
    "encode_vector",
    "filter2d",
    "gaussian_kernels",
    "jpeg_compress",
    "level_index",
    "level_spec",
    "parameter_names",
    "quantize_8bit",
    "sinc_kernels",
    "slot_writers",
    "usm_sharpen",
]
