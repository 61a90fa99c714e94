"""sddlib: sparse double descent experiments, their analysis and their theory.

The public API::

    from sddlib import (ExperimentConfig, run, run_many, RunStore, load_runs,
                        register_model, register_dataset, register_criterion)

The pieces, in concept packages whose imports point down the layers (each package's
``__init__`` says what it holds): ``base`` (files, cache, seeds); ``data``, ``models``
and ``pruning`` (datasets, networks, criteria, sparse layers, retraining modes);
``config`` (run configs, project settings); ``storage`` (the run store); ``engine`` (one
run: training, fast path, ensembles, distillation, measures); ``scheduling`` (many runs:
one plan, one executor, grid files, Ray); ``analysis`` (metrics, landscape, theory,
network check); ``book`` (page declarations, profiles, execution, plots). ``api`` and
``cli`` (the ``sddlib`` command) on top.
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
