"""sddlib: sparse double descent experiments, their analysis and their theory.

The public API::

    from sddlib import (ExperimentConfig, run, run_many, RunStore, load_runs,
                        register_model, register_dataset, register_criterion)

The pieces, each in the module named after it, imports pointing one way: ``config``,
``data``, ``models``, ``prune`` (masks and criteria) and ``retrain`` (retraining modes);
``train`` (one level's training); ``experiment`` (one run); ``sweep`` (many runs, stacked
or side by side, with ``parallel`` and ``ensemble``); ``grid`` (grids of runs, scheduled
in worker processes or, with ``distributed``, on a Ray cluster); ``store`` and
``checkpoints`` (the run store and reading it); ``metrics``, ``landscape``, ``theory`` and
``network_check`` (analysis); ``plots`` and ``figures`` (the book); ``cli`` (the ``sddlib``
command).
"""
from sddlib.api import load_runs, run, run_many
from sddlib.config.fields import ConfigError, ExperimentConfig
from sddlib.data.datasets import register_dataset
from sddlib.models.architectures import register_model
from sddlib.pruning.prune import register_criterion
from sddlib.storage.store import RunStore

__version__ = "0.1.0"
__all__ = ["ConfigError", "ExperimentConfig", "RunStore", "__version__", "load_runs",
           "register_criterion", "register_dataset", "register_model", "run", "run_many"]
