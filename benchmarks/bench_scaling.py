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

import common
from bench_flops import matmul_peak, step_flops

from sddlib.engine import train
from sddlib.pruning import prune


def _setup(config, sparsity: float = 0.0):
    """``config``'s data and level-0 model (``sparsity`` of its weights masked at random)
    and the training FLOPs of one epoch."""
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
    return config, inputs, dense, flops


def _seconds(case, epochs: int) -> float:
    config, inputs, dense, _ = case
    return common.seconds(train.train_level, copy.deepcopy(dense), inputs,
                          common.recipe(config, epochs), seed=config.seed, level=0) / epochs


def main(epochs: int = 2, repeats: int = 3) -> list[tuple[str, str]]:
    """Each case is timed alternately with the default, ``repeats`` times, and the ratio
    is of the two bests: a busy moment then slows both sides, not the ratio."""
    peak = matmul_peak()
    base = _setup(common.default_config())
    cases = [("width 16", _setup(common.default_config(width=16))),
             ("width 64", _setup(common.default_config(width=64))),
             ("width 128", _setup(common.default_config(width=128))),
             ("train size 2000", _setup(common.default_config(train_size=2000))),
             ("train size 4000", _setup(common.default_config(train_size=4000))),
             ("99% of weights masked", _setup(common.default_config(), sparsity=0.99))]
    base_times, rows = [], []
    for label, case in cases:
        mine, theirs = [], []
        for _ in range(repeats):
            theirs.append(_seconds(base, epochs))
            mine.append(_seconds(case, epochs))
        base_times += theirs
        rows.append((f"scaling: {label}, time / default",
                     f"{min(mine) / min(theirs):.2f} ({case[3] / min(mine) / peak:.1%} of peak)"))
    rows.insert(0, ("scaling: default level, s/epoch",
                    f"{min(base_times):.3f} ({base[3] / min(base_times) / peak:.1%} of peak)"))
    return common.report(rows)


if __name__ == "__main__":
    print(common.machine())
    main(*(int(a) for a in sys.argv[1:]))
