"""The DASR degradation space (Sec. 3.2): levels as data, one `degrade`, the 33-slot vector v,
GPU-batched training pairs and unsharp-mask sharpening of the ground truth.

Submodules: `levels` (the level specifications), `kernels` (Gaussian / sinc kernels, per-sample
filtering), `ops` (resize, noise, JPEG, USM), `pipeline` (`degrade`), `record` (what was drawn),
`vector` (the 33-slot table, encode / decode), `edit` (v edited by physical values, Sec. 4.6),
`pairs` (`TrainingPairSource`). Imports run one way: record -> vector -> levels; edit -> vector.

Import each name from the submodule that defines it: this package gathers none.
"""
