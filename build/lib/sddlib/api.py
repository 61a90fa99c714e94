"""The public entry points, re-exported by ``sddlib`` itself.

``run`` and ``run_many`` compute (or find) runs in a run store; ``load_runs`` reads a
store as one tidy table. The store and the dataset cache default to the project's (the
root ``_config.yml``, else ``./data/runs`` and ``./data/datasets``), so a script in the
repository, or anywhere, needs no paths::

    import sddlib
    config = sddlib.ExperimentConfig(dataset="mnist-5k", model="mlp", levels=5)
    run = sddlib.run(config)
    frame = sddlib.load_runs()
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import pandas as pd

from sddlib.config.fields import ExperimentConfig
from sddlib.config.project import load_settings
from sddlib.engine.experiment import run_experiment
from sddlib.scheduling import sweep
from sddlib.storage.store import Run, RunStore

Store = Union[RunStore, str, Path, None]


def run(config: Union[ExperimentConfig, dict], store: Store = None, *,
        data_dir: Union[str, Path, None] = None, progress: bool = True,
        download: bool = False) -> Run:
    """Run or resume one experiment (a config, or a dict of config keys) and return its
    finished run; a finished run of the same experiment is found and returned as it is."""
    store, data_dir = _where(store, data_dir)
    return run_experiment(_config(config), store, progress=progress, data_dir=data_dir,
                          download=download)


def run_many(configs: list[Union[ExperimentConfig, dict]], store: Store = None, *,
             data_dir: Union[str, Path, None] = None, **options) -> pd.DataFrame:
    """Every config's levels as one tidy frame, computing the missing runs; ``options`` as
    :func:`sddlib.scheduling.sweep.run_many` takes them (``workers``, ``stack``, ...). In a script
    that uses several workers, call it under ``if __name__ == "__main__":``."""
    store, data_dir = _where(store, data_dir)
    return sweep.run_many([_config(c) for c in configs], store, data_dir=data_dir, **options)


def load_runs(store: Store = None, finished_only: bool = False) -> pd.DataFrame:
    """Every stored run's levels as one tidy frame: a row per (run, level), with the run's
    config as columns."""
    return _where(store, None)[0].load(finished_only=finished_only)


def _config(config: Union[ExperimentConfig, dict]) -> ExperimentConfig:
    return config if isinstance(config, ExperimentConfig) else ExperimentConfig.from_dict(config)


def _where(store: Store, data_dir) -> tuple[RunStore, Path]:
    settings = load_settings() if store is None or data_dir is None else None
    if not isinstance(store, RunStore):
        store = RunStore(settings.runs_dir if store is None else Path(store))
    return store, Path(settings.data_dir if data_dir is None else data_dir)
