"""Reading a stored run's checkpoints: its models, their test numbers, their distances.

Everything here works from a run's folder alone (and its dataset, where a model must be
evaluated or a fresh init made again), so analysis pages and the theory chapter can read
runs without the engine that trained them. :func:`upgrade_learning_distance` rewrites a
run stored with an earlier learning-distance definition from its checkpoints.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import pandas as pd
import torch

from sddlib.base.files import atomic_write_text, load_torch
from sddlib.data import datasets as data_module
from sddlib.engine import distance, fast, train
from sddlib.models.architectures import build_model, default_prune_output
from sddlib.pruning import prune
from sddlib.pruning.retrain import mode_of
from sddlib.storage.store import Run, RunBusyError


def new_model(config, input_shape: tuple[int, ...], num_classes: int) -> torch.nn.Module:
    """``config``'s model with its masks attached (all ones), on the CPU."""
    model = build_model(config, input_shape, num_classes)
    prune.attach_masks(model, default_prune_output(config.model) if config.prune_output is None
                       else config.prune_output)
    return model


def fresh_state(config, input_shape: tuple[int, ...], num_classes: int, seed: int) -> dict:
    """A new dense init of ``config``'s model from ``seed`` (the torch RNG is reseeded)."""
    torch.manual_seed(seed)
    return cpu_state(new_model(config, input_shape, num_classes))


def cpu_state(model: torch.nn.Module) -> dict:
    """A copy of ``model``'s state dict on the CPU."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def mean(values: torch.Tensor) -> float:
    return float(values.float().mean().item())


def evaluate_pruned(run: Run, level: int, *, data_dir: Path | str = "data/datasets",
                    mask_level: Optional[int] = None) -> dict:
    """Test accuracy and loss of ``level``'s final weights under ``mask_level``'s masks.

    With ``mask_level = level + 1`` this is the network just pruned and *not retrained*
    (the comparison of Chang et al.); the stored runs hold everything it needs.
    """
    mask_level = level if mask_level is None else mask_level
    model, inputs = load_level(run, level, data_dir=data_dir)
    prune.set_masks(model, {name: mask.to(inputs.x_test.device) for name, mask in
                            load_torch(run.level_dir(mask_level) / "mask.pt").items()})
    correct, loss = train.evaluate(model, inputs, inputs.x_test, inputs.y_test,
                                   speed=fast.speed_for(run.config, inputs.x_test.device))
    return {"test_acc": mean(correct), "test_loss": loss,
            "remaining_weights": prune.remaining_weights(prune.get_masks(model))}


def load_level(run: Run, level: int, *, data_dir: Path | str = "data/datasets") \
        -> tuple[torch.nn.Module, train.Inputs]:
    """``level``'s trained model (with its masks) and the run's data, on the run's device."""
    config = run.config
    bundle = data_module.load(config.dataset, Path(data_dir), noise=config.noise,
                              noise_kind=config.noise_kind, seed=config.seed,
                              train_size=config.train_size, test_size=config.test_size,
                              image_size=config.image_size)
    device = train.resolve_device(config.device)
    inputs = train.Inputs.from_bundle(bundle, device)
    model = new_model(config, bundle.input_shape, bundle.num_classes)
    model.load_state_dict(load_torch(run.level_dir(level) / "final.pt"))
    return model.to(device), inputs


DISTANCE_ORIGINS = ("start", "init", "rewind")


def level_distances(run: Run, origin: str = "start", per_layer: bool = False, *,
                    data_dir: Path | str = "data/datasets") -> pd.DataFrame:
    """The learning distance of every finished level of ``run``, from its checkpoints.

    ``origin``: ``"start"`` (the definition of the ``learning_distance`` column, see
    :mod:`sddlib.engine.distance`: from the weights the level's training started from),
    ``"init"`` (from the original init, masked by the level's mask) or ``"rewind"`` (from
    the rewind point of a lottery run, masked; the init when it rewinds to iteration 0).
    With ``per_layer`` there is one row per (level, layer), the layer named by its module;
    otherwise ``layer`` is ``"all"``. Columns: ``level``, ``sparsity``, ``layer``,
    ``distance``. ``scratch`` and ``reinit`` levels start from fresh inits that are not
    stored; they are made again from the seed, which needs the dataset's shapes.
    """
    if origin not in DISTANCE_ORIGINS:
        raise ValueError(f"origin: unknown {origin!r}; allowed: {', '.join(DISTANCE_ORIGINS)}")
    reader = _StoredRun(run, data_dir)
    rewind = run.file("checkpoints", "rewind.pt")
    fixed = {"init": reader.init_state,
             "rewind": load_torch(rewind) if rewind.exists() else reader.init_state}
    levels = run.levels()
    rows = []
    for level, sparsity in zip(levels["level"], levels["sparsity"]):
        level = int(level)
        if origin != "start":
            start = fixed[origin]
        else:
            start = reader.init_state if level == 0 else mode_of(run.config).start(reader, level)
        squares = distance.squared_by_layer(start, load_torch(run.level_dir(level) / "final.pt"),
                                            load_torch(run.level_dir(level) / "mask.pt"))
        if not per_layer:
            squares = {"all": sum(squares.values())}
        rows += [{"level": level, "sparsity": float(sparsity), "layer": layer,
                  "distance": total ** 0.5} for layer, total in squares.items()]
    return pd.DataFrame(rows, columns=["level", "sparsity", "layer", "distance"])


def upgrade_learning_distance(run: Run, data_dir: Path | str = "data/datasets") -> bool:
    """Recompute a stored run's ``learning_distance`` column from its checkpoints if it
    holds an earlier definition (see :mod:`sddlib.engine.distance`); True if it was rewritten.

    Nothing is retrained and the checkpoints are not touched; ``meta.json`` notes the
    upgrade. A run another process is computing is left alone (it will be upgraded the
    next time it is found).
    """
    if run.meta().get("learning_distance_version") == distance.VERSION:
        return False
    try:
        with run.lock():
            table = run.levels()
            if not table.empty:
                table["learning_distance"] = level_distances(
                    run, data_dir=data_dir)["distance"].to_numpy()
                atomic_write_text(run.file("levels.csv"), table.to_csv(index=False))
            meta = run.meta()
            meta["learning_distance_version"] = distance.VERSION
            meta["learning_distance_upgraded"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            atomic_write_text(run.file("meta.json"), json.dumps(meta, indent=2))
    except RunBusyError:
        return False
    return True


class _StoredRun:
    """What a retraining mode reads of a run (:mod:`sddlib.pruning.retrain`), for a stored one:
    enough to say where each level started."""

    def __init__(self, run: Run, data_dir):
        self.config, self.run, self.store = run.config, run, None
        self.init_state = load_torch(run.file("checkpoints", "init.pt"))
        self.data_dir = data_dir

    def fresh_init(self, seed: int) -> dict:
        recorded = self.run.meta().get("data", {}).get("input_shape")
        if recorded is not None:
            shape, classes = tuple(recorded), data_module.DATASETS[self.config.dataset].num_classes
        else:  # a run stored before meta.json recorded its data
            bundle = data_module.load_clean_cached(
                self.config.dataset, str(self.data_dir), self.config.train_size,
                self.config.test_size, self.config.image_size)
            shape, classes = bundle.input_shape, bundle.num_classes
        return fresh_state(self.config, shape, classes, seed)
