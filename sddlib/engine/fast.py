"""The fast path: how :func:`train.train_level` runs image models on a GPU.

What it does when training on CUDA (config ``precision=auto``, ``compile=auto``):

- the whole training set sits on the GPU as uint8 (``train.Inputs``); batches are taken
  by indexing, normalised on the GPU, and cropped and flipped there
  (:func:`train.crop_flip`);
- the crop offsets and flips of a whole epoch are drawn on the CPU at the epoch start
  from the ``(seed, level, epoch)`` generator, in exactly the order the per-step draws
  used before (so stored runs and the stacked ensemble see the same augmentation), and
  moved to the device once per epoch with the data order; a step only slices them;
- label noise is applied once, on the CPU, when the data are loaded, before they move
  to the device: it costs nothing per step;
- image models and inputs are ``channels_last`` (convolutions run in NHWC, which tensor
  cores prefer);
- the forward pass and the loss run under ``torch.autocast(..., dtype=torch.bfloat16)``
  (``precision=bf16``), in training and in evaluation; the weights, gradients and the
  optimiser state stay float32, and bf16 needs no loss scaling;
- the forward pass and loss are compiled with ``torch.compile`` once per process
  (:func:`model_loss`): the compiled function takes the model as an argument, and torch
  lifts its parameters and buffers to graph inputs, so the new model every level builds
  (same class, same shapes) reuses the compiled graph instead of recompiling;
  ``dynamic=False`` gives the last, smaller batch of an epoch a second graph;
- masks are buffers (``<name>_mask``), so pruning never changes a shape and never
  triggers a recompilation;
- nothing in the step loop synchronises with the host: no ``.item()``, no tensor printed
  or branched on, no per-step host-to-device copy; the learning rate is a Python float.

What it changes: bf16 autocast changes float rounding (that is why ``precision`` is part
of a run's identity; ``compile`` and ``channels_last`` change only the order of float
operations and are not). The recipe is unchanged: the same data order, augmentation,
schedule and loss; no label smoothing, no test-time augmentation, no data filtering. A
fast run should reproduce a slow run's accuracy within seed noise; ``tests/test_fast.py``
checks a scaled-down version of that on the CPU, and ``benchmarks/bench_gpu.py`` measures
the speed-up on a GPU. **This path was written and tested on the CPU only; it has not
yet been run on a GPU** (run ``python benchmarks/bench_gpu.py`` on one).

On the CPU the defaults are the plain path (float32, eager, contiguous): bf16 without
hardware support is slower there, and compiling costs more than it saves for the small
models that run on a CPU. Both can be asked for (``precision=bf16``, ``compile=on``).
A torch fact found here (torch 2.14.1, CPU): with one torch thread, a channels_last
1x1 stride-2 convolution's backward (oneDNN) corrupts memory, eagerly and compiled;
that is one reason channels_last is GPU-only by default.

Several small runs per GPU. One CIFAR ResNet-18 at batch 128 leaves an H100 partly idle.
Models without BatchNorm (mlp, cnn1d) train several runs as one stacked ensemble
(:mod:`sddlib.engine.ensemble`, ``run_many(..., stack=True)``). Models with BatchNorm (the ResNets
and VGGs) cannot be stacked; run several processes on the one GPU instead, each with its own
configs, e.g. ``sddlib run --set seed=0 & sddlib run --set seed=1 & ...`` or several
papermill notebooks; the run store's per-run lock (``.lock``, ``flock``) keeps two
processes from computing the same run, and each process pays its compilation once
(each holds its own copy of the data, 150 MB for CIFAR as uint8, its weights,
optimiser state and one batch's activations: a small part of an H100's memory).
Starting the CUDA MPS daemon (``nvidia-cuda-mps-control -d``) lets their kernels run
concurrently instead of time-sliced.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from sddlib.config.fields import COMPILE_MODES, PRECISIONS, SPARSE_MODES  # noqa: F401 (the choices)


@dataclass(frozen=True)
class Speed:
    """How one level trains and evaluates; ``Speed()`` is the plain path (fp32, eager)."""
    precision: str = "fp32"       # resolved: "fp32" or "bf16"
    compile: bool = False
    channels_last: bool = False
    sparse: bool = False          # pack sparse linear layers for training (sddlib.pruning.sparse)

    @classmethod
    def resolve(cls, device: torch.device | str, precision: str = "auto",
                compile: str = "auto", channels_last: str | bool = "auto",
                sparse: str = "off") -> "Speed":
        """The settings for ``device``: ``auto`` means the fast path on CUDA, plain elsewhere
        (``sparse``: auto means the CSR kernels of :mod:`sparse` on the CPU in fp32, eager,
        and never on CUDA, whose dense kernels beat cuSPARSE at a level's densities)."""
        device = torch.device(device)
        cuda = device.type == "cuda"
        if precision not in PRECISIONS:
            raise ValueError(f"precision: {precision!r}; allowed: {', '.join(PRECISIONS)}")
        if compile not in COMPILE_MODES:
            raise ValueError(f"compile: {compile!r}; allowed: {', '.join(COMPILE_MODES)}")
        if precision == "auto":
            precision = "bf16" if cuda and _cuda_bf16(device) else "fp32"
        if compile == "auto":
            compile = "on" if cuda and _has_triton() else "off"
        if channels_last == "auto":
            channels_last = cuda
        if sparse not in SPARSE_MODES:
            raise ValueError(f"sparse: {sparse!r}; allowed: {', '.join(SPARSE_MODES)}")
        plain = precision == "fp32" and compile != "on"
        packed = plain and (sparse == "on" or (sparse == "auto" and device.type == "cpu"))
        return cls(precision, compile == "on", bool(channels_last), packed)

    @property
    def autocast_dtype(self):
        return torch.bfloat16 if self.precision == "bf16" else None

    def autocast(self, device_type: str):
        """The autocast context of the forward pass and loss (a no-op for fp32)."""
        if self.precision == "bf16":
            return torch.autocast(device_type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def meta(self) -> dict:
        """What a run's ``meta.json`` records of these settings."""
        return {"precision": self.precision, "compile": "on" if self.compile else "off",
                "channels_last": self.channels_last, "sparse": self.sparse}


def speed_for(config, device: torch.device | str) -> Speed:
    """The :class:`Speed` of an ``ExperimentConfig`` (its ``precision``, ``compile`` and
    ``sparse``)."""
    return Speed.resolve(device, config.precision, config.compile, sparse=config.sparse)


def prepare_model(model: nn.Module, speed: Speed, image: bool) -> nn.Module:
    """Convert an image model to channels_last when ``speed`` says so (in place)."""
    if speed.channels_last and image:
        model.to(memory_format=torch.channels_last)
    return model


def to_memory_format(x: torch.Tensor, speed: Speed) -> torch.Tensor:
    if speed.channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _loss_fp32(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


def _loss_bf16(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.autocast(x.device.type, dtype=torch.bfloat16):
        return F.cross_entropy(model(x), y)


_EAGER = {"fp32": _loss_fp32, "bf16": _loss_bf16}
_COMPILED: dict[str, Callable] = {}


def model_loss(speed: Speed) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    """``loss(model, x, y)``: the mean cross-entropy of ``model`` on a batch, as ``speed`` says.

    Compiled functions are made once per process and precision, and kept. The model is an
    argument whose parameters and buffers Dynamo lifts to graph inputs, so a new model of
    the same class and shapes (every level builds one) reuses the graphs compiled for the
    first level: checked with Dynamo's frame counter in ``tests/test_fast.py`` (torch
    2.14.1). A new class, width or batch shape compiles another graph; Dynamo keeps up to
    ``torch._dynamo.config.recompile_limit`` (8) per function and runs eagerly beyond
    that, so one process should train one or a few model shapes.
    """
    if not speed.compile:
        return _EAGER[speed.precision]
    if speed.precision not in _COMPILED:
        _COMPILED[speed.precision] = torch.compile(_EAGER[speed.precision], dynamic=False)
    return _COMPILED[speed.precision]


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a CPU tensor to ``device``; to a GPU from pinned memory, without waiting."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _cuda_bf16(device: torch.device) -> bool:
    try:
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    except (RuntimeError, AssertionError):
        return False


def _has_triton() -> bool:
    try:
        from torch.utils._triton import has_triton
    except ImportError:
        return False
    return has_triton()
