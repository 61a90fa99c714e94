"""Chang et al.'s question on real networks: train wide and prune, or train small?

The network part of the theory chapter: an experiment's model at several widths, trained
dense and pruned in one step to a fixed number of prunable weights, with and without
retraining, beside a model trained directly at that size. The runs go through the run
store like any experiment (:func:`sddlib.scheduling.sweep.run_many`); the numpy simulations of the
linear and random-features models are in :mod:`sddlib.analysis.theory`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from sddlib.config.fields import ExperimentConfig
from sddlib.config.project import load_settings
from sddlib.data.datasets import DATASETS
from sddlib.engine.checkpoints import evaluate_pruned
from sddlib.models.architectures import build_model, default_prune_output
from sddlib.pruning.prune import prunable_parameters
from sddlib.scheduling.sweep import run_many
from sddlib.storage.store import RunStore


def width_config(experiment: dict, width: int, **changes):
    """The experiment at ``width``: two hidden layers of ``width`` for the MLP, the base
    width (channels) for the other models."""
    size = ({"widths": [width, width]} if experiment.get("model", "mlp") == "mlp"
            else {"width": width})
    return ExperimentConfig.from_dict({"model": "mlp", **experiment, **size, **changes})


def prunable_weights(config) -> int:
    """How many weights ``config``'s model has that pruning may remove."""
    spec = DATASETS[config.dataset]  # counted without loading the data
    model = build_model(config, spec.input_shape, spec.num_classes)
    prune_output = (default_prune_output(config.model) if config.prune_output is None
                    else config.prune_output)
    return sum(p.numel() for p in prunable_parameters(model, prune_output).values())


# the criteria the check prunes the wide networks with, unless asked for others
CRITERIA_COMPARED = ("magnitude", "random")


def network_plan(experiment: dict, widths: Sequence[int], target_weights: int,
                 criteria: Sequence[str] = CRITERIA_COMPARED,
                 seeds: Sequence[int] = (0,)) -> list[tuple[int, bool, list[ExperimentConfig]]]:
    """The runs of :func:`network_check`, per width and criterion: ``(width, small, the
    configs of its seeds)``, ``small`` for a width trained directly. The book's planner
    lists a page's runs with it (:mod:`sddlib.book.pages`), as the check computes them."""
    plan = []
    for width in widths:
        dense_weights = prunable_weights(width_config(experiment, width))
        small = dense_weights <= target_weights
        for criterion in (["magnitude"] if small else criteria):
            plan.append((width, small, [
                width_config(experiment, width, seed=seed, criterion=criterion,
                             retrain="lr-rewind", rewind_iteration=0, levels=0 if small else 1,
                             rate=0.2 if small else 1.0 - target_weights / dense_weights)
                for seed in seeds]))
    return plan


def network_check(experiment: dict, widths: Sequence[int], target_weights: int,
                  criteria: Sequence[str] = CRITERIA_COMPARED,
                  seeds: Sequence[int] = (0,), compute_missing: bool = True,
                  store: Optional[RunStore] = None,
                  data_dir: Optional[Path] = None) -> pd.DataFrame:
    """Chang et al.'s question on a network: the experiment's model (an MLP with two hidden
    layers of width ``w`` by default; a ResNet or CNN of base width ``w`` if the experiment
    names one), trained dense and pruned in one step to ``target_weights`` prunable
    weights, with and without retraining. Widths whose dense model has no more than
    ``target_weights`` prunable weights are trained directly: the "train small" baseline.

    Runs go through the run store like any experiment: one pruning level whose ``rate``
    takes the dense model to the target, retrained with ``lr-rewind`` (the full schedule
    from the pruned weights). "Not retrained" evaluates the dense weights under the level-1
    masks (:func:`sddlib.engine.checkpoints.evaluate_pruned`). ``store`` and ``data_dir`` default
    to the project's (the root ``_config.yml``). Columns: ``width``, ``seed``,
    ``weights`` (prunable weights kept, measured from the run's masks, not the target
    asked for), ``method``, ``test_acc``, ``test_error``.
    """
    settings = load_settings() if store is None or data_dir is None else None
    runs = store if store is not None else RunStore(settings.runs_dir)
    data_dir = data_dir if data_dir is not None else settings.data_dir
    rows = []
    plan = network_plan(experiment, widths, target_weights, criteria, seeds)
    # every run in one call: one pool for all widths
    run_many([config for _, _, configs in plan for config in configs], runs,
             compute_missing=compute_missing, progress=False, data_dir=data_dir)
    for width, small, configs in plan:
        for config in configs:
            run = runs.find(config)
            if run is None or not run.is_finished():
                continue
            table = run.levels()
            if small:
                rows.append({"width": width, "seed": config.seed,
                             "weights": int(table.remaining_weights[0]),
                             "method": "small (trained directly)",
                             "test_acc": float(table.test_acc[0])})
                continue
            pruned = evaluate_pruned(run, 0, mask_level=1, data_dir=data_dir)
            criterion = config.criterion
            rows += [
                {"width": width, "seed": config.seed,
                 "weights": int(table.remaining_weights[1]),
                 "method": f"{criterion}, retrained", "test_acc": float(table.test_acc[1])},
                {"width": width, "seed": config.seed,
                 "weights": int(pruned["remaining_weights"]),
                 "method": f"{criterion}, not retrained", "test_acc": pruned["test_acc"]},
            ]
            if criterion == criteria[0]:
                rows.append({"width": width, "seed": config.seed,
                             "weights": int(table.remaining_weights[0]), "method": "dense",
                             "test_acc": float(table.test_acc[0])})
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["test_error"] = 1.0 - frame["test_acc"]
    return frame


def advantage_judgement(frame: pd.DataFrame, method: str = "magnitude, retrained"):
    """Chang et al.'s question judged over seeds on a :func:`network_check` frame: per
    seed, the best small network's test error (over the widths trained directly) minus
    the widest pruned network's (``method``), a :class:`sddlib.analysis.metrics.Judgement` above 0
    when pruning a wide network beats training a small one. The best small network is
    chosen per seed, which favours the small side: a win has to clear that too."""
    from sddlib.analysis.metrics import judge

    values = []
    for _, seed in (frame.groupby("seed") if not frame.empty else []):
        small = seed[seed.method == "small (trained directly)"]
        pruned = seed[seed.method == method]
        values.append(float("nan") if small.empty or pruned.empty else float(
            small.test_error.min() - pruned.loc[pruned.width.idxmax()].test_error))
    return judge(values, 0.0, above=True,
                 statistic="best small network's test error minus the widest pruned one's")
