"""One sparse double descent experiment: train, prune, retrain, level after level.

Level 0 trains the dense model from its initialisation. Each later level prunes
``rate`` of the remaining weights, scored on the previous level's trained weights
(``reinit`` borrows the lottery run's masks instead), sets the starting weights as the
retraining mode says, and trains:

=============  ================================================================
``lottery``    surviving weights reset to the rewind point (iteration ``k`` of
               the dense run; ``k = 0`` is the original init), schedule from ``k``
``finetune``   continue from the pruned trained weights at ``finetune_lr``, constant
               (none: ``lr``/100, the paper's 0.001 after 0.1)
``lr-rewind``  continue from the pruned trained weights with the full schedule
``scratch``    a fresh random init (seeded per level), the full schedule
``reinit``     the lottery run's masks, a fresh random init, the full schedule
=============  ================================================================

Re-dense (``redense_level = L``) is a branch off a finished run, stored as a run of its
own: one level (its level 0) that starts from the parent run's (the same config without
``redense_level``) level-``L`` trained weights, lets every pruned weight grow back from
zero (all-ones masks) and trains the full recipe. The parent is computed first if missing.
Its ``checkpoints/init.pt`` is that sparse solution, so its learning distance is how far
re-dense training moves away from it.

After each level the run stores its row (see ``store.LEVEL_COLUMNS``): sparsity measured
from the masks, accuracy on the noisy training labels, on the clean training labels and
on the corrupted subset (memorisation: agreement with the *noisy* label where it differs
from the true one), test accuracy and loss, the learning distance (how far the level's
training moved its trainable weights from where the mode started them: see
:mod:`sddlib.distance`) and the seconds spent.

A run knows its data: the dataset is loaded (and every size checked) before the store is
touched, its fingerprint (:func:`data.fingerprint`) and source go into ``meta.json``, and a
stored run is reused or resumed only on data with the same fingerprint
(:func:`check_data`).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Optional

import pandas as pd
import torch
from tqdm import tqdm

from . import data as data_module
from . import distance, ensemble, fast, parallel, prune, train
from .config import ConfigError, ExperimentConfig
from .models import build_model, default_prune_output
from .store import (Run, RunBusyError, RunStore, atomic_save_torch, atomic_write_text,
                    load_torch, table)


def run_experiment(config: ExperimentConfig, store: RunStore, *, progress: bool = True,
                   checkpoint_seconds: float = 60.0, data_dir: Path | str = "data/datasets",
                   download: bool = False) -> Run:
    """Run or resume ``config`` in ``store`` and return the finished run.

    A finished run is returned as it is; a partial one continues from its last finished
    level and its newest mid-level checkpoint.
    """
    if config.redense_level is not None:
        run_experiment(redense_parent(config), store, progress=progress,
                       checkpoint_seconds=checkpoint_seconds, data_dir=data_dir,
                       download=download)
        config = config.replace(levels=0)  # one level: the re-dense training
    bundle = load_data(config, data_dir, download)  # bad sizes fail here, store untouched
    found = store.find(config)
    if found is not None:
        check_data(found, bundle)
        upgrade_learning_distance(found, data_dir)
        if found.is_finished():
            return found
    if config.retrain == "reinit":
        # reinit needs the lottery run's masks, level by level
        run_experiment(config.lottery_counterpart, store, progress=progress,
                       checkpoint_seconds=checkpoint_seconds, data_dir=data_dir,
                       download=download)
    device = train.resolve_device(config.device)
    with parallel.torch_threads(parallel.run_threads(config, device)):
        run = store.create(config, str(device), extra=_run_meta(
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


def _run_meta(speed, bundle: data_module.DataBundle) -> dict:
    """What ``meta.json`` records beside the environment: speed settings, the data, and
    which learning-distance definition ``levels.csv`` holds."""
    return {**speed.meta(), "data": data_module.describe(bundle),
            "learning_distance_version": distance.VERSION}


def redense_parent(config: ExperimentConfig) -> ExperimentConfig:
    """The run whose level-``redense_level`` solution a re-dense run starts from."""
    return config.replace(redense_level=None, levels=max(config.levels, config.redense_level))


def run_many(configs: list[ExperimentConfig], store: RunStore, *, compute_missing: bool = True,
             progress: bool = True, stack: bool | str = False, workers: int | str = 1,
             **options) -> pd.DataFrame:
    """The levels of every config as one tidy frame, computing the runs not yet finished.

    With ``compute_missing=False`` nothing is computed: the unfinished runs are listed on
    stderr and left out of the frame (their finished levels are not shown either, so a
    figure never mixes complete and partial curves unawares).

    ``stack="auto"`` stacks where :func:`stacking_pays` (on CUDA).
    With ``stack=True`` the missing runs that differ only in seed, label noise and pruning
    criterion are trained together, level by level, as one stacked ensemble
    (:func:`run_stacked`); each is stored as its own run, its ``meta.json`` saying it was
    trained stacked and with which runs.

    ``workers``: how many processes train the missing runs (or stacked groups) at once;
    ``"auto"`` is one per core on the CPU for runs worth a process (see
    :mod:`sddlib.parallel`, which also says why a run's numbers do not depend on it; in a
    script, start a pool under ``if __name__ == "__main__":``). The default, 1, trains
    in this process.
    Runs that start from another run's results (``reinit``, re-dense) are trained after the
    runs they need, which are computed too if missing (and not returned unless asked for).
    """
    runs, missing = [], []
    data_dir = options.get("data_dir", "data/datasets")
    for config in configs:
        found = store.find(config)
        if found is not None and found.is_finished():
            check_data(found, _clean_data(config, data_dir))
            upgrade_learning_distance(found, data_dir)
            runs.append(found)
        else:
            missing.append(config)
    if missing and not compute_missing:
        print(f"{len(missing)} of {len(configs)} runs are missing (compute_missing=False):",
              file=sys.stderr)
        for config in missing:
            print(f"  {config.run_name()}", file=sys.stderr)
    elif missing:
        device = train.resolve_device(missing[0].device)
        if stack == "auto":
            stack = stacking_pays(device)
        rounds = _rounds(missing, store, stack)
        count = parallel.resolve_workers(workers, [g for r in rounds for g in r], device)
        if count > 1:
            parallel.run_in_pool(rounds, store, count, progress, options)
        else:
            groups = [group for round_ in rounds for group in round_]
            for group in tqdm(groups, desc="runs", unit="run", disable=not progress):
                if len(group) == 1:
                    run_experiment(group[0], store, progress=progress, **options)
                else:
                    run_stacked(group, store, progress=progress, **options)
        runs += [store.find(config) for config in missing]
    frame = table(runs)
    if not frame.empty:
        frame = frame[frame.level <= frame.run.map({r.name: r.config.levels for r in runs})]
    return frame.reset_index(drop=True)


@functools.lru_cache(maxsize=2)
def _clean_data_cached(dataset: str, data_dir: str, train_size, test_size, image_size):
    return data_module.load_clean(dataset, data_dir, train_size=train_size,
                                  test_size=test_size, image_size=image_size)


def _clean_data(config: ExperimentConfig, data_dir) -> data_module.DataBundle:
    """The data ``config`` reads, without noise, loaded once per process for a run of
    checks (every seed and noise level of one dataset shares it)."""
    return _clean_data_cached(config.dataset, str(data_dir), config.train_size,
                              config.test_size, config.image_size)


def _rounds(missing: list[ExperimentConfig], store: RunStore, stack: bool) \
        -> list[list[list[ExperimentConfig]]]:
    """The missing runs, with the unfinished runs they start from, in rounds: a run's
    round comes after the round of the run it needs (a ``reinit`` run's lottery run, a
    re-dense run's parent); each round in groups (stacked where ``stack``)."""
    depth: dict[str, int] = {}
    wanted: dict[str, ExperimentConfig] = {}

    def visit(config: ExperimentConfig) -> int:
        if config.redense_level is not None:
            needs = redense_parent(config)
        elif config.retrain == "reinit":
            needs = config.lottery_counterpart
        else:
            needs = None
        level = 0
        if needs is not None:
            found = store.find(needs)
            if found is None or not found.is_finished() or needs.levels > found.config.levels:
                level = visit(needs) + 1
        name = config.run_name()
        if name not in wanted or config.levels > wanted[name].levels:
            wanted[name] = config
        depth[name] = max(depth.get(name, 0), level)
        return depth[name]

    for config in missing:
        visit(config)
    rounds = []
    for level in range(max(depth.values()) + 1):
        batch = [c for name, c in wanted.items() if depth[name] == level]
        rounds.append(stack_groups(batch) if stack else [[c] for c in batch])
    return rounds


def stacking_pays(device: torch.device) -> bool:
    """Whether ``stack="auto"`` trains groups as stacked ensembles on ``device``: on CUDA.

    Stacking pays where per-step overhead dominates, as with small models on a GPU (one
    launch instead of K). On the CPU the default 1-D CNN's time goes into convolution
    kernels, and the grouped convolutions vmap turns them into are no cheaper per member:
    on the 2-core machine this project is developed on, 3 to 5 stacked members cost 3.2 to
    5.2 times one member (``benchmarks/bench_stack.py``), no faster than one after another,
    and a stacked member's numbers depend on the group it trained in. So the CPU trains
    one by one unless stacking is asked for (``SDDLIB_STACK=1``, ``sddlib run --stack``),
    several at once in worker processes (:mod:`sddlib.parallel`), which does pay there.
    """
    return device.type == "cuda"


# What stacked members may differ in: nothing that changes a model's shape or schedule.
_STACK_FREE = ("seed", "noise", "noise_kind", "criterion")
_WITHOUT_BATCHNORM = ("mlp", "cnn1d")


def stack_groups(configs: list[ExperimentConfig]) -> list[list[ExperimentConfig]]:
    """``configs`` in groups that can train as one stacked ensemble (a group may be one).

    Left alone: models with BatchNorm (see :mod:`ensemble`), ``reinit`` (it waits for its
    lottery run), rewinding (level 0 saves the rewind point mid-level) and re-dense
    branches. Repeats of one run are dropped.
    """
    groups: dict[str, dict[str, ExperimentConfig]] = {}
    for config in configs:
        if (config.model in _WITHOUT_BATCHNORM and config.retrain != "reinit"
                and config.rewind_iteration == 0 and config.redense_level is None):
            key = json.dumps({k: v for k, v in config.to_dict().items()
                              if k not in _STACK_FREE}, sort_keys=True)
        else:
            key = config.run_name()
        groups.setdefault(key, {})[config.run_name()] = config
    return [list(group.values()) for group in groups.values()]


def run_stacked(configs: list[ExperimentConfig], store: RunStore, *, progress: bool = True,
                checkpoint_seconds: float = 60.0, data_dir: Path | str = "data/datasets",
                download: bool = False) -> list[Run]:
    """Run one of :func:`stack_groups`' groups level by level as a stacked ensemble.

    Each run gets the same files and rows as from :func:`run_experiment`; its ``seconds``
    are its share of each stacked level's wall time. The weights equal training the run
    alone only to float rounding (batched kernels sum in another order, and for the
    convolutions that order can also depend on how many members are stacked), and training
    amplifies it over epochs and levels: on the quick profile's MNIST-1D CNN, a stacked run
    and the same config trained alone differ by up to about 2 points of accuracy at some
    levels. So each member's ``meta.json`` records how it was trained::

        "trained_as": {"stacked_with": [the other members' run names],
                       "stacked_levels": [the levels trained stacked]}

    (runs trained alone have no ``trained_as``). A finished run is reused either way: the
    config, not the way it was trained, identifies it.

    Mid-level checkpoints, as for single runs: at the first epoch end after every
    ``checkpoint_seconds``, each member's ``progress.pt`` is written (atomically) in the
    single-run format (:func:`ensemble.member_checkpoint`), so a member can also resume
    alone, and a group can resume from single runs' checkpoints. On resume, if every member
    still to train the current level holds a checkpoint of that level at the same
    iteration, the group resumes from them (on the same machine, with the same members
    still to train, to the same numbers as an uninterrupted group); otherwise (a member
    without one, or a process killed between two members' writes) the checkpoints are
    discarded and the group restarts the level.
    """
    device = train.resolve_device(configs[0].device)
    # members share one precision (it is part of the group key); vmapped training is
    # neither compiled nor channels_last (stacked models are 1-D or MLPs)
    speed = dataclasses.replace(fast.speed_for(configs[0], device), compile=False,
                                channels_last=False)
    with ExitStack() as held:
        held.enter_context(parallel.torch_threads(parallel.run_threads(configs[0], device)))
        bundles = [load_data(config, data_dir, download) for config in configs]
        for config, bundle in zip(configs, bundles):
            if (found := store.find(config)) is not None:
                check_data(found, bundle)
                upgrade_learning_distance(found, data_dir)
        runs = [store.create(config, str(device), extra=_run_meta(speed, bundle))
                for config, bundle in zip(configs, bundles)]
        for run in runs:
            held.enter_context(run.lock())
        members = [Experiment(config, run, device, False, checkpoint_seconds, data_dir,
                              download, store, bundle=bundle)
                   for config, run, bundle in zip(configs, runs, bundles)]
        for member in members:
            member.setup()
            member.speed = speed
        first = min(run.levels_done() for run in runs)
        for level in tqdm(range(first, configs[0].levels + 1), desc=f"{len(runs)} stacked runs",
                          unit="level", disable=not progress):
            todo = [member for member in members if member.run.levels_done() <= level]
            started = time.time()
            models, resume = _prepare_stacked_level(todo, level)
            before = [0.0] * len(todo) if resume is None else \
                [payload.get("seconds", 0.0) for payload in resume]
            ensemble.train_level_stacked(
                models, [member.inputs for member in todo], todo[0]._recipe(level),
                seeds=[member.config.seed for member in todo], level=level,
                callbacks=(_stacked_checkpointer(todo, level, before, checkpoint_seconds),),
                resume=resume, precision=speed.precision)
            share = (time.time() - started) / len(todo)
            for member, model, seconds in zip(todo, models, before):
                _record_stacked(member.run, [other.run.name for other in todo
                                             if other is not member], level)
                member.finish_level(level, model, seconds + share)
    return runs


def _prepare_stacked_level(todo: list["Experiment"], level: int) \
        -> tuple[list[torch.nn.Module], Optional[list[dict]]]:
    """The members' models for ``level`` and their checkpoints, if all of them can resume.

    Resuming needs a checkpoint of this level from every member, all at one iteration;
    otherwise every member's checkpoint is deleted and the level starts from the beginning.
    """
    prepared = [member.prepare_level(level) for member in todo]
    models = [model for model, _ in prepared]
    resume = [payload for _, payload in prepared]
    if all(payload is not None for payload in resume) and \
            len({payload["iteration"] for payload in resume}) == 1:
        return models, resume
    for member, model, payload in zip(todo, models, resume):
        member.run.file("progress.pt").unlink(missing_ok=True)
        if payload is not None:  # prepare_level left it for the checkpoint to fill
            member._set_start_weights(level, model)
    return models, None


def _stacked_checkpointer(todo: list["Experiment"], level: int, before: list[float],
                          checkpoint_seconds: float):
    """Experiment._checkpointer for a group: each member's ``progress.pt``, single-run format.

    ``seconds`` is the member's share of the level's wall time, ``before`` included.
    """
    last = [time.time()]
    started = time.time()

    def save(event, state):
        if event != "epoch" or state.iteration >= state.total_iterations:
            return
        if time.time() - last[0] < checkpoint_seconds:
            return
        share = (time.time() - started) / len(todo)
        for k, member in enumerate(todo):
            payload = ensemble.member_checkpoint(state, k)
            payload.update(level=level, seconds=before[k] + share)
            atomic_save_torch(member.run.file("progress.pt"), payload)
        last[0] = time.time()
    return save


def _record_stacked(run: Run, others: list[str], level: int) -> None:
    """Note in ``meta.json`` that ``level`` of ``run`` was trained stacked with ``others``."""
    meta = run.meta()
    trained = meta.get("trained_as") or {}
    trained["stacked_with"] = sorted(set(trained.get("stacked_with", [])) | set(others))
    trained["stacked_levels"] = sorted(set(trained.get("stacked_levels", [])) | {level})
    meta["trained_as"] = trained
    atomic_write_text(run.file("meta.json"), json.dumps(meta, indent=2))


class Experiment:
    def __init__(self, config: ExperimentConfig, run: Run, device: torch.device,
                 progress: bool, checkpoint_seconds: float, data_dir, download: bool,
                 store: RunStore, bundle: Optional[data_module.DataBundle] = None):
        self.config, self.run, self.device = config, run, device
        self.bundle = bundle
        self.progress, self.checkpoint_seconds = progress, checkpoint_seconds
        self.data_dir, self.download, self.store = Path(data_dir), download, store
        self.prune_output = (default_prune_output(config.model) if config.prune_output is None
                             else config.prune_output)
        self.speed = fast.speed_for(config, device)  # bf16, compile, channels_last: see fast

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
            self._set_start_weights(level, model)
        return model, resume

    def finish_level(self, level: int, model, spent: float) -> dict:
        """Check the masks held, store the trained weights and the level's row."""
        if (leak := prune.check_masks_hold(model)) is not None:
            raise RuntimeError(f"pruned weights of {leak} moved away from zero")
        atomic_save_torch(self.run.level_dir(level) / "final.pt", _cpu_state(model))
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
        model = build_model(self.config, self.input_shape, self.num_classes)
        prune.attach_masks(model, self.prune_output)
        return model.to(self.device)

    def _initial_state(self) -> dict:
        """The original dense init, made once from the seed and stored."""
        path = self.run.file("checkpoints", "init.pt")
        if path.exists():
            return load_torch(path)
        if self.config.redense_level is not None:
            parent = self.store.find(redense_parent(self.config))
            state = load_torch(parent.level_dir(self.config.redense_level) / "final.pt")
            atomic_save_torch(path, state)
            return state
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

    def start_state(self, level: int) -> dict:
        """The weights a level starts from, before its masks are applied."""
        mode = self.config.retrain
        if level == 0 or mode == "lottery":
            if level > 0 and self.config.rewind_iteration > 0:
                return load_torch(self.run.file("checkpoints", "rewind.pt"))
            return self.init_state
        if mode in ("finetune", "lr-rewind"):
            return load_torch(self.run.level_dir(level - 1) / "final.pt")
        return self._fresh_init(train.derive_seed(self.config.seed, mode, level))

    def _set_start_weights(self, level: int, model) -> None:
        masks = {f"{k}_mask": v.clone() for k, v in prune.get_masks(model).items()}
        model.load_state_dict({**self.start_state(level), **masks})
        prune.apply_masks(model)

    def _recipe(self, level: int) -> train.Recipe:
        config = self.config
        recipe = train.Recipe(config.epochs, config.batch_size, config.optimizer, config.lr,
                              config.momentum, config.weight_decay, config.schedule,
                              list(config.milestones), config.gamma, config.use_augment)
        if level > 0 and config.retrain == "finetune":
            recipe.lr, recipe.schedule = config.finetune_rate, "constant"
        if level > 0 and config.retrain == "lottery":
            recipe.start_iteration = config.rewind_iteration
        return recipe

    def _needs_rewind_point(self) -> bool:
        return (self.config.retrain == "lottery" and self.config.rewind_iteration > 0
                and self.config.redense_level is None)

    def _rewind_saver(self):
        path = self.run.file("checkpoints", "rewind.pt")
        wanted = self.config.rewind_iteration

        def save(event, state):
            if event == "iteration" and state.iteration == wanted and not path.exists():
                atomic_save_torch(path, _cpu_state(state.model))
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
            "train_acc": _mean(train_correct),
            "train_acc_clean": _mean(clean_correct),
            "train_acc_corrupted": _mean(train_correct[corrupted]) if corrupted.any() else
            float("nan"),
            "train_loss": train_loss,
            "test_acc": _mean(test_correct),
            "test_loss": test_loss,
            "learning_distance": distance.learning_distance(
                self.start_state(level), _cpu_state(model),
                {name: mask.cpu() for name, mask in masks.items()}),
            "seconds": seconds,
        }


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
    return {"test_acc": _mean(correct), "test_loss": loss,
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
    model = build_model(config, bundle.input_shape, bundle.num_classes)
    prune_output = (default_prune_output(config.model) if config.prune_output is None
                    else config.prune_output)
    prune.attach_masks(model, prune_output)
    model.load_state_dict(load_torch(run.level_dir(level) / "final.pt"))
    return model.to(device), inputs


DISTANCE_ORIGINS = ("start", "init", "rewind")


def level_distances(run: Run, origin: str = "start", per_layer: bool = False, *,
                    data_dir: Path | str = "data/datasets") -> pd.DataFrame:
    """The learning distance of every finished level of ``run``, from its checkpoints.

    ``origin``: ``"start"`` (the definition of the ``learning_distance`` column, see
    :mod:`sddlib.distance`: from the weights the level's training started from),
    ``"init"`` (from the original init, masked by the level's mask) or ``"rewind"`` (from
    the rewind point of a lottery run, masked; the init when it rewinds to iteration 0).
    With ``per_layer`` there is one row per (level, layer), the layer named by its module;
    otherwise ``layer`` is ``"all"``. Columns: ``level``, ``sparsity``, ``layer``,
    ``distance``. ``scratch`` and ``reinit`` levels start from fresh inits that are not
    stored; they are made again from the seed, which needs the dataset's shapes.
    """
    if origin not in DISTANCE_ORIGINS:
        raise ValueError(f"origin: unknown {origin!r}; allowed: {', '.join(DISTANCE_ORIGINS)}")
    reader = Experiment(run.config, run, torch.device("cpu"), False, 0.0, data_dir, False,
                        store=None)
    reader.init_state = load_torch(run.file("checkpoints", "init.pt"))
    if origin == "start" and run.config.retrain in ("scratch", "reinit"):
        bundle = _clean_data(run.config, data_dir)
        reader.input_shape, reader.num_classes = bundle.input_shape, bundle.num_classes
    rewind = run.file("checkpoints", "rewind.pt")
    fixed = {"init": reader.init_state,
             "rewind": load_torch(rewind) if rewind.exists() else reader.init_state}
    levels = run.levels()
    rows = []
    for level, sparsity in zip(levels["level"], levels["sparsity"]):
        level = int(level)
        start = reader.start_state(level) if origin == "start" else fixed[origin]
        squares = distance.squared_by_layer(start, load_torch(run.level_dir(level) / "final.pt"),
                                            load_torch(run.level_dir(level) / "mask.pt"))
        if not per_layer:
            squares = {"all": sum(squares.values())}
        rows += [{"level": level, "sparsity": float(sparsity), "layer": layer,
                  "distance": total ** 0.5} for layer, total in squares.items()]
    return pd.DataFrame(rows, columns=["level", "sparsity", "layer", "distance"])


def upgrade_learning_distance(run: Run, data_dir: Path | str = "data/datasets") -> bool:
    """Recompute a stored run's ``learning_distance`` column from its checkpoints if it
    holds an earlier definition (see :mod:`sddlib.distance`); True if it was rewritten.

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


def _mean(values: torch.Tensor) -> float:
    return float(values.float().mean().item())


def _cpu_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
