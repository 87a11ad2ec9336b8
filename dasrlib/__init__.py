"""DASR workbench: degradation-adaptive super-resolution (Liang, Zeng, Zhang, ECCV 2022).

Importing the package has no side effects: no downloads, no prints, no global random state.
"""

__version__ = "0.1.0"
