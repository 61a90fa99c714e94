"""Many runs at once: which to compute, in what order, stacked or side by side.

:func:`run_many` is what the book's notebooks and ``sddlib run --seeds`` call: it reuses
the finished runs (checking their data, upgrading their stored learning distance and
activation entropy), and computes the missing ones in rounds (a run after the runs its
mode needs first, see :mod:`sddlib.retrain`), one group at a time in this process or in
a pool of worker processes (:mod:`sddlib.parallel`), where a group is one run or
several trained together as one stacked ensemble (:func:`run_stacked`,
:mod:`sddlib.ensemble`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Optional

import pandas as pd
import torch
from tqdm import tqdm

from . import ensemble, entropy, fast, parallel, train
from .checkpoints import upgrade_learning_distance
from .config import ExperimentConfig
from .experiment import Experiment, check_data, clean_data, load_data, run_experiment, run_meta
from .files import atomic_save_torch, atomic_write_text
from .models import model_spec
from .retrain import mode_of, runs_needed
from .store import Run, RunStore, table


class Planned(Exception):
    """Raised by :func:`run_many` inside :func:`planning`, once it has recorded the runs
    it was asked to compute: the caller wanted to know them, not to have them computed."""


_PLANNING: Optional[list] = None


@contextlib.contextmanager
def planning():
    """Within this block :func:`run_many` computes nothing: a call that would compute
    records its configs in the list this yields and raises :class:`Planned`. The book
    uses it to ask a notebook which runs it needs without executing its figures
    (``sddlib figures --compute-only``)."""
    global _PLANNING
    previous, _PLANNING = _PLANNING, []
    try:
        yield _PLANNING
    finally:
        _PLANNING = previous


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
    if _PLANNING is not None and compute_missing:
        _PLANNING.extend(configs)
        raise Planned()
    runs, missing = [], []
    data_dir = options.get("data_dir", "data/datasets")
    for config in configs:
        found = store.find(config)
        if found is not None and found.is_finished():
            check_data(found, clean_data(config, data_dir))
            upgrade_learning_distance(found, data_dir)
            entropy.upgrade_activation_entropy(found, data_dir, progress)
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
            parallel.run_in_pool(rounds, store, count, progress, options, train_group)
        else:
            groups = [group for round_ in rounds for group in round_]
            for group in tqdm(groups, desc="runs", unit="run", disable=not progress):
                train_group(group, store, {**options, "progress": progress})
        runs += [store.find(config) for config in missing]
    frame = table(runs)
    if not frame.empty:
        frame = frame[frame.level <= frame.run.map({r.name: r.config.levels for r in runs})]
    return frame.reset_index(drop=True)


def _rounds(missing: list[ExperimentConfig], store: RunStore, stack: bool) \
        -> list[list[list[ExperimentConfig]]]:
    """The missing runs, with the unfinished runs they start from, in rounds: a run's
    round comes after the round of the run it needs (a ``reinit`` run's lottery run, a
    re-dense run's parent, a distilling run's teacher); each round in groups (stacked
    where ``stack``)."""
    depth: dict[str, int] = {}
    wanted: dict[str, ExperimentConfig] = {}

    def visit(config: ExperimentConfig) -> int:
        level = 0
        for needs in runs_needed(config):
            found = store.find(needs)
            if found is None or not found.is_finished() or needs.levels > found.config.levels:
                level = max(level, visit(needs) + 1)
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
    K stacked members cost about K times one member there (``benchmarks/bench_stack.py``
    measures it; the reference page records the numbers), no faster than one after
    another, and a stacked member's numbers depend on the group it trained in. So the CPU trains
    one by one unless stacking is asked for (``SDDLIB_STACK=1``, ``sddlib run --stack``),
    several at once in worker processes (:mod:`sddlib.parallel`), which does pay there.
    """
    return device.type == "cuda"


# What stacked members may differ in: nothing that changes a model's shape or schedule.
_STACK_FREE = ("seed", "noise", "noise_kind", "criterion")


def stack_groups(configs: list[ExperimentConfig]) -> list[list[ExperimentConfig]]:
    """``configs`` in groups that can train as one stacked ensemble (a group may be one).

    Left alone: models with BatchNorm (see :mod:`ensemble`), ``reinit`` (it waits for its
    lottery run), rewinding (level 0 saves the rewind point mid-level), re-dense
    branches and distilling runs (the stacked loop has no teacher). Repeats of one run
    are dropped.
    """
    groups: dict[str, dict[str, ExperimentConfig]] = {}
    for config in configs:
        if not model_spec(config.model).batch_norm and mode_of(config).stackable(config) \
                and not config.distills:
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
    if distilling := [c.run_name() for c in configs if c.distills]:
        raise ValueError(f"distill_from: {distilling[0]} distils and trains alone; allowed "
                         "in a stacked group: none")
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
                entropy.upgrade_activation_entropy(found, data_dir, progress)
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
    """Train one of :func:`run_many`'s groups: a run alone, or a stacked ensemble."""
    options = {"progress": False, **options}
    if len(group) == 1:
        run_experiment(group[0], store, **options)
    else:
        run_stacked(group, store, **options)
