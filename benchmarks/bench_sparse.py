"""What a pruned level costs against its density: the sparse path against the dense-masked one.

The headline recipe (LeNet-300-100 on mnist-5k: 4,000 real digits, batch 128, SGD 0.1),
on the torch threads sddlib gives such a run (one):

1. **Seconds per level against density.** The masks of global magnitude pruning of the
   initial weights at 20% per level (levels 0 to 30, as a curve prunes), each level
   trained for EPOCHS epochs on the dense-masked path (``sparse=off``, every weight
   multiplied, masked ones by zero) and on the sparse path (``sparse=auto``: linear
   layers of density <= ``sparse.PACK_BELOW`` packed, :mod:`sddlib.pruning.sparse`), the two
   alternating, the best of two each. The rows go to ``benchmarks/results/sparse_levels.csv``,
   which the reference page plots; the sum over the 31 levels is a curve's training cost
   with these masks.
2. **A whole curve.** The recipe's real curve (train, prune 20%, rewind, retrain), 30
   levels of CURVE_EPOCHS epochs, on each path, the two side by side in two processes
   (so a busy machine slows both alike), each in its own temporary run store (the path
   is not part of a run's identity, so one store would reuse the other's run): the ratio
   of the wall times, and the largest difference between the two curves' test
   accuracies at one level (float rounding, amplified by training).
3. **bf16 and torch.compile on this CPU.** One dense epoch of LeNet-300-100 and of the
   default 1-D CNN in float32, under bf16 autocast (``precision=bf16``, which is part of a
   run's identity) and with the compiled step (``compile=on``, off by default on the CPU;
   its compilation is done before the clock starts).

    python benchmarks/bench_sparse.py [EPOCHS] [CURVE_EPOCHS]
"""
from __future__ import annotations

import copy
import csv
import sys
import tempfile
import time
from pathlib import Path

import common
import torch

from sddlib.engine import fast, threads, train
from sddlib.engine.experiment import run_experiment
from sddlib.pruning import prune, sparse
from sddlib.storage.store import RunStore

LEVELS_CSV = Path(__file__).resolve().parent / "results" / "sparse_levels.csv"
LEVELS = 30
RATE = 0.2


def lenet_config(**changes):
    return common.default_config(**common.LENET, levels=LEVELS, **changes)


def magnitude_masks(model: torch.nn.Module, density: float) -> dict[str, torch.Tensor]:
    """Global magnitude masks of ``model``'s weights keeping ``density`` of them."""
    scores = prune.magnitude_scores(model)
    every = torch.cat([s.flatten() for s in scores.values()])
    pruned = int(round((1 - density) * every.numel()))
    if pruned == 0:
        return {name: torch.ones_like(s) for name, s in scores.items()}
    threshold = every.kthvalue(pruned).values
    return {name: (s > threshold).float() for name, s in scores.items()}


def per_level(epochs: int) -> list[dict]:
    config = lenet_config()
    inputs, input_shape, num_classes = common.load_inputs(config)
    dense = common.new_model(config, input_shape, num_classes)
    recipe = common.recipe(config, epochs)
    paths = {"dense-masked": fast.Speed(), "sparse": fast.Speed(sparse=True)}
    train.train_level(copy.deepcopy(dense), inputs, common.recipe(config, 1), seed=0,
                      level=0)  # warm-up
    rows = []
    for level in range(LEVELS + 1):
        model = copy.deepcopy(dense)
        prune.set_masks(model, magnitude_masks(model, (1 - RATE) ** level))
        masks = prune.get_masks(model)
        best = {}
        for _ in range(2):
            for path, speed in paths.items():
                seconds = common.seconds(train.train_level, copy.deepcopy(model), inputs,
                                         recipe, seed=0, level=1, speed=speed) / epochs
                best[path] = min(best.get(path, float("inf")), seconds)
        packed = sparse.pack(copy.deepcopy(model))
        for path, seconds in best.items():
            rows.append({"level": level, "density": 1 - prune.sparsity(masks),
                         "path": path, "seconds_per_epoch": seconds,
                         "packed_layers": " ".join(packed.layers) if packed and
                         path == "sparse" else ""})
    return rows


def whole_curve(epochs: int) -> tuple[float, float, float]:
    """Wall seconds of a real curve on each path, and the largest test-accuracy gap.

    The two curves train at the same time, each in its own process on one thread (as the
    book trains two runs on two cores), so whatever else loads the machine loads both."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [context.Process(target=_curve_worker, args=(path, epochs, results))
               for path in ("off", "auto")]
    for worker in workers:
        worker.start()
    found = dict(results.get() for _ in workers)
    for worker in workers:
        worker.join()
    (off, off_acc), (auto, auto_acc) = found["off"], found["auto"]
    gap = max(abs(a - b) for a, b in zip(off_acc, auto_acc))
    return off, auto, gap


def _curve_worker(path: str, epochs: int, results) -> None:
    with tempfile.TemporaryDirectory() as folder:
        config = lenet_config(epochs=epochs, sparse=path)
        with threads.torch_threads(threads.run_threads(config, "cpu")):
            started = time.perf_counter()
            run = run_experiment(config, RunStore(folder), progress=False,
                                 data_dir=common.DATA_DIR, download=True)
            seconds = time.perf_counter() - started
        results.put((path, (seconds, run.levels().test_acc.tolist())))


def bf16_ratios(epochs: int) -> list[tuple[str, str]]:
    rows = []
    for label, config in (("LeNet-300-100", lenet_config()),
                          ("default 1-D CNN", common.default_config())):
        inputs, input_shape, num_classes = common.load_inputs(config)
        dense = common.new_model(config, input_shape, num_classes)
        recipe = common.recipe(config, epochs)
        ways = {"fp32": fast.Speed(precision="fp32"), "bf16": fast.Speed(precision="bf16"),
                "compiled": fast.Speed(precision="fp32", compile=True)}
        # the compiled step's one-off compilation (seconds) is paid before the clock starts
        train.train_level(copy.deepcopy(dense), inputs, common.recipe(config, 1), seed=0,
                          level=0, speed=ways["compiled"])
        best = {}
        for _ in range(2):
            for way, speed in ways.items():
                best[way] = min(best.get(way, float("inf")), common.seconds(
                    train.train_level, copy.deepcopy(dense), inputs, recipe, seed=0,
                    level=0, speed=speed))
        rows.append((f"sparse: {label}, bf16 autocast / fp32, s per dense epoch",
                     f"{best['bf16'] / best['fp32']:.2f}"))
        rows.append((f"sparse: {label}, torch.compile / eager (fp32), s per dense epoch",
                     f"{best['compiled'] / best['fp32']:.2f}"))
    return rows


def main(epochs: int = 2, curve_epochs: int = 4) -> list[tuple[str, str]]:
    thread_count = threads.run_threads(lenet_config(), "cpu")
    with threads.torch_threads(thread_count):
        levels = per_level(epochs)
        LEVELS_CSV.parent.mkdir(parents=True, exist_ok=True)
        with LEVELS_CSV.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(levels[0]))
            writer.writeheader()
            writer.writerows(levels)
        by = {(r["level"], r["path"]): r for r in levels}
        total = {path: sum(r["seconds_per_epoch"] for r in levels if r["path"] == path)
                 for path in ("dense-masked", "sparse")}
        off, auto, gap = whole_curve(curve_epochs)
        rows = []
        for level in (0, 10, 20, 30):
            dense, fast_ = by[(level, "dense-masked")], by[(level, "sparse")]
            rows.append((f"sparse: LeNet level {level} ({100 * dense['density']:.1f}% of "
                         f"weights), sparse / dense-masked s per epoch",
                         f"{fast_['seconds_per_epoch'] / dense['seconds_per_epoch']:.2f}"))
        rows += [(f"sparse: LeNet levels 0-{LEVELS} with magnitude masks of the init, "
                  "sparse / dense-masked", f"{total['sparse'] / total['dense-masked']:.2f}"),
                 (f"sparse: LeNet real curve ({LEVELS} levels x {curve_epochs} epochs), "
                  "sparse / dense-masked wall time", f"{auto / off:.2f}"),
                 ("sparse: LeNet real curve, largest test-accuracy gap between the paths",
                  f"{gap:.4f}")]
        rows += bf16_ratios(epochs)
    return common.report(rows)


if __name__ == "__main__":
    print(common.machine())
    main(*(int(a) for a in sys.argv[1:]))
