"""One pruning level of the default experiment: sddlib's ``train_level`` against a plain loop.

The reference is the loop a PyTorch user would write: a shuffling ``DataLoader`` over a
``TensorDataset`` of the normalised signals, Adam, and the masks multiplied into the
weights after each step. Both train the same initial model on the same data for the same
epochs (level 0, dense), in this process; the ratio is sddlib's seconds over the
reference's (below 1: sddlib is faster). sddlib trains with the torch threads it gives
a run (one for the default model, see ``sddlib.scheduling.parallel``), the reference with torch's
default. The last rows are the machine's throughput when one run per core trains side by
side, as ``run_many`` does with several runs (``common.side_by_side``): the seconds of a
level per run, not of one curve, whose levels follow each other.

    python benchmarks/bench_level.py [EPOCHS]
"""
from __future__ import annotations

import copy
import sys

import common
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from sddlib.engine import threads, train
from sddlib.pruning import prune


def reference_level(model: torch.nn.Module, inputs: train.Inputs, config, epochs: int) -> None:
    dataset = TensorDataset(inputs.prepare(inputs.x_train), inputs.y_train)
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(config.seed))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    weights, masks = prune.masked_pairs(model)
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            with torch.no_grad():
                for weight, mask in zip(weights, masks):
                    weight.mul_(mask)


def main(epochs: int = 4) -> list[tuple[str, str]]:
    config = common.default_config()
    inputs, input_shape, num_classes = common.load_inputs(config)
    dense = common.new_model(config, input_shape, num_classes)
    recipe = common.recipe(config, epochs)
    # one untimed epoch of each first: allocator and kernel warm-up
    train.train_level(copy.deepcopy(dense), inputs, common.recipe(config, 1), seed=0, level=0)
    reference_level(copy.deepcopy(dense), inputs, config, 1)
    # alternate the two twice and keep each one's best, so a busy moment hurts neither
    sddlib_times, reference_times = [], []
    thread_count = threads.run_threads(config, "cpu")
    for _ in range(2):
        with threads.torch_threads(thread_count):
            sddlib_times.append(common.seconds(train.train_level, copy.deepcopy(dense),
                                               inputs, recipe, seed=config.seed, level=0))
        reference_times.append(common.seconds(reference_level, copy.deepcopy(dense), inputs,
                                              config, epochs))
    ours, theirs = min(sddlib_times) / epochs, min(reference_times) / epochs
    processes = threads.usable_cores()
    side = common.side_by_side(list(range(processes)), epochs, processes) / epochs / processes
    rows = [(f"level: sddlib train_level ({thread_count} thread), s/epoch", f"{ours:.3f}"),
            (f"level: plain DataLoader loop ({torch.get_num_threads()} threads), s/epoch",
             f"{theirs:.3f}"),
            ("level: ratio sddlib / plain", f"{ours / theirs:.2f}"),
            (f"level: {processes} runs side by side, s/epoch per run", f"{side:.3f}"),
            ("level: ratio side by side (per run) / plain", f"{side / theirs:.2f}")]
    return common.report(rows)


if __name__ == "__main__":
    print(common.machine())
    main(*(int(a) for a in sys.argv[1:]))
