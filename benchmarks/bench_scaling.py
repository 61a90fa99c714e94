"""How the cost of a level grows: with the model's width, the training-set size and sparsity.

For the README's performance notes. Each row times ``train_level`` on the default
experiment with one thing changed, as seconds per epoch relative to the default (width 32,
8000 samples, dense) measured in the same process, plus the achieved share of the
float32 matmul peak (measured here too). Sparsity is set by masking 99% of the prunable
weights at random: the masked weights are multiplied by zero, not skipped, so a sparse
level costs what a dense one does.

    python benchmarks/bench_scaling.py [EPOCHS]
"""
from __future__ import annotations

import copy
import sys

import torch

import common
from bench_flops import matmul_peak, step_flops
from sddlib import prune, train


def _timed(config, epochs: int, sparsity: float = 0.0) -> tuple[float, float]:
    """Seconds per epoch (best of two) and training FLOPs per epoch of ``config``'s level 0."""
    inputs, input_shape, num_classes = common.load_inputs(config)
    dense = common.new_model(config, input_shape, num_classes)
    if sparsity:
        masks = prune.prune_masks(prune.random_scores(dense, seed=0), prune.get_masks(dense),
                                  sparsity, "global")
        prune.set_masks(dense, masks)
        prune.apply_masks(dense)
    flops = step_flops(copy.deepcopy(dense), inputs, config.batch_size) \
        / config.batch_size * inputs.num_train
    train.train_level(copy.deepcopy(dense), inputs, common.recipe(config, 1), seed=0, level=0)
    seconds = min(common.seconds(train.train_level, copy.deepcopy(dense), inputs,
                                 common.recipe(config, epochs), seed=config.seed, level=0)
                  for _ in range(2)) / epochs
    return seconds, flops


def main(epochs: int = 2) -> list[tuple[str, str]]:
    peak = matmul_peak()
    base_seconds, _ = _timed(common.default_config(), epochs)
    cases = [("width 16", dict(width=16)), ("width 64", dict(width=64)),
             ("width 128", dict(width=128)), ("train size 2000", dict(train_size=2000)),
             ("train size 4000", dict(train_size=4000))]
    rows = [("scaling: default level, s/epoch", f"{base_seconds:.3f}")]
    for label, changes in cases:
        seconds, flops = _timed(common.default_config(**changes), epochs)
        rows.append((f"scaling: {label}, time / default",
                     f"{seconds / base_seconds:.2f} ({flops / seconds / peak:.1%} of peak)"))
    seconds, _ = _timed(common.default_config(), epochs, sparsity=0.99)
    rows.append(("scaling: 99% of weights masked, time / dense", f"{seconds / base_seconds:.2f}"))
    return common.report(rows)


if __name__ == "__main__":
    print(common.machine())
    main(*(int(a) for a in sys.argv[1:]))
