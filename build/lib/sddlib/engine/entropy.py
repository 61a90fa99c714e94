"""Activation entropy (Quétu & Tartaglione, DSD², AAAI 2024): how undecided a network's ReLUs are.

Every ReLU's input is binarised at 0: a *unit-position* (one neuron of a linear layer,
one (channel, position) of a convolution's output) is *on* for a sample when its
pre-activation is positive. Over the samples measured, ``p`` is the share of samples for
which it is on, clamped to ``[1e-5, 1 - 1e-5]``, and its entropy is the binary entropy
``-p log2 p - (1 - p) log2 (1 - p)`` in bits: 0 for a unit that is always on or always
off (it acts linearly, or not at all), 1 for one that is on for half the samples. A
layer's entropy is the mean over its unit-positions; the network's, the ``levels.csv``
column ``activation_entropy``, is the mean over every unit-position of every ReLU (the
layers' entropies weighted by their unit-positions).

What is measured, and why:

- the clean training inputs, without augmentation (labels play no part), in eval mode
  and in float32 (no autocast: bf16 rounding can flip the sign of a pre-activation near
  0);
- :data:`SAMPLES` of them (a fixed random subset, the same for every run of a dataset
  and size; all of them when the training set is smaller), over as many batches as that
  takes. DSD²'s code meant to measure the training set but removed its hooks inside the
  batch loop, so it measured its first batch of 400. The count is a function argument,
  not a config key, so that it does not change any run's identity; ``meta.json`` records
  the one a run's column was measured with (``activation_entropy_samples``) and the
  definition (``activation_entropy_version``, :data:`VERSION`).

The ReLUs are found as ``nn.ReLU`` modules (forward hooks, as DSD² does): a model of
your own (``register_model``) must apply its ReLUs as ``nn.ReLU`` modules, not
``F.relu``/``torch.relu``, for them to count. A module applied several times in one
forward pass counts as one layer per application (``name``, ``name#2``, ...). Every
model shipped here does so; a model without ``nn.ReLU`` modules gets NaN. Since
``relu(x) > 0`` exactly when ``x > 0``, the hook reads the ReLU's output, which is also
right for ``nn.ReLU(inplace=True)``.

Each level's per-layer values are stored beside its weights, in
``checkpoints/level_XX/entropy.json`` (:func:`save`, :func:`load`); :func:`run_entropies`
reads them as a table. Runs stored before this measure existed (or with another
definition or sample count) get the column and the files from their stored weights,
without retraining, the first time they are found (:func:`upgrade_activation_entropy`).
The early stop rule that reads the column is ``metrics.entropy_early_stop``.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from sddlib.base.files import atomic_write_text, load_torch
from sddlib.data import datasets as data_module
from sddlib.engine import train
from sddlib.engine.checkpoints import new_model
from sddlib.storage.store import LEVEL_COLUMNS, Run, RunBusyError

VERSION = 1           # the definition above
SAMPLES = 2048        # training samples measured by default (all when there are fewer)
BATCH_SIZE = 512
CLAMP = 1e-5          # p is clamped to [CLAMP, 1 - CLAMP], as DSD²'s code does
FILE = "entropy.json"
_SUBSET_SEED = 0      # the subset depends on the training-set size only, never on a run


@dataclass
class LayerEntropy:
    layer: str     # the ReLU module's name (``name#k`` for its k-th application)
    units: int     # unit-positions: the numbers per sample the ReLU sees
    entropy: float  # mean binary entropy of its unit-positions, bits


@dataclass
class ActivationEntropy:
    """One network's activation entropy: per layer, and for the network (bits)."""
    network: float
    samples: int
    layers: list[LayerEntropy] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"version": VERSION, "samples": self.samples, "network": self.network,
                "layers": [vars(layer) for layer in self.layers]}

    @classmethod
    def from_dict(cls, stored: dict) -> "ActivationEntropy":
        return cls(float(stored["network"]), int(stored["samples"]),
                   [LayerEntropy(str(k["layer"]), int(k["units"]), float(k["entropy"]))
                    for k in stored["layers"]])


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """Binary entropy in bits of the probabilities ``p``, clamped to ``[CLAMP, 1 - CLAMP]``."""
    p = p.double().clamp(CLAMP, 1 - CLAMP)
    return -(p * torch.log2(p) + (1 - p) * torch.log2(1 - p))


def sample_indices(num_train: int, samples: Optional[int] = SAMPLES) -> torch.Tensor:
    """The training samples measured: ``samples`` of ``num_train`` drawn without
    replacement by a fixed generator (sorted), or all of them when ``samples`` is None or
    not smaller than ``num_train``."""
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int)
                                or samples < 1):
        raise ValueError(f"samples: must be a positive integer or None (every training "
                         f"sample), got {samples!r}")
    if samples is None or samples >= num_train:
        return torch.arange(num_train)
    generator = torch.Generator().manual_seed(_SUBSET_SEED)
    return torch.randperm(num_train, generator=generator)[:samples].sort().values


def relu_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The ``nn.ReLU`` modules of ``model`` by name: the ReLUs that are measured."""
    return {name: module for name, module in model.named_modules()
            if isinstance(module, nn.ReLU)}


def activation_entropy(model: nn.Module, inputs: train.Inputs,
                       samples: Optional[int] = SAMPLES,
                       batch_size: int = BATCH_SIZE) -> ActivationEntropy:
    """The activation entropy of ``model`` on ``samples`` clean training inputs of
    ``inputs`` (:func:`sample_indices`; None: all), in batches of ``batch_size``.

    The model is put in eval mode for the measurement and given back in the mode it was
    in; its hooks are removed whatever happens.
    """
    index = sample_indices(inputs.num_train, samples).to(inputs.x_train.device)
    on: dict[str, torch.Tensor] = {}
    calls: dict[str, int] = {}

    def hook_for(name: str):
        def hook(module, args, output):
            calls[name] = calls.get(name, 0) + 1
            key = name if calls[name] == 1 else f"{name}#{calls[name]}"
            count = (output > 0).sum(0, dtype=torch.int64)
            on[key] = on[key] + count if key in on else count
        return hook

    handles = [module.register_forward_hook(hook_for(name))
               for name, module in relu_modules(model).items()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(index), batch_size):
                calls.clear()
                model(inputs.prepare(inputs.x_train[index[start:start + batch_size]]))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    layers = [LayerEntropy(name, count.numel(),
                           float(binary_entropy(count.double() / len(index)).mean()))
              for name, count in on.items()]
    units = sum(layer.units for layer in layers)
    network = (sum(layer.units * layer.entropy for layer in layers) / units if units
               else float("nan"))
    return ActivationEntropy(float(network), len(index), layers)


# ---------------------------------------------------------------------------- stored runs
def save(result: ActivationEntropy, level_dir: Path) -> None:
    """Write ``result`` as ``level_dir/entropy.json`` (atomically)."""
    atomic_write_text(Path(level_dir) / FILE, json.dumps(result.as_dict(), indent=2))


def load(level_dir: Path) -> Optional[ActivationEntropy]:
    """A level's stored activation entropy, or None if it has none of :data:`VERSION`."""
    path = Path(level_dir) / FILE
    if not path.exists():
        return None
    stored = json.loads(path.read_text())
    return ActivationEntropy.from_dict(stored) if stored.get("version") == VERSION else None


def run_entropies(run: Run, per_layer: bool = False, *, samples: Optional[int] = SAMPLES,
                  data_dir: Path | str = "data/datasets") -> pd.DataFrame:
    """The activation entropy of every finished level of ``run``: read from its
    ``entropy.json`` files where they were measured on as many samples as asked (and the
    training set has), measured from the stored weights otherwise (nothing is written).

    Columns: ``level``, ``sparsity``, ``layer`` (``"all"`` for the network value, or the
    ReLU's name with ``per_layer``), ``units``, ``entropy``.
    """
    measurer = _Measurer(run, data_dir)
    rows = []
    for level, sparsity in zip(run.levels()["level"], run.levels()["sparsity"]):
        result = measurer.stored_or_measured(int(level), samples)
        if per_layer:
            rows += [{"level": int(level), "sparsity": float(sparsity), **vars(layer)}
                     for layer in result.layers]
        else:
            rows.append({"level": int(level), "sparsity": float(sparsity), "layer": "all",
                         "units": sum(layer.units for layer in result.layers),
                         "entropy": result.network})
    return pd.DataFrame(rows, columns=["level", "sparsity", "layer", "units", "entropy"])


def upgrade_activation_entropy(run: Run, data_dir: Path | str = "data/datasets",
                               progress: bool = True) -> bool:
    """Give a stored run the ``activation_entropy`` column (and each level its
    ``entropy.json``) from its stored weights if it lacks them or holds another
    definition or sample count; True if it was rewritten.

    As ``checkpoints.upgrade_learning_distance``: nothing is retrained, the weights are
    not touched, ``meta.json`` notes the upgrade, and a run another process is computing
    is left alone (it is upgraded the next time it is found). So is a run whose dataset is
    not under ``data_dir``.
    """
    meta = run.meta()
    if meta.get("activation_entropy_version") == VERSION and \
            meta.get("activation_entropy_samples") == SAMPLES:
        return False
    try:
        with run.lock():
            table = run.levels()
            if not table.empty:
                measurer = _Measurer(run, data_dir)
                values = []
                for level in tqdm(table["level"], desc=f"activation entropy {run.name[:32]}",
                                  unit="level", leave=False, disable=not progress):
                    result = measurer.stored_or_measured(int(level), SAMPLES)
                    save(result, run.level_dir(int(level)))
                    values.append(result.network)
                table["activation_entropy"] = values
                order = [c for c in LEVEL_COLUMNS if c in table]
                table = table[order + [c for c in table if c not in order]]
                atomic_write_text(run.file("levels.csv"), table.to_csv(index=False))
            meta = run.meta()
            meta.update(activation_entropy_version=VERSION, activation_entropy_samples=SAMPLES,
                        activation_entropy_upgraded=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            atomic_write_text(run.file("meta.json"), json.dumps(meta, indent=2))
    except (RunBusyError, FileNotFoundError):
        return False
    return True


class _Measurer:
    """A stored run's levels rebuilt from their weights, on the run's device, with its
    clean training inputs (loaded on first use)."""

    def __init__(self, run: Run, data_dir):
        self.run, self.data_dir = run, Path(data_dir)
        self._inputs: Optional[train.Inputs] = None

    def stored_or_measured(self, level: int, samples: Optional[int]) -> ActivationEntropy:
        stored = load(self.run.level_dir(level))
        inputs = self.inputs()
        if stored is not None and stored.samples == len(sample_indices(inputs.num_train,
                                                                       samples)):
            return stored
        model = new_model(self.run.config, self._shape, self._classes)
        model.load_state_dict(load_torch(self.run.level_dir(level) / "final.pt"))
        return activation_entropy(model.to(inputs.x_train.device), inputs, samples)

    def inputs(self) -> train.Inputs:
        if self._inputs is None:
            config = self.run.config
            bundle = data_module.load_clean_cached(config.dataset, str(self.data_dir),
                                                   config.train_size, config.test_size,
                                                   config.image_size)
            held_out = self.run.file("validation.npz")
            if held_out.exists():  # the run trained on the rest: measure on that, as it did
                bundle, _ = data_module.split_validation(
                    bundle, config.validation_size, config.seed,
                    data_module.load_validation_indices(held_out))
            self._shape, self._classes = bundle.input_shape, bundle.num_classes
            self._inputs = train.Inputs.from_bundle(bundle, train.resolve_device(
                config.device))
        return self._inputs
