"""Many runs as one tidy frame: what the book's notebooks and ``sddlib run --seeds`` call.

:func:`run_many` reuses the finished runs (each brought up to date by
:func:`sddlib.engine.experiment.reuse_stored`: its data checked, its stored learning
distance and activation entropy upgraded) and computes the missing ones through the one
plan and executor of every list of runs (:mod:`sddlib.scheduling.plan`,
:func:`sddlib.scheduling.executor.run_all`): each run once, the runs it needs first, the
biggest first, in this process, in worker processes or stacked.
"""
from __future__ import annotations

import sys

import pandas as pd

from sddlib.config.fields import ExperimentConfig
from sddlib.engine.experiment import clean_data, reuse_stored
from sddlib.scheduling.executor import run_all
from sddlib.storage.store import RunStore, table


def run_many(configs: list[ExperimentConfig], store: RunStore, *, compute_missing: bool = True,
             progress: bool = True, stack: bool | str = False, workers: int | str = 1,
             **options) -> pd.DataFrame:
    """The levels of every config as one tidy frame, computing the runs not yet finished.

    With ``compute_missing=False`` nothing is computed: the unfinished runs are listed on
    stderr and left out of the frame (their finished levels are not shown either, so a
    figure never mixes complete and partial curves unawares).

    ``stack="auto"`` stacks where it pays (on CUDA,
    :func:`sddlib.scheduling.groups.stacking_pays`). With ``stack=True`` the missing runs
    that differ only in seed, label noise and pruning criterion are trained together,
    level by level, as one stacked ensemble (:func:`sddlib.scheduling.groups.run_stacked`);
    each is stored as its own run, its ``meta.json`` saying it was trained stacked and with
    which runs.

    ``workers``: how many processes train the missing runs (or stacked groups) at once;
    ``"auto"`` is one per core on the CPU for runs worth a process (see
    :mod:`sddlib.scheduling.parallel`, which also says why a run's numbers do not depend on it; in a
    script, start a pool under ``if __name__ == "__main__":``). The default, 1, trains
    in this process.
    Runs that start from another run's results (``reinit``, re-dense) are trained after the
    runs they need, which are computed too if missing (and not returned unless asked for).
    A run that fails does not stop the others; once they are done, the exception is raised
    as it was when every failed run failed with the same one (bad input, such as a
    ``train_size`` larger than the dataset, fails every seed alike), else a
    :class:`RuntimeError` naming every run that failed and why. ``options``: ``checkpoint_seconds``,
    ``data_dir``, ``download``, ``retries``, ``ray`` and ``transport``, as for
    :func:`sddlib.scheduling.executor.run_all`.
    """
    runs, missing = [], []
    data_dir = options.get("data_dir", "data/datasets")
    for config in configs:
        found = store.find(config)
        if found is not None and found.is_finished():
            reuse_stored(found, data_dir, clean_data(config, data_dir), progress)
            runs.append(found)
        else:
            missing.append(config)
    if missing and not compute_missing:
        print(f"{len(missing)} of {len(configs)} runs are missing (compute_missing=False):",
              file=sys.stderr)
        for config in missing:
            print(f"  {config.run_name()}", file=sys.stderr)
    elif missing:
        summary = run_all(missing, store, workers=workers, stack=stack, progress=progress,
                          **options)
        summary.raise_failures()  # once the other runs were computed all the same
        runs += [store.find(config) for config in missing]
    frame = table(runs)
    if not frame.empty:
        frame = frame[frame.level <= frame.run.map({r.name: r.config.levels for r in runs})]
    return frame.reset_index(drop=True)
