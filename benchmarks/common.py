"""What every benchmark shares: the default experiment's data, model and recipe.

The benchmarks time level 0 of the default config (MNIST-1D, 8000/2000 samples, cnn1d of
width 32, Adam 1e-3, batch 128), usually for fewer epochs than its 30 to stay short.
Every ratio a benchmark prints is measured within one process, on one machine, so it is
comparable; the absolute seconds are only this machine's.
"""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch

from sddlib.config.fields import ExperimentConfig
from sddlib.data import datasets as data
from sddlib.engine import threads, train
from sddlib.models.architectures import build_model, default_prune_output
from sddlib.pruning import prune

DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "datasets"


def default_config(**changes) -> ExperimentConfig:
    return ExperimentConfig(device="cpu", **changes)


def load_inputs(config: ExperimentConfig) -> tuple[train.Inputs, tuple, int]:
    bundle = data.load(config.dataset, DATA_DIR, noise=config.noise,
                       noise_kind=config.noise_kind, seed=config.seed,
                       train_size=config.train_size, test_size=config.test_size,
                       download=True)
    inputs = train.Inputs.from_bundle(bundle, train.resolve_device(config.device))
    return inputs, bundle.input_shape, bundle.num_classes


def new_model(config: ExperimentConfig, input_shape, num_classes) -> torch.nn.Module:
    """The dense level-0 model of ``config``, initialised from its seed as an experiment does."""
    torch.manual_seed(config.seed)
    model = build_model(config, input_shape, num_classes)
    prune_output = (default_prune_output(config.model) if config.prune_output is None
                    else config.prune_output)
    prune.attach_masks(model, prune_output)
    return model


def recipe(config: ExperimentConfig, epochs: int) -> train.Recipe:
    return train.Recipe(epochs, config.batch_size, config.optimizer, config.lr,
                        config.momentum, config.weight_decay, config.schedule,
                        list(config.milestones), config.gamma, config.use_augment)


def seconds(function, *args, **kwargs) -> float:
    started = time.perf_counter()
    function(*args, **kwargs)
    return time.perf_counter() - started


def mean_seconds(function, repeats: int, warmup: int = 3) -> float:
    """Mean wall seconds of ``function()`` over ``repeats`` calls, after ``warmup`` untimed
    ones (allocator and kernel warm-up)."""
    for _ in range(warmup):
        function()
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - started) / repeats


def machine() -> str:
    threads = torch.get_num_threads()
    note = ""
    if threads > (os.cpu_count() or 1):
        note = " (more torch threads than cores: oversubscribed)"
    return (f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{threads} torch threads{note}, "
            f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}")


def report(rows: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Print a benchmark's (measure, value) rows and hand them on to the summary table."""
    for name, value in rows:
        print(f"{name}: {value}")
    return rows


LENET = dict(dataset="mnist-5k", model="mlp", widths=[300, 100], optimizer="sgd", lr=0.1,
             momentum=0.0)  # the headline recipe: LeNet-300-100 on 4,000 real digits


def side_by_side(seeds: list[int], epochs: int, processes: int,
                 changes: dict | None = None) -> float:
    """Wall seconds to train level 0 of the default config for ``seeds`` in ``processes``
    spawned processes side by side (seeds dealt round-robin), each with the torch threads
    ``sddlib.scheduling.parallel`` gives such a run (one), as ``run_many`` trains runs. Data, model
    and a warm-up epoch are prepared before the clock starts, in every process at once (a barrier),
    so process start-up is not counted: it is paid once per pool, not per run."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes + 1), context.Queue()
    shares = [seeds[i::processes] for i in range(processes)]
    workers = [context.Process(target=_side_by_side_worker,
                               args=(share, epochs, barrier, results, changes or {}))
               for share in shares]
    for worker in workers:
        worker.start()
    barrier.wait()
    started = time.time()
    ends = [results.get() for _ in workers]
    for worker in workers:
        worker.join()
    return max(ends) - started


def _side_by_side_worker(seeds, epochs, barrier, results, changes) -> None:
    import copy

    torch.set_num_threads(threads.run_threads(default_config(**changes), "cpu"))
    prepared = []
    for seed in seeds:
        config = default_config(seed=seed, **changes)
        inputs, input_shape, num_classes = load_inputs(config)
        prepared.append((config, inputs, new_model(config, input_shape, num_classes)))
    config, inputs, model = prepared[0]
    train.train_level(copy.deepcopy(model), inputs, recipe(config, 1), seed=0, level=0)
    barrier.wait()
    for config, inputs, model in prepared:
        train.train_level(model, inputs, recipe(config, epochs), seed=config.seed, level=0)
    results.put(time.time())
