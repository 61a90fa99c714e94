"""Training one level: the loop, the optimiser and schedule, augmentation and evaluation.

The loop is short on purpose. Everything a level needs beyond "take a batch, step the
optimiser, keep pruned weights at zero" plugs in as a callback (checkpoints, the rewind
point, progress bars).

Reproducibility and resumption rest on one rule: every source of randomness inside a
level (the order of the training set, crop offsets and flips) is drawn from a generator
seeded by ``(seed, level, epoch)``, never from a global stream. So a level resumed from
the checkpoint of any finished epoch replays exactly the batches an uninterrupted run
would have seen, and on the same machine ends with the same weights.

The data stay on the training device as whole tensors (uint8 for image sets) and batches
are taken by indexing, which avoids a ``DataLoader``'s per-sample Python work; the same
per-step function is what a stacked ensemble will vmap over (several runs sharing a model
shape and schedule).

On a GPU, ``speed`` (:mod:`fast`) adds bf16 autocast, ``torch.compile`` (compiled once per
process, reused by every level) and channels_last; the loop itself is the same and never
synchronises with the host within an epoch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Protocol

import torch
from torch import nn
from torch.nn import functional as F

from sddlib.base.seeds import derive_seed
from sddlib.config.fields import ConfigError
from sddlib.engine import fast
from sddlib.pruning import prune, sparse


def resolve_device(name: str) -> torch.device:
    """The torch device a config's ``device`` names (``auto``: cuda when torch sees one)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def training_device(name: str) -> torch.device:
    """:func:`resolve_device`, checked to exist on this machine: where a run is about to
    train, before its folder is made. A CUDA device torch cannot see here is bad input (a
    :class:`ConfigError` naming ``device`` and what this machine allows), not torch's
    driver error after the run was written. Only where a run trains: the driver of a Ray
    cluster may have no GPU that its workers have."""
    device = resolve_device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if (device.index or 0) >= count:
            here = "auto, cpu" + (f", cuda, cuda:0 to cuda:{count - 1}" if count else "")
            raise ConfigError(f"device: {name!r} is not on this machine (torch sees "
                              f"{count} CUDA device{'' if count == 1 else 's'}); allowed "
                              f"here: {here}")
    return device


@dataclass
class Inputs:
    """Training and test tensors on the device, and how to turn them into model inputs."""
    x_train: torch.Tensor
    y_train: torch.Tensor
    y_train_clean: torch.Tensor
    corrupted: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    is_image: bool
    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def from_bundle(cls, bundle, device: torch.device) -> "Inputs":
        if bundle.is_image:
            shape = (1, -1, 1, 1)
            mean = torch.tensor(bundle.mean, dtype=torch.float32).view(shape)
            std = torch.tensor(bundle.std, dtype=torch.float32).view(shape)
        else:
            # 1-D signals are standardised with the training set's overall mean and scale.
            mean = bundle.x_train.float().mean().reshape(1)
            std = bundle.x_train.float().std().reshape(1)
        return cls(bundle.x_train.to(device), bundle.y_train.to(device),
                   bundle.y_train_clean.to(device), bundle.corrupted.to(device),
                   bundle.x_test.to(device), bundle.y_test.to(device), bundle.is_image,
                   mean.to(device), std.to(device))

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_image:
            x = x.float().div_(255.0)
        return (x - self.mean) / self.std

    @property
    def num_train(self) -> int:
        return self.y_train.shape[0]


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, padding: int = 4):
    """Per-sample random crop (zero padding) and horizontal flip of a uint8 NCHW batch.

    Written here rather than with torchvision transforms because those draw one crop per
    call: per-sample crops of a whole batch on the device need batched indexing, and an
    explicit generator keeps the draw tied to ``(seed, level, epoch)``. Draws on the CPU
    and copies the draw to the device; :func:`train_level` draws a whole epoch at once
    instead (:func:`draw_crop_flip`), which gives the same crops.
    """
    offsets, flips = draw_crop_flip(generator, [images.shape[0]], padding)
    return crop_flip(images, offsets.to(images.device), flips.to(images.device), padding)


def draw_crop_flip(generator: torch.Generator, sizes: list[int], padding: int = 4):
    """Crop offsets ``(2, sum(sizes))`` and flips ``(sum(sizes),)`` for batches of ``sizes``.

    Drawn batch by batch, in the order :func:`random_crop_flip` draws one batch, so the
    draws of a whole epoch made at its start equal the draws made step by step.
    """
    offsets, flips = [], []
    for size in sizes:
        offsets.append(torch.randint(0, 2 * padding + 1, (2, size), generator=generator))
        flips.append(torch.rand(size, generator=generator) < 0.5)
    return torch.cat(offsets, 1), torch.cat(flips)


def crop_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor,
              padding: int = 4) -> torch.Tensor:
    """Crop and flip a uint8 NCHW batch with given offsets ``(2, N)`` and flips ``(N,)``.

    Everything is on the images' device: no host synchronisation.
    """
    n, _, h, w = images.shape
    padded = F.pad(images, (padding,) * 4)
    rows = (offsets[0].view(n, 1) + torch.arange(h, device=images.device)).view(n, 1, h, 1)
    cols = torch.arange(w, device=images.device).view(1, w)
    cols = torch.where(flips.view(n, 1), w - 1 - cols, cols) + offsets[1].view(n, 1)
    cols = cols.view(n, 1, 1, w)
    batch = torch.arange(n, device=images.device).view(n, 1, 1, 1)
    channel = torch.arange(images.shape[1], device=images.device).view(1, -1, 1, 1)
    return padded[batch, channel, rows, cols]


# ---------------------------------------------------------------------------- schedule
@dataclass
class Recipe:
    """What one level's training does; built from the config by the experiment."""
    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    schedule: str
    milestones: list
    gamma: float
    augment: bool
    start_iteration: int = 0  # > 0: a lottery level rewound to iteration k of the dense run

    def steps_per_epoch(self, num_train: int) -> int:
        return math.ceil(num_train / self.batch_size)

    def lr_factor(self, iteration: int, steps_per_epoch: int) -> float:
        epoch = iteration / steps_per_epoch
        if self.schedule == "constant":
            return 1.0
        if self.schedule == "multistep":
            return self.gamma ** sum(epoch >= m for m in self.milestones)
        if self.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(epoch / self.epochs, 1.0)))
        raise ValueError(f"schedule: unknown {self.schedule!r}")


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """SGD or Adam over the trainable parameters, as one fused kernel per step.

    ``fused=True`` (one kernel for every parameter's update, on the CPU and on CUDA) is
    the same update as torch's default implementation, up to float rounding; for a small
    model the step is mostly per-tensor dispatch, which one kernel saves (part of what
    ``benchmarks/bench_level.py`` measures against a plain loop with torch's default
    optimiser). Devices without a fused kernel fall back to foreach.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    speed = {"fused": True} if _fused_supported(params) else {"foreach": True}
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay, **speed)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay, **speed)
    raise ValueError(f"optimizer: unknown {recipe.optimizer!r}")


def _fused_supported(params: list[torch.Tensor]) -> bool:
    """torch 2.14 has fused SGD and Adam kernels for float tensors on the CPU and CUDA."""
    return all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)


class Callback(Protocol):
    def __call__(self, event: str, state: "LevelState") -> None: ...


@dataclass
class LevelState:
    """What a callback sees: the live objects and where training stands."""
    model: nn.Module
    optimizer: torch.optim.Optimizer
    iteration: int      # optimiser steps done since the start of the schedule
    epoch: int          # epochs finished
    total_iterations: int
    packing: Optional[sparse.Packing] = None  # the linear layers packed for the level


def train_level(model: nn.Module, inputs: Inputs, recipe: Recipe, *, seed: int, level: int,
                callbacks: tuple[Callable, ...] = (),
                resume: Optional[dict] = None, speed: Optional[fast.Speed] = None,
                distill=None) -> LevelState:
    """Train ``model`` through one level's schedule, keeping masked weights at zero.

    ``resume`` is a checkpoint written at an epoch end (see ``checkpoint_payload``).
    Callbacks get ``("iteration", state)`` after every step and ``("epoch", state)`` after
    every epoch. ``speed`` (:class:`fast.Speed`) asks for bf16 autocast, ``torch.compile``
    and channels_last (the GPU fast path, see :mod:`fast`); ``None`` is the plain path
    (float32, eager), whatever the device. Either way the step loop never waits for the
    device: the data order and augmentation of an epoch are drawn at its start and moved
    to the device once; a step only slices them. ``distill`` (a :class:`distill.Distiller`)
    replaces the cross-entropy with its ``loss(model, x, y, index)``, ``index`` being the
    batch's positions in the training set.
    """
    speed = speed or fast.Speed()
    fast.prepare_model(model, speed, inputs.is_image)
    if resume is not None:
        model.load_state_dict(resume["model"])
    packing = sparse.pack(model, speed.sparse)
    try:
        optimizer = make_optimizer(model, recipe)
        iteration = recipe.start_iteration
        if resume is not None:
            optimizer.load_state_dict(resume["optimizer"] if packing is None else
                                      packing.optimizer_state(optimizer, resume["optimizer"]))
            iteration = resume["iteration"]
        return _train_steps(model, inputs, recipe, optimizer, iteration, seed, level,
                            callbacks, speed, distill, packing)
    finally:
        if packing is not None:
            packing.unpack()


def _train_steps(model, inputs, recipe, optimizer, iteration, seed, level, callbacks,
                 speed, distill, packing) -> LevelState:
    """The step loop of :func:`train_level`, from ``iteration`` to the level's end."""
    device = inputs.x_train.device
    loss_of = fast.model_loss(speed)
    steps = recipe.steps_per_epoch(inputs.num_train)
    total = recipe.epochs * steps
    state = LevelState(model, optimizer, iteration, iteration // steps, total, packing)
    pairs = prune.masked_pairs(model)
    size = recipe.batch_size
    prepared = _prepared_once(inputs, recipe, speed)
    model.train()
    while state.iteration < total:
        epoch = state.iteration // steps
        first = state.iteration - epoch * steps  # > 0 when rewound to mid-epoch
        generator = torch.Generator().manual_seed(derive_seed(seed, level, epoch, "order"))
        order = fast.to_device(torch.randperm(inputs.num_train, generator=generator), device)
        if recipe.augment:
            sizes = [min(size, inputs.num_train - step * size) for step in range(first, steps)]
            offsets, flips = (fast.to_device(t, device)
                              for t in draw_crop_flip(generator, sizes))
        for step in range(first, steps):
            index = order[step * size:(step + 1) * size]
            # index_select: the rows of a batch, a few times faster than x[index] on the CPU
            if prepared is not None:
                x = prepared.index_select(0, index)
            else:
                x = inputs.x_train.index_select(0, index)
                if recipe.augment:
                    drawn = slice((step - first) * size, (step - first) * size + len(index))
                    x = crop_flip(x, offsets[:, drawn], flips[drawn])
                x = inputs.prepare(fast.to_memory_format(x, speed))
            y = inputs.y_train.index_select(0, index)
            loss = loss_of(model, x, y) if distill is None else distill.loss(model, x, y, index)
            take_step(loss, optimizer, pairs, recipe, steps, state, callbacks)
        end_epoch(state, epoch, callbacks)
    return state


PREPARED_ONCE_BYTES = 1 << 28  # 256 MiB: the training set normalised once per level


def _prepared_once(inputs: Inputs, recipe: Recipe, speed: fast.Speed) -> Optional[torch.Tensor]:
    """The whole training set normalised once for the level, where that is the same as
    normalising each batch (no augmentation: normalising is elementwise, so the numbers
    are identical) and it is small: on the CPU, up to :data:`PREPARED_ONCE_BYTES` of
    float32. It saves a step the conversion and normalisation of its batch. On a GPU
    the set stays uint8 (a quarter of the memory) and batches are normalised there."""
    if recipe.augment or inputs.x_train.device.type != "cpu" or speed.channels_last:
        return None
    if inputs.x_train.numel() * 4 > PREPARED_ONCE_BYTES:
        return None
    return inputs.prepare(inputs.x_train)


def masked_step(optimizer: torch.optim.Optimizer,
                pairs: tuple[list[torch.Tensor], list[torch.Tensor]], lr: float) -> None:
    """One optimiser step at ``lr`` that keeps masked weights at zero.

    ``pairs``: the masked weights and their masks (:func:`prune.masked_pairs`, or the
    stacked tensors of an ensemble). Gradients are masked before the step, so momentum
    and Adam moments of pruned weights stay zero, and weights after it.
    """
    prune.mask_gradients(None, pairs)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()
    prune.apply_masks(None, pairs)


def take_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, pairs, recipe: Recipe,
              steps: int, state, callbacks) -> None:
    """Backpropagate ``loss``, take one :func:`masked_step` at the recipe's lr for
    ``state.iteration`` and tell ``callbacks``. The lr is a function of the iteration
    alone, so resuming needs no scheduler state. Gradients are set to none, not zeroed:
    backward then writes them instead of adding them to zeros (the same values; a fill
    and an add per tensor fewer, which a small model's step notices)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    masked_step(optimizer, pairs, recipe.lr * recipe.lr_factor(state.iteration, steps))
    state.iteration += 1
    for callback in callbacks:
        callback("iteration", state)


def end_epoch(state, epoch: int, callbacks) -> None:
    state.epoch = epoch + 1
    for callback in callbacks:
        callback("epoch", state)


def checkpoint_payload(state: LevelState) -> dict:
    """A mid-level checkpoint: the model, the optimiser and the iteration, in the dense
    format whether or not layers are packed for the level (:mod:`sparse`)."""
    if state.packing is None:
        model, optimizer = state.model.state_dict(), state.optimizer.state_dict()
    else:
        model, optimizer = state.packing.payload(state.optimizer)
    return {"model": model, "optimizer": optimizer, "iteration": state.iteration}


def model_state(state: LevelState) -> dict:
    """The model's ``state_dict`` in the dense format (as :func:`checkpoint_payload`)."""
    return state.model.state_dict() if state.packing is None else state.packing.state_dict()


@torch.no_grad()
def evaluate(model: nn.Module, inputs: Inputs, x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 2048, *, speed: Optional[fast.Speed] = None
             ) -> tuple[torch.Tensor, float]:
    """Per-sample correctness (bool tensor) and mean cross-entropy, in eval mode.

    ``speed`` as in :func:`train_level` (its autocast and memory format; evaluation is
    never compiled). The loss is summed on the device (in float64, as the Python sum of
    per-batch losses was) and read once, at the end.
    """
    speed = speed or fast.Speed()
    was_training = model.training
    model.eval()
    correct, loss_sum = [], torch.zeros((), dtype=torch.float64, device=x.device)
    for start in range(0, y.shape[0], batch_size):
        batch = inputs.prepare(fast.to_memory_format(x[start:start + batch_size], speed))
        target = y[start:start + batch_size]
        with speed.autocast(x.device.type):
            logits = model(batch)
            loss_sum += F.cross_entropy(logits, target, reduction="sum").double()
        correct.append(logits.argmax(1) == target)
    model.train(was_training)
    return torch.cat(correct), loss_sum.item() / max(y.shape[0], 1)
