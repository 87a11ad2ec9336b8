"""The DASR degradation space (Sec. 3.2): levels as data, one `degrade`, the 33-slot vector v,
GPU-batched training pairs and unsharp-mask sharpening of the ground truth.

Submodules: `levels` (the level specifications), `kernels` (Gaussian / sinc kernels, per-sample
filtering), `ops` (resize, noise, JPEG, USM), `pipeline` (`degrade`), `record` (what was drawn),
`vector` (the 33-slot table, encode / decode), `edit` (v edited by physical values, Sec. 4.6),
`pairs` (`TrainingPairSource`). Imports run one way: record -> vector -> levels; edit -> vector.
"""

from .edit import (
    PARAMETER_ALIASES,
    as_vector,
    edit_vector,
    expand_edits,
    fig5_edits,
    parse_edits,
    physical_range,
    valid_parameter_names,
)
from .kernels import filter2d, gaussian_kernels, sinc_kernels
from .levels import (
    FINAL_ORDERS,
    LEVEL_SPECS,
    NOISE_TYPES,
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
    "FINAL_ORDERS",
    "LAYOUTS",
    "LEVEL_SPECS",
    "NOISE_TYPES",
    "NUM_SLOTS",
    "PARAMETER_ALIASES",
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
    "as_vector",
    "bicubic_downsample",
    "decode_vector",
    "degrade",
    "edit_vector",
    "encode_physical",
    "encode_vector",
    "expand_edits",
    "fig5_edits",
    "filter2d",
    "gaussian_kernels",
    "jpeg_compress",
    "level_index",
    "level_spec",
    "parameter_names",
    "parse_edits",
    "physical_range",
    "quantize_8bit",
    "sinc_kernels",
    "slot_writers",
    "usm_sharpen",
    "valid_parameter_names",
]
