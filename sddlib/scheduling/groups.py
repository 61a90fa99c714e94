"""Runs trained together: stacked ensembles, and the one function a worker calls.

A task of the plan (:mod:`sddlib.scheduling.plan`) is one run or a group of runs that
differ only in seed, label noise and criterion (:func:`stack_groups`), trained level by
level as one stacked ensemble (:func:`run_stacked`, :mod:`sddlib.engine.ensemble`). Every
backend, in this process, in a worker process or as a Ray task, trains a task with
:func:`train_group`.
"""
from __future__ import annotations

import dataclasses
import json
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import torch
from tqdm import tqdm

from sddlib.base.files import atomic_save_torch, atomic_write_text
from sddlib.config.fields import ExperimentConfig
from sddlib.engine import ensemble, fast, threads, train
from sddlib.engine.experiment import Experiment, load_data, reuse_stored, run_experiment, run_meta
from sddlib.models.architectures import model_spec
from sddlib.pruning.retrain import mode_of
from sddlib.storage.store import Run, RunStore

if TYPE_CHECKING:
    from collections.abc import Mapping


def stacking_pays(device: torch.device) -> bool:
    """Whether ``stack="auto"`` trains groups as stacked ensembles on ``device``: on CUDA.

    Stacking pays where per-step overhead dominates, as with small models on a GPU (one
    launch instead of K). On the CPU the default 1-D CNN's time goes into convolution
    kernels, and the grouped convolutions vmap turns them into are no cheaper per member:
    K stacked members cost about K times one member there. LeNet-300-100's batched
    matmuls do get more done stacked than in processes side by side, but a stacked
    member's numbers depend on the group it trained in (batched kernels sum in another
    order, and training amplifies it), so the same config and seed would give another
    curve when a page asks for other seeds. So the CPU trains one run at a time, several at
    once in worker processes (:mod:`sddlib.scheduling.parallel`), unless stacking is asked
    for (``SDDLIB_STACK=1``, ``sddlib run --stack``). ``benchmarks/bench_stack.py``
    measures both; ``benchmarks/MEASUREMENTS.md`` records the numbers.
    """
    return device.type == "cuda"


# What stacked members may differ in: nothing that changes a model's shape or schedule.
_STACK_FREE = ("seed", "noise", "noise_kind", "criterion")


def stack_groups(configs: list[ExperimentConfig],
                 needs: Optional["Mapping[str, set[str]]"] = None) -> list[list[ExperimentConfig]]:
    """``configs`` in groups that can train as one stacked ensemble (a group may be one).

    Left alone: models with BatchNorm (see :mod:`sddlib.engine.ensemble`), ``reinit`` (it
    waits for its lottery run), rewinding (level 0 saves the rewind point mid-level),
    re-dense branches and distilling runs (the stacked loop has no teacher). With
    ``needs`` (run name -> the run names it waits for), only runs that wait for the same
    runs share a group. Repeats of one run are dropped.
    """
    groups: dict[str, dict[str, ExperimentConfig]] = {}
    for config in configs:
        if not model_spec(config.model).batch_norm and mode_of(config).stackable(config) \
                and not config.distills:
            key = json.dumps({k: v for k, v in config.to_dict().items()
                              if k not in _STACK_FREE}, sort_keys=True)
            if needs is not None:
                key += json.dumps(sorted(needs.get(config.run_name(), ())))
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
    if distilling := [c.run_name() for c in configs if c.distills]:
        raise ValueError(f"distill_from: {distilling[0]} distils and trains alone; allowed "
                         "in a stacked group: none")
    device = train.training_device(configs[0].device)
    # members share one precision (it is part of the group key); vmapped training is
    # neither compiled nor channels_last (stacked models are 1-D or MLPs)
    speed = dataclasses.replace(fast.speed_for(configs[0], device), compile=False,
                                channels_last=False)
    with ExitStack() as held:
        held.enter_context(threads.torch_threads(threads.run_threads(configs[0], device)))
        bundles = [load_data(config, data_dir, download) for config in configs]
        for config, bundle in zip(configs, bundles):
            if (found := store.find(config)) is not None:
                reuse_stored(found, data_dir, bundle, progress)
        runs = [store.create(config, str(device), extra=run_meta(speed, bundle))
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
                models, [member.inputs for member in todo], todo[0].recipe(level),
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
            member.set_start_weights(level, model)
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


def train_group(group: list[ExperimentConfig], store: RunStore, options: dict) -> None:
    """Train one task of the plan: a run alone, or a group as a stacked ensemble."""
    options = {"progress": False, **options}
    if len(group) == 1:
        run_experiment(group[0], store, **options)
    else:
        run_stacked(group, store, **options)
