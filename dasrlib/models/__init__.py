"""Models (Sec. 3.1): mixed convolution, experts, predictor P, weighting A, DASR, baselines,
discriminator and checkpoints. See docs/ARCHITECTURE.md for the contracts.

Import each name from the submodule that defines it: this package gathers none.
"""
