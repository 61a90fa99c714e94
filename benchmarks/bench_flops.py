"""Achieved training FLOP/s of the default model as a fraction of this machine's matmul peak.

The FLOPs of one training step (forward and backward of a full batch) are counted with
``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convolutions; the optimiser's
elementwise work is not counted), scaled to an epoch (FLOPs are linear in the batch) and
divided by the seconds ``train_level`` takes per epoch. The peak is the best of several
large float32 matmuls in the same process, with all its torch threads: the machine's.
Measured for one run alone (with the one torch thread sddlib gives it, and with torch's
default threads) and for one run per core side by side, as ``run_many`` trains several
runs (``common.side_by_side``): the whole machine's throughput.

    python benchmarks/bench_flops.py [EPOCHS]
"""
from __future__ import annotations

import copy
import sys
import time

import common
import torch
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from sddlib.engine import threads, train


def step_flops(model: torch.nn.Module, inputs: train.Inputs, batch_size: int) -> int:
    x = inputs.prepare(inputs.x_train[:batch_size])
    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(model(x), inputs.y_train[:batch_size]).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def matmul_peak(size: int = 2048, repeats: int = 8) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * size ** 3 / best


def main(epochs: int = 3) -> list[tuple[str, str]]:
    config = common.default_config()
    inputs, input_shape, num_classes = common.load_inputs(config)
    dense = common.new_model(config, input_shape, num_classes)
    flops_per_sample = step_flops(copy.deepcopy(dense), inputs, config.batch_size) \
        / config.batch_size
    epoch_flops = flops_per_sample * inputs.num_train

    def per_epoch() -> float:  # the best of two: a busy moment is not the model
        train.train_level(copy.deepcopy(dense), inputs, common.recipe(config, 1), seed=0,
                          level=0)
        return min(common.seconds(train.train_level, copy.deepcopy(dense), inputs,
                                  common.recipe(config, epochs), seed=config.seed, level=0)
                   for _ in range(2)) / epochs

    default_threads = torch.get_num_threads()
    default_epoch = per_epoch()
    with threads.torch_threads(threads.run_threads(config, "cpu")):
        thread_count = torch.get_num_threads()
        own_epoch = per_epoch()
    processes = threads.usable_cores()
    side = common.side_by_side(list(range(processes)), epochs, processes)
    peak = matmul_peak()
    rows = [("flops: training FLOPs per sample (fwd+bwd)", f"{flops_per_sample / 1e6:.2f} M"),
            ("flops: float32 matmul peak FLOP/s", f"{peak / 1e9:.1f} G"),
            (f"flops: one run ({thread_count} thread) / peak",
             f"{epoch_flops / own_epoch / peak:.3f}"),
            (f"flops: one run ({default_threads} threads) / peak",
             f"{epoch_flops / default_epoch / peak:.3f}"),
            (f"flops: {processes} runs side by side / peak",
             f"{processes * epochs * epoch_flops / side / peak:.3f}")]
    return common.report(rows)


if __name__ == "__main__":
    print(common.machine())
    main(*(int(a) for a in sys.argv[1:]))
