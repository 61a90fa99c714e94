"""One sparse double descent experiment: train, prune, retrain, level after level.

Level 0 trains the dense model from its initialisation. Each later level prunes
``rate`` of the remaining weights, scored on the previous level's trained weights
(``reinit`` borrows the lottery run's masks instead), sets the starting weights as the
retraining mode says, and trains:

=============  ================================================================
``lottery``    surviving weights reset to the rewind point (iteration ``k`` of
               the dense run; ``k = 0`` is the original init), schedule from ``k``
``finetune``   continue from the pruned trained weights at ``finetune_lr``, constant
``lr-rewind``  continue from the pruned trained weights with the full schedule
``scratch``    a fresh random init (seeded per level), the full schedule
``reinit``     the lottery run's masks, a fresh random init, the full schedule
=============  ================================================================

After each level the run stores its row (see ``store.LEVEL_COLUMNS``): sparsity measured
from the masks, accuracy on the noisy training labels, on the clean training labels and
on the corrupted subset (memorisation: agreement with the *noisy* label where it differs
from the true one), test accuracy and loss, the learning distance and the seconds spent.

Learning distance (He et al.): ``||w_init - w_final||_2`` over every conv and linear
weight tensor (the output layer included, pruned or not), pruned weights counted as 0,
``w_init`` the original dense initialisation (for ``scratch`` and ``reinit``, whose levels
each start from a new init, that level's init). Biases and BatchNorm parameters are left
out: they are never pruned and the paper's definition is about the pruned weights.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import pandas as pd
import torch
from tqdm import tqdm

from . import data as data_module
from . import prune, train
from .config import ExperimentConfig
from .models import build_model, default_prune_output
from .store import Run, RunStore, atomic_save_torch, load_torch, table


def run_experiment(config: ExperimentConfig, store: RunStore, *, progress: bool = True,
                   checkpoint_seconds: float = 60.0, data_dir: Path | str = "data/datasets",
                   download: bool = False) -> Run:
    """Run or resume ``config`` in ``store`` and return the finished run.

    A finished run is returned as it is; a partial one continues from its last finished
    level and its newest mid-level checkpoint.
    """
    found = store.find(config)
    if found is not None and found.is_finished():
        return found
    if config.retrain == "reinit":
        # reinit needs the lottery run's masks, level by level
        run_experiment(config.lottery_counterpart, store, progress=progress,
                       checkpoint_seconds=checkpoint_seconds, data_dir=data_dir,
                       download=download)
    device = train.resolve_device(config.device)
    run = store.create(config, str(device))
    with run.lock():
        Experiment(config, run, device, progress, checkpoint_seconds, data_dir, download,
                   store).execute()
    return run


def run_many(configs: list[ExperimentConfig], store: RunStore, *, compute_missing: bool = True,
             progress: bool = True, **options) -> pd.DataFrame:
    """The levels of every config as one tidy frame, computing the runs not yet finished.

    With ``compute_missing=False`` nothing is computed: the unfinished runs are listed on
    stderr and left out of the frame (their finished levels are not shown either, so a
    figure never mixes complete and partial curves unawares).
    """
    runs, missing = [], []
    for config in configs:
        found = store.find(config)
        if found is not None and found.is_finished():
            runs.append(found)
        else:
            missing.append(config)
    if missing and not compute_missing:
        print(f"{len(missing)} of {len(configs)} runs are missing (compute_missing=False):",
              file=sys.stderr)
        for config in missing:
            print(f"  {config.run_name()}", file=sys.stderr)
    elif missing:
        for config in tqdm(missing, desc="runs", unit="run", disable=not progress):
            runs.append(run_experiment(config, store, progress=progress, **options))
    frame = table(runs)
    if not frame.empty:
        frame = frame[frame.level <= frame.run.map({r.name: r.config.levels for r in runs})]
    return frame.reset_index(drop=True)


class Experiment:
    def __init__(self, config: ExperimentConfig, run: Run, device: torch.device,
                 progress: bool, checkpoint_seconds: float, data_dir, download: bool,
                 store: RunStore):
        self.config, self.run, self.device = config, run, device
        self.progress, self.checkpoint_seconds = progress, checkpoint_seconds
        self.data_dir, self.download, self.store = Path(data_dir), download, store
        self.prune_output = (default_prune_output(config.model) if config.prune_output is None
                             else config.prune_output)

    # ------------------------------------------------------------------ main loop
    def execute(self) -> None:
        config = self.config
        bundle = self._data()
        self.inputs = train.Inputs.from_bundle(bundle, self.device)
        self.input_shape, self.num_classes = bundle.input_shape, bundle.num_classes
        self.init_state = self._initial_state()
        first = self.run.levels_done()
        bar = tqdm(range(first, config.levels + 1), desc=self.run.name[:48], unit="level",
                   disable=not self.progress, initial=first, total=config.levels + 1)
        for level in bar:
            row = self._level(level)
            bar.set_postfix(sparsity=f"{row['sparsity']:.3f}", test=f"{row['test_acc']:.3f}")

    def _level(self, level: int) -> dict:
        started = time.time()
        model = self._new_model()
        masks = self._masks_for(level, model)
        prune.set_masks(model, masks)
        resume = self._resume_state(level)
        if resume is None:
            self._set_start_weights(level, model)
        callbacks = [self._checkpointer(level)]
        if level == 0 and self._needs_rewind_point():
            callbacks.append(self._rewind_saver())
        epochs = tqdm(total=self.config.epochs, desc=f"level {level}", unit="epoch",
                      leave=False, disable=not self.progress)

        def show(event, state):
            if event == "epoch":
                epochs.n = state.epoch
                epochs.refresh()
        callbacks.append(show)
        recipe = self._recipe(level)
        train.train_level(model, self.inputs, recipe, seed=self.config.seed, level=level,
                          callbacks=tuple(callbacks), resume=resume)
        epochs.close()
        if (leak := prune.check_masks_hold(model)) is not None:
            raise RuntimeError(f"pruned weights of {leak} moved away from zero")
        spent = time.time() - started + (resume or {}).get("seconds", 0.0)
        atomic_save_torch(self.run.level_dir(level) / "final.pt", _cpu_state(model))
        row = self._measure(level, model, spent)
        self.run.append_level(row)
        self.run.file("progress.pt").unlink(missing_ok=True)
        return row

    # ------------------------------------------------------------------ pieces
    def _data(self):
        bundle = data_module.load(
            self.config.dataset, self.data_dir, noise=self.config.noise,
            noise_kind=self.config.noise_kind, seed=self.config.seed,
            train_size=self.config.train_size, test_size=self.config.test_size,
            download=self.download, image_size=self.config.image_size)
        noise_path = self.run.file("label_noise.npz")
        if not noise_path.exists():
            data_module.save_noise(bundle, noise_path)
        return bundle

    def _new_model(self) -> torch.nn.Module:
        model = build_model(self.config, self.input_shape, self.num_classes)
        prune.attach_masks(model, self.prune_output)
        return model.to(self.device)

    def _initial_state(self) -> dict:
        """The original dense init, made once from the seed and stored."""
        path = self.run.file("checkpoints", "init.pt")
        if path.exists():
            return load_torch(path)
        seed = self.config.seed
        if self.config.retrain == "reinit":
            seed = train.derive_seed(seed, "reinit", 0)
        state = self._fresh_init(seed)
        atomic_save_torch(path, state)
        return state

    def _fresh_init(self, seed: int) -> dict:
        torch.manual_seed(seed)
        return _cpu_state(self._new_model())

    def _masks_for(self, level: int, model) -> dict:
        path = self.run.level_dir(level) / "mask.pt"
        if path.exists():
            return load_torch(path)
        if level == 0:
            masks = {name: torch.ones_like(mask) for name, mask in prune.get_masks(model).items()}
        elif self.config.retrain == "reinit":
            lottery = self.store.find(self.config.lottery_counterpart)
            masks = load_torch(lottery.level_dir(level) / "mask.pt")
        else:
            masks = self._prune_previous(level, model)
        masks = {name: mask.cpu() for name, mask in masks.items()}
        atomic_save_torch(path, masks)
        return masks

    def _prune_previous(self, level: int, model) -> dict:
        previous = load_torch(self.run.level_dir(level - 1) / "final.pt")
        model.load_state_dict(previous)
        config = self.config
        if config.criterion == "magnitude":
            scores = prune.magnitude_scores(model)
        elif config.criterion == "random":
            scores = prune.random_scores(model, train.derive_seed(config.seed, level, "random"))
        else:
            scores = prune.gradient_scores(model, self._gradient_batches(level))
        return prune.prune_masks(scores, prune.get_masks(model), config.rate, config.scope)

    def _gradient_batches(self, level: int):
        generator = torch.Generator().manual_seed(train.derive_seed(self.config.seed, level,
                                                                    "gradient"))
        order = torch.randperm(self.inputs.num_train, generator=generator)
        size = self.config.batch_size
        for batch in range(self.config.gradient_batches):
            index = order[batch * size:(batch + 1) * size].to(self.device)
            if len(index) == 0:
                break
            yield self.inputs.prepare(self.inputs.x_train[index]), self.inputs.y_train[index]

    def _start_state(self, level: int) -> dict:
        """The weights a level starts from, before its masks are applied."""
        mode = self.config.retrain
        if level == 0 or mode == "lottery":
            if level > 0 and self.config.rewind_iteration > 0:
                return load_torch(self.run.file("checkpoints", "rewind.pt"))
            return self.init_state
        if mode in ("finetune", "lr-rewind"):
            return load_torch(self.run.level_dir(level - 1) / "final.pt")
        return self._fresh_init(train.derive_seed(self.config.seed, mode, level))

    def _distance_origin(self, level: int) -> dict:
        """scratch and reinit start every level from a new init: distances are from it."""
        if level > 0 and self.config.retrain in ("scratch", "reinit"):
            return self._start_state(level)
        return self.init_state

    def _set_start_weights(self, level: int, model) -> None:
        masks = {f"{k}_mask": v.clone() for k, v in prune.get_masks(model).items()}
        model.load_state_dict({**self._start_state(level), **masks})
        prune.apply_masks(model)

    def _recipe(self, level: int) -> train.Recipe:
        config = self.config
        recipe = train.Recipe(config.epochs, config.batch_size, config.optimizer, config.lr,
                              config.momentum, config.weight_decay, config.schedule,
                              list(config.milestones), config.gamma, config.use_augment)
        if level > 0 and config.retrain == "finetune":
            recipe.lr, recipe.schedule = config.finetune_lr, "constant"
        if level > 0 and config.retrain == "lottery":
            recipe.start_iteration = config.rewind_iteration
        return recipe

    def _needs_rewind_point(self) -> bool:
        return self.config.retrain == "lottery" and self.config.rewind_iteration > 0

    def _rewind_saver(self):
        path = self.run.file("checkpoints", "rewind.pt")
        wanted = self.config.rewind_iteration

        def save(event, state):
            if event == "iteration" and state.iteration == wanted and not path.exists():
                atomic_save_torch(path, _cpu_state(state.model))
        return save

    def _checkpointer(self, level: int):
        path = self.run.file("progress.pt")
        last = [time.time()]
        started = time.time()

        def save(event, state):
            if event != "epoch" or state.iteration >= state.total_iterations:
                return
            if time.time() - last[0] < self.checkpoint_seconds:
                return
            payload = train.checkpoint_payload(state)
            payload.update(level=level, seconds=time.time() - started)
            atomic_save_torch(path, payload)
            last[0] = time.time()
        return save

    def _resume_state(self, level: int) -> Optional[dict]:
        path = self.run.file("progress.pt")
        if not path.exists():
            return None
        payload = load_torch(path)
        if payload.get("level") != level:
            path.unlink()
            return None
        return payload

    # ------------------------------------------------------------------ measurements
    def _measure(self, level: int, model, seconds: float) -> dict:
        inputs = self.inputs
        train_correct, train_loss = train.evaluate(model, inputs, inputs.x_train, inputs.y_train)
        clean_correct, _ = train.evaluate(model, inputs, inputs.x_train, inputs.y_train_clean)
        test_correct, test_loss = train.evaluate(model, inputs, inputs.x_test, inputs.y_test)
        corrupted = inputs.corrupted
        masks = prune.get_masks(model)
        return {
            "level": level,
            "sparsity": prune.sparsity(masks),
            "remaining_weights": prune.remaining_weights(masks),
            "train_acc": _mean(train_correct),
            "train_acc_clean": _mean(clean_correct),
            "train_acc_corrupted": _mean(train_correct[corrupted]) if corrupted.any() else
            float("nan"),
            "train_loss": train_loss,
            "test_acc": _mean(test_correct),
            "test_loss": test_loss,
            "learning_distance": learning_distance(self._distance_origin(level),
                                                   _cpu_state(model), weight_names(model)),
            "seconds": seconds,
        }


def evaluate_pruned(run: Run, level: int, *, data_dir: Path | str = "data/datasets",
                    mask_level: Optional[int] = None) -> dict:
    """Test accuracy and loss of ``level``'s final weights under ``mask_level``'s masks.

    With ``mask_level = level + 1`` this is the network just pruned and *not retrained*
    (the comparison of Chang et al.); the stored runs hold everything it needs.
    """
    config = run.config
    mask_level = level if mask_level is None else mask_level
    bundle = data_module.load(config.dataset, Path(data_dir), noise=config.noise,
                              noise_kind=config.noise_kind, seed=config.seed,
                              train_size=config.train_size, test_size=config.test_size,
                              image_size=config.image_size)
    device = train.resolve_device(config.device)
    inputs = train.Inputs.from_bundle(bundle, device)
    model = build_model(config, bundle.input_shape, bundle.num_classes)
    prune_output = (default_prune_output(config.model) if config.prune_output is None
                    else config.prune_output)
    prune.attach_masks(model, prune_output)
    model.load_state_dict(load_torch(run.level_dir(level) / "final.pt"))
    prune.set_masks(model, load_torch(run.level_dir(mask_level) / "mask.pt"))
    model.to(device)
    correct, loss = train.evaluate(model, inputs, inputs.x_test, inputs.y_test)
    return {"test_acc": _mean(correct), "test_loss": loss,
            "remaining_weights": prune.remaining_weights(prune.get_masks(model))}


def weight_names(model: torch.nn.Module) -> list[str]:
    """Conv and linear weight tensors: the tensors the learning distance is taken over."""
    return list(prune.prunable_parameters(model, prune_output=True))


def learning_distance(initial: dict, final: dict, names: list[str]) -> float:
    """||w_init - w_final||_2 over ``names``; pruned weights are zero in ``final``."""
    total = sum(float((final[n].float() - initial[n].float()).pow(2).sum()) for n in names)
    return total ** 0.5


def _mean(values: torch.Tensor) -> float:
    return float(values.float().mean().item())


def _cpu_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
