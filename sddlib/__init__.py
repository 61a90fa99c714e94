"""sddlib: sparse double descent experiments, their analysis and their theory.

The pieces, each in the module named after it: ``data`` (datasets, label noise),
``models``, ``prune`` (masks and criteria), ``train`` (one level's training), ``experiment``
(levels of prune and retrain), ``store`` (the run store), ``config`` (hyperparameters),
``theory`` (linear and random-features models) and ``cli`` (the ``sddlib`` command).
"""
from .config import ConfigError, ExperimentConfig

__version__ = "0.1.0"
__all__ = ["ConfigError", "ExperimentConfig", "__version__"]
