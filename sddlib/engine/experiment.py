"""One sparse double descent run: train, prune, retrain, level after level.

Level 0 trains the dense model from its initialisation. Each later level gets its masks
(by default the run's criterion prunes ``rate`` of the remaining weights, scored on the
previous level's trained weights), its start weights and its recipe from the run's
retraining mode or branch (:mod:`sddlib.pruning.retrain`), and trains.

After each level the run stores its row (see ``store.LEVEL_COLUMNS``): sparsity measured
from the masks, accuracy on the noisy training labels, on the clean training labels and
on the corrupted subset (memorisation: agreement with the *noisy* label where it differs
from the true one), test accuracy and loss, the learning distance (how far the level's
training moved its trainable weights from where the mode started them: see
:mod:`sddlib.engine.distance`), the activation entropy of its ReLUs on the training inputs
(:mod:`sddlib.engine.entropy`; per layer in the level's ``entropy.json``) and the seconds spent.
A run with a validation split (``validation_size``, :func:`data.split_validation`) trains
on the rest of the training set, stores the split in ``validation.npz`` and adds
``val_acc`` and ``val_loss`` (on the labels as given, noisy where the noise hit). A
distilling run (``distill_from``, :mod:`sddlib.engine.distill`) trains every level with the loss
of its teacher run's chosen level and records which in ``meta.json`` (``teacher``).

A run knows its data: the dataset is loaded (and every size checked) before the store is
touched, its fingerprint (:func:`data.fingerprint`) and source go into ``meta.json``, and a
stored run is reused or resumed only on data with the same fingerprint
(:func:`check_data`). Many runs at once, stacked or in worker processes:
:mod:`sddlib.scheduling.sweep`; reading stored checkpoints for analysis:
:mod:`sddlib.engine.checkpoints`.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

from sddlib.base.files import DamagedFileError, atomic_save_torch, atomic_write_text, load_torch
from sddlib.config.fields import ConfigError, ExperimentConfig
from sddlib.data import datasets as data_module
from sddlib.engine import distance, entropy, fast, threads, train
from sddlib.engine.checkpoints import (
    cpu_state,
    fresh_state,
    mean,
    new_model,
    upgrade_learning_distance,
)
from sddlib.engine.distill import Distiller, teacher_level
from sddlib.pruning import prune
from sddlib.pruning.retrain import mode_of, runs_needed
from sddlib.storage.store import Run, RunStore


def run_experiment(config: ExperimentConfig, store: RunStore, *, progress: bool = True,
                   checkpoint_seconds: float = 60.0, data_dir: Path | str = "data/datasets",
                   download: bool = False) -> Run:
    """Run or resume ``config`` in ``store`` and return the finished run.

    A finished run is returned as it is; a partial one continues from its last finished
    level and its newest mid-level checkpoint. The runs it needs (a reinit run's lottery
    run, a re-dense branch's parent, a distilling run's teacher) are computed first if
    missing.
    """
    mode = mode_of(config)
    options = dict(progress=progress, checkpoint_seconds=checkpoint_seconds,
                   data_dir=data_dir, download=download)
    needs = runs_needed(config)
    config = config.replace(levels=mode.levels(config))
    bundle = load_data(config, data_dir, download)  # bad sizes fail here, store untouched
    found = store.find(config)
    if found is not None:
        reuse_stored(found, data_dir, bundle, progress)
        if found.is_finished():
            return found
    for needed in needs:
        run_experiment(needed, store, **options)
    device = train.training_device(config.device)
    with threads.torch_threads(threads.run_threads(config, device)):
        run = store.create(config, str(device), extra=run_meta(
            fast.speed_for(config, device), bundle))
        with run.lock():
            Experiment(config, run, device, progress, checkpoint_seconds, data_dir, download,
                       store, bundle=bundle).execute()
    return run


def reuse_stored(run: Run, data_dir: Path | str, bundle: Optional[data_module.DataBundle] = None,
                 progress: bool = False) -> Run:
    """The one step before a stored run is read, reused or resumed, wherever that happens
    (one run, :func:`sddlib.scheduling.sweep.run_many`, a stacked group, ``sddlib show``):
    its data checked against ``bundle`` when given (:func:`check_data`), then its stored
    learning distance and activation entropy brought up to the current measures without
    retraining (:func:`sddlib.engine.checkpoints.upgrade_learning_distance`,
    :func:`sddlib.engine.entropy.upgrade_activation_entropy`). Returns ``run``."""
    if bundle is not None:
        check_data(run, bundle)
    upgrade_learning_distance(run, data_dir)
    entropy.upgrade_activation_entropy(run, data_dir, progress)
    return run


def load_data(config: ExperimentConfig, data_dir: Path | str = "data/datasets",
              download: bool = False) -> data_module.DataBundle:
    """The data ``config`` trains on, its label noise applied, before its validation split
    is held out (:func:`training_split`); a bad size or a missing dataset raises here,
    before any run folder exists."""
    bundle = data_module.load(
        config.dataset, Path(data_dir), noise=config.noise, noise_kind=config.noise_kind,
        seed=config.seed, train_size=config.train_size, test_size=config.test_size,
        download=download, image_size=config.image_size)
    if config.validation_size >= bundle.num_train:
        raise ConfigError(f"validation_size: {config.validation_size} of {bundle.num_train} "
                          f"training samples leaves none to train on; allowed: 0 to "
                          f"{bundle.num_train - 1}")
    return bundle


def training_split(config: ExperimentConfig, bundle: data_module.DataBundle, run: Run) \
        -> tuple[data_module.DataBundle, Optional[data_module.Validation]]:
    """The part of ``bundle`` (from :func:`load_data`) that ``config``'s run trains on, and
    its validation split (None without one): the split stored in the run's
    ``validation.npz`` if it has one, else drawn (:func:`data.split_validation`)."""
    if config.validation_size == 0:
        return bundle, None
    path = run.file("validation.npz")
    stored = data_module.load_validation_indices(path) if path.exists() else None
    return data_module.split_validation(bundle, config.validation_size, config.seed, stored)


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
    which learning-distance and activation-entropy definitions ``levels.csv`` holds."""
    return {**speed.meta(), "data": data_module.describe(bundle),
            "learning_distance_version": distance.VERSION,
            "activation_entropy_version": entropy.VERSION,
            "activation_entropy_samples": entropy.SAMPLES}


def clean_data(config: ExperimentConfig, data_dir) -> data_module.DataBundle:
    """The data ``config`` reads, without noise, loaded once per process for a run of
    checks (every seed and noise level of one dataset shares it)."""
    return data_module.load_clean_cached(config.dataset, str(data_dir), config.train_size,
                                         config.test_size, config.image_size)


class Experiment:
    """The run of one config in its folder: what its mode (:mod:`sddlib.pruning.retrain`) reads
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
        """Load the data, the validation split, the original init and the teacher: what
        every level needs."""
        bundle, validation = self._hold_out(self._data())
        self.inputs = train.Inputs.from_bundle(bundle, self.device)
        self.validation = None if validation is None else \
            (validation.x.to(self.device), validation.y.to(self.device))
        self.input_shape, self.num_classes = bundle.input_shape, bundle.num_classes
        self.init_state = self._initial_state()
        self.distiller = self._distiller()

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
                          callbacks=tuple(callbacks), resume=resume, speed=self.speed,
                          distill=self.distiller)
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
        row = {**self._measure(level, model, spent), **self._measure_validation(model)}
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

    def _hold_out(self, bundle):
        """The training part of ``bundle`` and the validation split, stored with the run
        (``validation.npz``, and what it is in ``meta.json``) the first time."""
        train_part, validation = training_split(self.config, bundle, self.run)
        path = self.run.file("validation.npz")
        if validation is not None and not path.exists():
            data_module.save_validation(validation, bundle.num_train, path)
            self._note_meta(validation={
                "size": len(validation.indices), "file": "validation.npz",
                "labels": "as trained on (noisy where the noise hit)",
                "stratified": validation.stratified, "drawn": "after the label noise"})
        return train_part, validation

    def _distiller(self) -> Optional[Distiller]:
        """The loss of a distilling run: its teacher run's level that ``distill_from``
        picks (:mod:`sddlib.engine.distill`), frozen; ``meta.json`` records which."""
        config = self.config
        if not config.distills:
            return None
        wanted = config.teacher_config
        found = self.store.find(wanted)
        if found is None or not found.is_finished():
            raise RuntimeError(f"teacher: run {wanted.run_name()} is not finished; "
                               "run_experiment and run_many compute it first")
        table = found.levels()
        level = teacher_level(table, config.distill_from, wanted.levels)
        row = table[table.level == level].iloc[0]
        teacher = new_model(wanted, self.input_shape, self.num_classes)
        teacher.load_state_dict(load_torch(found.level_dir(level) / "final.pt"))
        teacher = fast.prepare_model(teacher.to(self.device), self.speed, self.inputs.is_image)
        distiller = Distiller(teacher, config.distill_alpha, config.distill_temperature,
                              self.speed, self._teacher_input(wanted, found))
        if not config.use_augment:  # a sample's teacher logits never change: compute once
            distiller.precompute(self.inputs)
        chosen = {"run": found.name, "level": level, "rule": config.distill_from,
                  "sparsity": float(row.sparsity), "test_acc": float(row.test_acc)}
        if "val_acc" in row:
            chosen["val_acc"] = float(row.val_acc)
        recorded = self.run.meta().get("teacher")
        if recorded is not None and (recorded["run"], recorded["level"]) != (found.name, level):
            raise RuntimeError(f"teacher: run {self.run.name} was trained by {recorded['run']} "
                               f"level {recorded['level']}, which now picks {found.name} level "
                               f"{level}; use another --runs-dir")
        self._note_meta(teacher=chosen)
        return distiller

    def _teacher_input(self, teacher_config: ExperimentConfig, teacher_run: Run):
        """How the student's prepared inputs become the teacher's, when they differ: a
        signal set is standardised with its training part's statistics, so a teacher
        trained on another part saw other numbers (image sets use the dataset's own)."""
        if self.inputs.is_image:
            return None
        bundle = load_data(teacher_config, self.data_dir, self.download)
        theirs = train.Inputs.from_bundle(training_split(teacher_config, bundle,
                                                         teacher_run)[0], torch.device("cpu"))
        ours = self.inputs
        mean, std = theirs.mean.to(self.device), theirs.std.to(self.device)
        if torch.equal(mean, ours.mean) and torch.equal(std, ours.std):
            return None
        scale, shift = ours.std / std, (ours.mean - mean) / std
        return lambda x: x * scale + shift

    def _note_meta(self, **entries) -> None:
        meta = self.run.meta()
        if any(meta.get(key) != value for key, value in entries.items()):
            atomic_write_text(self.run.file("meta.json"), json.dumps({**meta, **entries},
                                                                     indent=2))

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
                atomic_save_torch(path, {k: v.detach().cpu().clone() for k, v in
                                         train.model_state(state).items()})
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
        """The level's mid-level checkpoint, if there is one; a damaged one is discarded
        with a one-line warning (it holds nothing committed: the level restarts)."""
        path = self.run.file("progress.pt")
        if not path.exists():
            return None
        try:
            payload = load_torch(path)
        except DamagedFileError as error:
            print(f"sddlib: discarding a damaged mid-level checkpoint, {error}; level {level} "
                  "restarts", file=sys.stderr)
            path.unlink()
            return None
        if payload.get("level") != level:
            path.unlink()
            return None
        return payload

    # ------------------------------------------------------------------ measurements
    def _measure_validation(self, model) -> dict:
        """``val_acc`` and ``val_loss`` on the validation split; nothing without one."""
        if self.validation is None:
            return {}
        correct, loss = train.evaluate(model, self.inputs, *self.validation, speed=self.speed)
        return {"val_acc": mean(correct), "val_loss": loss}

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
            "activation_entropy": self._activation_entropy(level, model),
            "seconds": seconds,
        }

    def _activation_entropy(self, level: int, model) -> float:
        """The network's activation entropy (:mod:`sddlib.engine.entropy`); its layers' values
        go to the level's ``entropy.json``."""
        result = entropy.activation_entropy(model, self.inputs, entropy.SAMPLES)
        entropy.save(result, self.run.level_dir(level))
        return result.network
