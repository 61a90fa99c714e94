"""K seeds of one experiment: one after another, stacked, and side by side.

Measured for the default experiment (the 1-D CNN on MNIST-1D) and for the headline recipe
(LeNet-300-100 on mnist-5k: an MLP, the case where batching seeds into one matmul could
pay on a CPU, since no grouped convolution is involved).

Level 0 of seeds 0..K-1 (each with its own label noise, init and data order) is trained
three ways, each with the torch threads sddlib gives such a run (one, see
``sddlib.scheduling.parallel``): one seed after another with ``train_level``, all together as one
stacked ensemble with ``ensemble.train_level_stacked``, and side by side in one process
per core (``common.side_by_side``: how ``run_many`` trains runs on the CPU). Printed:
seconds per epoch of one seed alone (also with torch's default threads, for comparison),
each way's cost for the K seeds as a multiple of one seed (K means no gain over one after
another; the issue's goal was 1.5 for K = 3), and the largest weight difference between
stacked and alone. That difference is float rounding grown
by training: the batched kernels sum in another order, and on the real data a few
epochs of Adam amplify it to 1e-2 to 5e-2 in some weights, as much as training one model with 1
thread instead of 2 does (tests/test_ensemble.py checks 1e-5 on a small problem).

    python benchmarks/bench_stack.py [EPOCHS] [K]
"""
from __future__ import annotations

import copy
import sys

import common
import torch

from sddlib.engine import ensemble, threads, train


def main(epochs: int = 3, members: int = 3) -> list[tuple[str, str]]:
    rows = measure(epochs, members, "stack", {})
    return rows + measure(epochs, members, "stack (LeNet)", common.LENET)


def measure(epochs: int, members: int, label: str, changes: dict) -> list[tuple[str, str]]:
    configs = [common.default_config(seed=seed, **changes) for seed in range(members)]
    loaded = [common.load_inputs(config) for config in configs]
    inputs = [item[0] for item in loaded]
    dense = [common.new_model(config, *item[1:]) for config, item in zip(configs, loaded)]
    recipe = common.recipe(configs[0], epochs)
    seeds = [config.seed for config in configs]
    default_threads = torch.get_num_threads()
    # an untimed epoch of each first: allocator and kernel warm-up
    train.train_level(copy.deepcopy(dense[0]), inputs[0], common.recipe(configs[0], 1),
                      seed=0, level=0)
    default_one = common.seconds(train.train_level, copy.deepcopy(dense[0]), inputs[0],
                                 recipe, seed=seeds[0], level=0)
    with threads.torch_threads(threads.run_threads(configs[0], "cpu")):
        thread_count = torch.get_num_threads()
        ensemble.train_level_stacked(copy.deepcopy(dense), inputs,
                                     common.recipe(configs[0], 1), seeds=seeds, level=0)
        # alternate the ways twice and keep each one's best, so a busy moment hurts neither
        one_by_one_times, stacked_times, side_times = [], [], []
        processes = min(members, threads.usable_cores())
        for _ in range(2):
            alone = [copy.deepcopy(model) for model in dense]
            one_by_one_times.append(sum(
                common.seconds(train.train_level, model, data, recipe, seed=seed, level=0)
                for model, data, seed in zip(alone, inputs, seeds)))
            stacked_models = [copy.deepcopy(model) for model in dense]
            stacked_times.append(common.seconds(ensemble.train_level_stacked, stacked_models,
                                                inputs, recipe, seeds=seeds, level=0))
            side_times.append(common.side_by_side(seeds, epochs, processes, changes))
    one_by_one, stacked, side = min(one_by_one_times), min(stacked_times), min(side_times)
    difference = max(float((a - b).abs().max())
                     for one, many in zip(alone, stacked_models)
                     for a, b in zip(one.state_dict().values(), many.state_dict().values()))
    one_seed = one_by_one / members / epochs
    rows = [(f"{label}: one seed alone ({thread_count} thread), s/epoch", f"{one_seed:.3f}"),
            (f"{label}: one seed alone ({default_threads} threads), s/epoch",
             f"{default_one / epochs:.3f}"),
            (f"{label}: {members} seeds stacked / one seed",
             f"{stacked / epochs / one_seed:.2f}"),
            (f"{label}: {members} seeds side by side ({processes} processes) / one seed",
             f"{side / epochs / one_seed:.2f}"),
            (f"{label}: {members} seeds, speed-up of side by side over one after another",
             f"{one_by_one / side:.2f}x"),
            (f"{label}: max abs weight difference, stacked vs alone", f"{difference:.1e}")]
    return common.report(rows)


if __name__ == "__main__":
    print(common.machine())
    main(*(int(a) for a in sys.argv[1:]))
