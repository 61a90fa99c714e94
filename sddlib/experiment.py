"""One sparse double descent run: train, prune, retrain, level after level.

Level 0 trains the dense model from its initialisation. Each later level gets its masks
(by default the run's criterion prunes ``rate`` of the remaining weights, scored on the
previous level's trained weights), its start weights and its recipe from the run's
retraining mode or branch (:mod:`sddlib.retrain`), and trains.

After each level the run stores its row (see ``store.LEVEL_COLUMNS``): sparsity measured
from the masks, accuracy on the noisy training labels, on the clean training labels and
on the corrupted subset (memorisation: agreement with the *noisy* label where it differs
from the true one), test accuracy and loss, the learning distance (how far the level's
training moved its trainable weights from where the mode started them: see
:mod:`sddlib.distance`) and the seconds spent.

A run knows its data: the dataset is loaded (and every size checked) before the store is
touched, its fingerprint (:func:`data.fingerprint`) and source go into ``meta.json``, and a
stored run is reused or resumed only on data with the same fingerprint
(:func:`check_data`). Many runs at once, stacked or in worker processes:
:mod:`sddlib.sweep`; reading stored checkpoints for analysis: :mod:`sddlib.checkpoints`.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

from . import data as data_module
from . import distance, fast, parallel, prune, train
from .checkpoints import cpu_state, fresh_state, mean, new_model, upgrade_learning_distance
from .config import ConfigError, ExperimentConfig
from .files import atomic_save_torch, atomic_write_text, load_torch
from .retrain import mode_of
from .store import Run, RunStore


def run_experiment(config: ExperimentConfig, store: RunStore, *, progress: bool = True,
                   checkpoint_seconds: float = 60.0, data_dir: Path | str = "data/datasets",
                   download: bool = False) -> Run:
    """Run or resume ``config`` in ``store`` and return the finished run.

    A finished run is returned as it is; a partial one continues from its last finished
    level and its newest mid-level checkpoint. The runs its mode needs first (a reinit
    run's lottery run, a re-dense branch's parent) are computed first if missing.
    """
    mode = mode_of(config)
    options = dict(progress=progress, checkpoint_seconds=checkpoint_seconds,
                   data_dir=data_dir, download=download)
    needs = mode.needs(config)
    config = config.replace(levels=mode.levels(config))
    bundle = load_data(config, data_dir, download)  # bad sizes fail here, store untouched
    found = store.find(config)
    if found is not None:
        check_data(found, bundle)
        upgrade_learning_distance(found, data_dir)
        if found.is_finished():
            return found
    for needed in needs:
        run_experiment(needed, store, **options)
    device = train.resolve_device(config.device)
    with parallel.torch_threads(parallel.run_threads(config, device)):
        run = store.create(config, str(device), extra=run_meta(
            fast.speed_for(config, device), bundle))
        with run.lock():
            Experiment(config, run, device, progress, checkpoint_seconds, data_dir, download,
                       store, bundle=bundle).execute()
    return run


def load_data(config: ExperimentConfig, data_dir: Path | str = "data/datasets",
              download: bool = False) -> data_module.DataBundle:
    """The data ``config`` trains on, its label noise applied; a bad size or a missing
    dataset raises here, before any run folder exists."""
    return data_module.load(
        config.dataset, Path(data_dir), noise=config.noise, noise_kind=config.noise_kind,
        seed=config.seed, train_size=config.train_size, test_size=config.test_size,
        download=download, image_size=config.image_size)


class DataMismatchError(ConfigError):
    """A stored run was trained on other data than the data given now."""


def check_data(run: Run, bundle: data_module.DataBundle) -> None:
    """Refuse to reuse or resume ``run`` on data other than the data it was trained on.

    Runs stored before fingerprints existed have none: what their ``label_noise.npz``
    holds (the training-set size and the true labels of the noisy samples) is checked
    instead, and the fingerprint is recorded, marked ``"recorded_later": true``.
    """
    meta = run.meta()
    given = data_module.describe(bundle)
    stored = meta.get("data")
    if stored is None:
        noise_path = run.file("label_noise.npz")
        if noise_path.exists():
            record = data_module.load_noise(noise_path)
            if record.num_train != bundle.num_train or not torch.equal(
                    record.clean_labels, bundle.y_train_clean[record.noise_indices]):
                raise DataMismatchError(
                    f"data: run {run.name} was trained on another training set than "
                    f"{given['source']} gives now (its label_noise.npz does not match); "
                    "point --data-dir at the data it was trained on, or use another --runs-dir")
        meta["data"] = {**given, "recorded_later": True}
        atomic_write_text(run.file("meta.json"), json.dumps(meta, indent=2))
        return
    if stored["fingerprint"] != given["fingerprint"]:
        raise DataMismatchError(
            f"data: run {run.name} was trained on data {stored['fingerprint']} "
            f"({stored.get('source')}), but the data given now is {given['fingerprint']} "
            f"({given['source']}); point --data-dir at the data it was trained on, or use "
            "another --runs-dir")


def run_meta(speed, bundle: data_module.DataBundle) -> dict:
    """What ``meta.json`` records beside the environment: speed settings, the data, and
    which learning-distance definition ``levels.csv`` holds."""
    return {**speed.meta(), "data": data_module.describe(bundle),
            "learning_distance_version": distance.VERSION}


def clean_data(config: ExperimentConfig, data_dir) -> data_module.DataBundle:
    """The data ``config`` reads, without noise, loaded once per process for a run of
    checks (every seed and noise level of one dataset shares it)."""
    return data_module.load_clean_cached(config.dataset, str(data_dir), config.train_size,
                                         config.test_size, config.image_size)


class Experiment:
    """The run of one config in its folder: what its mode (:mod:`sddlib.retrain`) reads
    through (``config``, ``run``, ``store``, ``init_state``, :meth:`fresh_init`,
    :meth:`prune_previous`), and the level loop."""

    def __init__(self, config: ExperimentConfig, run: Run, device: torch.device,
                 progress: bool, checkpoint_seconds: float, data_dir, download: bool,
                 store: RunStore, bundle: Optional[data_module.DataBundle] = None):
        self.config, self.run, self.device = config, run, device
        self.bundle = bundle
        self.progress, self.checkpoint_seconds = progress, checkpoint_seconds
        self.data_dir, self.download, self.store = Path(data_dir), download, store
        self.speed = fast.speed_for(config, device)  # bf16, compile, channels_last: see fast
        self.mode = mode_of(config)

    # ------------------------------------------------------------------ main loop
    def execute(self) -> None:
        config = self.config
        self.setup()
        first = self.run.levels_done()
        bar = tqdm(range(first, config.levels + 1), desc=self.run.name[:48], unit="level",
                   disable=not self.progress, initial=first, total=config.levels + 1)
        for level in bar:
            row = self._level(level)
            bar.set_postfix(sparsity=f"{row['sparsity']:.3f}", test=f"{row['test_acc']:.3f}")

    def setup(self) -> None:
        """Load the data and the original init: what every level needs."""
        bundle = self._data()
        self.inputs = train.Inputs.from_bundle(bundle, self.device)
        self.input_shape, self.num_classes = bundle.input_shape, bundle.num_classes
        self.init_state = self._initial_state()

    def _level(self, level: int) -> dict:
        started = time.time()
        model, resume = self.prepare_level(level)
        callbacks = [self._checkpointer(level, (resume or {}).get("seconds", 0.0))]
        if level == 0 and self.mode.saves_rewind_point(self.config):
            callbacks.append(self._rewind_saver())
        epochs = tqdm(total=self.config.epochs, desc=f"level {level}", unit="epoch",
                      leave=False, disable=not self.progress)

        def show(event, state):
            if event == "epoch":
                epochs.n = state.epoch
                epochs.refresh()
        callbacks.append(show)
        recipe = self.recipe(level)
        train.train_level(model, self.inputs, recipe, seed=self.config.seed, level=level,
                          callbacks=tuple(callbacks), resume=resume, speed=self.speed)
        epochs.close()
        spent = time.time() - started + (resume or {}).get("seconds", 0.0)
        return self.finish_level(level, model, spent)

    def prepare_level(self, level: int, resumable: bool = True) -> tuple[torch.nn.Module,
                                                                         Optional[dict]]:
        """The level's model, masked and at its start weights (or a mid-level checkpoint's).

        ``resumable=False`` discards a mid-level checkpoint.
        """
        model = self._new_model()
        masks = self._masks_for(level, model)
        prune.set_masks(model, masks)
        if not resumable:
            self.run.file("progress.pt").unlink(missing_ok=True)
        resume = self._resume_state(level)
        if resume is None:
            self.set_start_weights(level, model)
        return model, resume

    def finish_level(self, level: int, model, spent: float) -> dict:
        """Check the masks held, store the trained weights and the level's row."""
        if (leak := prune.check_masks_hold(model)) is not None:
            raise RuntimeError(f"pruned weights of {leak} moved away from zero")
        atomic_save_torch(self.run.level_dir(level) / "final.pt", cpu_state(model))
        row = self._measure(level, model, spent)
        self.run.append_level(row)
        self.run.file("progress.pt").unlink(missing_ok=True)
        return row

    # ------------------------------------------------------------------ pieces
    def _data(self):
        bundle = self.bundle or load_data(self.config, self.data_dir, self.download)
        noise_path = self.run.file("label_noise.npz")
        if not noise_path.exists():
            data_module.save_noise(bundle, noise_path)
        return bundle

    def _new_model(self) -> torch.nn.Module:
        return new_model(self.config, self.input_shape, self.num_classes).to(self.device)

    def _initial_state(self) -> dict:
        """The original dense init, made once from the seed and stored."""
        path = self.run.file("checkpoints", "init.pt")
        if path.exists():
            return load_torch(path)
        state = self.mode.initial_state(self)
        if state is None:
            state = self.fresh_init(self.mode.initial_seed(self.config))
        atomic_save_torch(path, state)
        return state

    def fresh_init(self, seed: int) -> dict:
        """A new dense init of the run's model from ``seed``."""
        return fresh_state(self.config, self.input_shape, self.num_classes, seed)

    def _masks_for(self, level: int, model) -> dict:
        path = self.run.level_dir(level) / "mask.pt"
        if path.exists():
            return load_torch(path)
        if level == 0:
            masks = {name: torch.ones_like(mask) for name, mask in prune.get_masks(model).items()}
        else:
            masks = self.mode.masks(self, level, model)
        masks = {name: mask.cpu() for name, mask in masks.items()}
        atomic_save_torch(path, masks)
        return masks

    def prune_previous(self, level: int, model) -> dict:
        """The run's criterion applied to the previous level's trained weights."""
        previous = load_torch(self.run.level_dir(level - 1) / "final.pt")
        model.load_state_dict(previous)
        config = self.config
        inputs = prune.ScoreInputs(train.derive_seed(config.seed, level, config.criterion),
                                   lambda: self._gradient_batches(level))
        scores = prune.criterion(config.criterion).score(model, inputs)
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

    def start_state(self, level: int) -> dict:
        """The weights a level starts from, before its masks are applied."""
        return self.init_state if level == 0 else self.mode.start(self, level)

    def set_start_weights(self, level: int, model) -> None:
        masks = {f"{k}_mask": v.clone() for k, v in prune.get_masks(model).items()}
        model.load_state_dict({**self.start_state(level), **masks})
        prune.apply_masks(model)

    def recipe(self, level: int) -> train.Recipe:
        """What ``level`` trains: the config's recipe, as the mode changes it after level 0."""
        config = self.config
        recipe = train.Recipe(config.epochs, config.batch_size, config.optimizer, config.lr,
                              config.momentum, config.weight_decay, config.schedule,
                              list(config.milestones), config.gamma, config.use_augment)
        return recipe if level == 0 else self.mode.recipe(config, level, recipe)

    def _rewind_saver(self):
        path = self.run.file("checkpoints", "rewind.pt")
        wanted = self.config.rewind_iteration

        def save(event, state):
            if event == "iteration" and state.iteration == wanted and not path.exists():
                atomic_save_torch(path, cpu_state(state.model))
        return save

    def _checkpointer(self, level: int, before: float = 0.0):
        """Save progress at epoch ends; ``before``: seconds spent on the level by earlier
        attempts, so a level interrupted twice still counts all its time."""
        path = self.run.file("progress.pt")
        last = [time.time()]
        started = time.time()

        def save(event, state):
            if event != "epoch" or state.iteration >= state.total_iterations:
                return
            if time.time() - last[0] < self.checkpoint_seconds:
                return
            payload = train.checkpoint_payload(state)
            payload.update(level=level, seconds=before + time.time() - started)
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
        speed = self.speed
        train_correct, train_loss = train.evaluate(model, inputs, inputs.x_train, inputs.y_train,
                                                   speed=speed)
        clean_correct, _ = train.evaluate(model, inputs, inputs.x_train, inputs.y_train_clean,
                                          speed=speed)
        test_correct, test_loss = train.evaluate(model, inputs, inputs.x_test, inputs.y_test,
                                                 speed=speed)
        corrupted = inputs.corrupted
        masks = prune.get_masks(model)
        return {
            "level": level,
            "sparsity": prune.sparsity(masks),
            "remaining_weights": prune.remaining_weights(masks),
            "train_acc": mean(train_correct),
            "train_acc_clean": mean(clean_correct),
            "train_acc_corrupted": mean(train_correct[corrupted]) if corrupted.any() else
            float("nan"),
            "train_loss": train_loss,
            "test_acc": mean(test_correct),
            "test_loss": test_loss,
            "learning_distance": distance.learning_distance(
                self.start_state(level), cpu_state(model),
                {name: mask.cpu() for name, mask in masks.items()}),
            "seconds": seconds,
        }
