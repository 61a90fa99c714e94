"""ResNet-18 on CIFAR-shaped data on one GPU: sddlib's fast path against the plain loop.

The plain loop is what a PyTorch user writes: a ``Dataset`` of uint8 HWC images (as
torchvision's ``CIFAR10`` holds them) with torchvision transforms (``RandomCrop(32,
padding=4)``, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``), a ``DataLoader(
batch_size=128, shuffle=True, num_workers=4, pin_memory=True)``, ``.cuda(non_blocking=True)``
per batch, float32, SGD (momentum 0.9, lr 0.1, weight decay 1e-4) and the masks
multiplied into the weights after each step. sddlib runs ``train.train_level`` with the
fast path (:mod:`sddlib.engine.fast`: data resident on the GPU as uint8, crop and flip on the
GPU, bf16 autocast, ``torch.compile``, channels_last) and, to show where the gain comes
from, with the plain settings (float32, eager). Same model (``CifarResNet("resnet18")``,
width 64, 10 classes, dense masks), same data, same GPU, one process.

The data are CIFAR-10's 50,000 training images when ``data/datasets/cifar-10-batches-py``
holds them, else 50,000 generated 32x32x3 uint8 images with seeded labels (speed does
not depend on the pixels). Each timing runs ``--steps`` optimiser steps (default: one
whole epoch, 391 steps) and is converted to epochs per second; the methods alternate
``--repeats`` times and each keeps its best. The compilation (and cuDNN's first calls)
happen in an untimed warm-up, reported as compile seconds; the timed runs must not
recompile (reported). One short run under ``torch.cuda.set_sync_debug_mode("warn")``
counts the host synchronisations of the fast path's step loop (expected: 0).

The goal (issue 6): the fast path at least 5x the plain loop's epochs per second on an
H100. Written without a GPU at hand: the CPU mode below checks the script's logic only.

    python benchmarks/bench_gpu.py                 # on a CUDA machine, about 3-5 minutes
    python benchmarks/bench_gpu.py --steps 100 --repeats 3
    python benchmarks/bench_gpu.py --device cpu --tiny   # 512 images, width 8, a few steps
"""
from __future__ import annotations

import argparse
import copy
import math
import time
import warnings
from types import SimpleNamespace

import common
import numpy as np
import torch
from torch.nn import functional as F

from sddlib.data import datasets as data
from sddlib.engine import fast, train
from sddlib.models.architectures import CifarResNet
from sddlib.pruning import prune

BATCH = 128
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 1e-4
CURVE_EPOCHS = 30 * 160  # a 30-level CIFAR-10 curve at the paper's 160 epochs a level


def cifar_like(tiny: bool):
    """CIFAR-10's training set if present (not in tiny mode), else generated images."""
    if not tiny:
        try:
            bundle = data.load("cifar10", common.DATA_DIR)
            return bundle.x_train, bundle.y_train, bundle.mean, bundle.std, "CIFAR-10"
        except FileNotFoundError:
            pass
    n = 512 if tiny else 50_000
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=generator, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=generator)
    return x, y, data.IMAGENET_MEAN, data.IMAGENET_STD, f"{n} generated 32x32x3 images"


def inputs_for(x, y, mean, std, device) -> train.Inputs:
    bundle = SimpleNamespace(is_image=True, x_train=x, y_train=y, y_train_clean=y,
                             corrupted=torch.zeros(len(y), dtype=torch.bool),
                             x_test=x[:BATCH], y_test=y[:BATCH], mean=mean, std=std)
    return train.Inputs.from_bundle(bundle, device)


class HWCImages(torch.utils.data.Dataset):
    """uint8 HWC arrays and labels, read as torchvision's CIFAR10 reads its own."""
    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def plain_loader(x, y, mean, std, device, workers: int):
    from torchvision import transforms

    transform = transforms.Compose([transforms.RandomCrop(32, padding=4),
                                    transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                                    transforms.Normalize(mean, std)])
    dataset = HWCImages(x.permute(0, 2, 3, 1).contiguous().numpy(), y.numpy(), transform)
    return torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True,
                                       num_workers=workers, pin_memory=device.type == "cuda")


def plain_run(model, loader, device, steps: int) -> None:
    """``steps`` steps of the plain loop (new epochs of the loader as needed)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM,
                                weight_decay=WEIGHT_DECAY)
    weights, masks = prune.masked_pairs(model)
    model.train()
    done = 0
    while done < steps:
        for images, labels in loader:
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            optimizer.zero_grad()
            F.cross_entropy(model(images), labels).backward()
            optimizer.step()
            with torch.no_grad():
                for weight, mask in zip(weights, masks):
                    weight.mul_(mask)
            done += 1
            if done == steps:
                break


def sddlib_run(model, inputs, speed) -> None:
    """One epoch of ``train_level`` over ``inputs`` (a :func:`subset` to time fewer steps)."""
    recipe = train.Recipe(1, BATCH, "sgd", LR, MOMENTUM, WEIGHT_DECAY, "constant", [], 0.1,
                          augment=True)
    train.train_level(model, inputs, recipe, seed=0, level=0, speed=speed)


def subset(inputs: train.Inputs, n: int) -> train.Inputs:
    """The first ``n`` training samples: an epoch of ``ceil(n / 128)`` steps."""
    if n >= inputs.num_train:
        return inputs
    return train.Inputs(inputs.x_train[:n], inputs.y_train[:n], inputs.y_train_clean[:n],
                        inputs.corrupted[:n], inputs.x_test, inputs.y_test, True,
                        inputs.mean, inputs.std)


def timed(device, function, *args) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    function(*args)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def count_host_syncs(model, inputs, speed) -> int:
    """Synchronising CUDA calls torch reports in an epoch of the fast path over ``inputs``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            sddlib_run(model, inputs, speed)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message).lower() for w in caught)


def main(quick_epochs: int | None = None, *, device: str = "cuda", tiny: bool = False,
         steps: int | None = None, repeats: int = 2, workers: int = 4) -> list:
    """The rows for ``run_all``; ``quick_epochs`` (``run_all --quick``) times 50 steps."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        return common.report([("gpu: fast path vs plain loop", "skipped: no CUDA")])
    x, y, mean, std, source = cifar_like(tiny)
    per_epoch = math.ceil(len(y) / BATCH)
    if steps is None:
        steps = 3 if tiny else (50 if quick_epochs else per_epoch)
    steps = min(steps, per_epoch)
    width = 8 if tiny else 64
    torch.manual_seed(0)
    dense = CifarResNet("resnet18", 3, width, 10)
    prune.attach_masks(dense, True)
    dense = dense.to(device)
    inputs = inputs_for(x, y, mean, std, device)
    loader = plain_loader(x, y, mean, std, device, workers)
    fast_speed = fast.Speed("bf16", compile=True, channels_last=True)
    plain_speed = fast.Speed()
    from torch._dynamo.utils import counters

    # warm-up, untimed: compilation (a full batch and the epoch's short last batch, as a
    # whole epoch has them), cuDNN and the loader's first workers
    warm = subset(inputs, 2 * BATCH + (len(y) % BATCH or BATCH))  # 3 steps, the last short
    frames = counters["frames"]["ok"]
    first = timed(device, sddlib_run, copy.deepcopy(dense), warm, fast_speed)
    graphs = counters["frames"]["ok"] - frames
    compile_seconds = first - min(timed(device, sddlib_run, copy.deepcopy(dense), warm,
                                        fast_speed) for _ in range(2))
    sddlib_run(copy.deepcopy(dense), warm, plain_speed)
    plain_run(copy.deepcopy(dense), loader, device, 3)
    timed_inputs = subset(inputs, steps * BATCH)

    times = {"plain": [], "fast": [], "fp32": []}
    frames = counters["frames"]["ok"]
    for _ in range(repeats):  # alternate, keep each one's best
        times["plain"].append(timed(device, plain_run, copy.deepcopy(dense), loader, device,
                                    steps))
        times["fast"].append(timed(device, sddlib_run, copy.deepcopy(dense), timed_inputs,
                                   fast_speed))
        times["fp32"].append(timed(device, sddlib_run, copy.deepcopy(dense), timed_inputs,
                                   plain_speed))
    recompiles = counters["frames"]["ok"] - frames
    rate = {name: steps / per_epoch / min(seconds) for name, seconds in times.items()}
    syncs = (count_host_syncs(copy.deepcopy(dense), subset(inputs, 20 * BATCH), fast_speed)
             if device.type == "cuda" else "n/a (CPU)")

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    rows = [
        ("gpu: device, torch", f"{name}, torch {torch.__version__}"),
        ("gpu: data, model", f"{source}, ResNet-18 width {width}, batch {BATCH}, "
                             f"{steps} of {per_epoch} steps an epoch timed, best of {repeats}"),
        ("gpu: plain DataLoader loop (fp32), epochs/s", f"{rate['plain']:.3f}"),
        ("gpu: sddlib fast path (bf16, compile, channels_last), epochs/s", f"{rate['fast']:.3f}"),
        ("gpu: sddlib plain settings (fp32, eager), epochs/s", f"{rate['fp32']:.3f}"),
        ("gpu: ratio fast path / plain loop (goal on an H100: >= 5)",
         f"{rate['fast'] / rate['plain']:.2f}"),
        ("gpu: ratio sddlib fp32 eager / plain loop", f"{rate['fp32'] / rate['plain']:.2f}"),
        ("gpu: compile seconds (warm-up, once per process)",
         f"{compile_seconds:.1f} ({graphs} graphs)"),
        ("gpu: recompilations while timed (expected 0)", f"{recompiles}"),
        ("gpu: host syncs in the fast step loop (expected 0)", f"{syncs}"),
        ("gpu: GPU-hours for a 30-level curve at 160 epochs/level, fast path",
         f"{CURVE_EPOCHS / rate['fast'] / 3600:.1f}"),
        ("gpu: GPU-hours for the same curve, plain loop",
         f"{CURVE_EPOCHS / rate['plain'] / 3600:.1f}"),
    ]
    return common.report(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true",
                        help="512 generated images, width 8, 3 steps: checks the logic")
    parser.add_argument("--steps", type=int, default=None,
                        help="optimiser steps per timing (default: one epoch)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers")
    arguments = parser.parse_args()
    print(common.machine())
    main(device=arguments.device, tiny=arguments.tiny, steps=arguments.steps,
         repeats=arguments.repeats, workers=arguments.workers)
