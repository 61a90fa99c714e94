"""The hyperparameters of one sparse double descent experiment.

An :class:`ExperimentConfig` names everything that decides a run's numbers: the data and
its label noise, the model, the pruning rule, the retraining mode and the training
recipe. Each field carries its allowed values and a one-line help, so the command line
(``--set key=value``), config files and validation are all generated from this one
class: a new knob is one field here, nothing else.

A run's identity is a hash of its config (see :func:`ExperimentConfig.identity`). Fields
that do not change the numbers (where data lives, which device trains, how many levels
to go to) are left out of it, so a run found on disk is reused and can be extended by
asking for more levels. A field added after the first release must be listed in
``_ADDED_LATER`` with its default: it enters the hash only when set to another value, so
every run stored before it keeps its identity (``tests/test_config.py`` guards that).

``precision`` is such a field: ``bf16`` and ``fp32`` round differently, so they are part of
the identity, while ``auto`` (the default, bf16 autocast on CUDA, fp32 elsewhere) keeps
the hashes runs had before the field existed; what it resolved to is recorded in the
run's ``meta.json``, with the ``compile`` setting (see :mod:`fast`). ``threads`` (torch
CPU threads) is left out of the identity like ``device``, though it changes float
rounding: its default gives a run one fixed count wherever it runs (see :mod:`parallel`),
and ``meta.json`` records the count a run trained with.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Optional

from .data import DATASETS, NOISE_KINDS
from .fast import COMPILE_MODES, PRECISIONS

MODELS = ("mlp", "cnn1d", "resnet18", "resnet101", "vgg16", "vgglike")
CRITERIA = ("magnitude", "gradient", "random")
SCOPES = ("global", "layerwise")
RETRAIN_MODES = ("lottery", "finetune", "lr-rewind", "scratch", "reinit")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "multistep", "cosine")


class ConfigError(ValueError):
    """Bad input: one line naming the key and what is allowed."""


def _field(default, help: str, choices=None, low=None, high=None, identity=True):
    meta = {"help": help, "choices": choices, "low": low, "high": high, "identity": identity}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ExperimentConfig:
    # data
    dataset: str = _field("mnist1d", "dataset name", choices=DATASETS)
    train_size: Optional[int] = _field(
        8000, "training samples (mnist1d: generated; others: a fixed subset; none = all)", low=1)
    test_size: Optional[int] = _field(
        2000, "test samples (mnist1d: generated; others: a fixed subset; none = all)", low=1)
    image_size: Optional[int] = _field(
        None, "resize image sets to this side (tinyimagenet: 32 as the paper; none = native)", low=4)
    noise: float = _field(0.2, "fraction of training labels made noisy", low=0.0, high=1.0)
    noise_kind: str = _field("random", "label noise model", choices=NOISE_KINDS)
    augment: Optional[bool] = _field(
        None, "random crop (padding 4) and horizontal flip; none = on for cifar/tinyimagenet")
    # model
    model: str = _field("cnn1d", "architecture", choices=MODELS)
    widths: list = _field([300, 100], "hidden widths of the mlp (LeNet-300-100: 300,100)")
    width: Optional[int] = _field(
        None, "base width (channels) of cnn1d, resnet, vgg16, vgglike; none = 32 for cnn1d, "
              "64 (the papers') for the others", low=1)
    depth: int = _field(5, "number of conv blocks of vgglike", low=1, high=8)
    # pruning
    criterion: str = _field("magnitude", "pruning score", choices=CRITERIA)
    scope: str = _field("global", "one threshold over all layers, or one per layer", choices=SCOPES)
    rate: float = _field(0.2, "fraction of the remaining weights pruned at each level",
                         low=0.0, high=1.0)
    prune_output: Optional[bool] = _field(
        None, "prune the output layer too; none = the paper's choice per model "
              "(resnet: yes; mlp, vgg: no)")
    gradient_batches: int = _field(
        8, "seeded mini-batches averaged for the gradient criterion", low=1)
    # retraining
    retrain: str = _field("lottery", "what happens after each pruning step", choices=RETRAIN_MODES)
    rewind_iteration: int = _field(
        0, "lottery: iteration of the dense run to rewind to (0 = original init)", low=0)
    finetune_lr: float = _field(1e-3, "constant learning rate of finetune mode", low=0.0)
    redense_level: Optional[int] = _field(
        None, "train the run's level-L sparse solution on with every weight free (re-dense); "
              "none = off", low=0)
    # training
    epochs: int = _field(30, "epochs per level", low=1)
    batch_size: int = _field(128, "mini-batch size", low=1)
    optimizer: str = _field("adam", "optimiser", choices=OPTIMIZERS)
    lr: float = _field(1e-3, "learning rate", low=0.0)
    momentum: float = _field(0.9, "SGD momentum", low=0.0, high=1.0)
    weight_decay: float = _field(0.0, "L2 weight decay", low=0.0)
    schedule: str = _field("constant", "learning-rate schedule", choices=SCHEDULES)
    milestones: list = _field([], "multistep: epochs at which the lr is multiplied by gamma")
    gamma: float = _field(0.1, "multistep: lr factor at each milestone", low=0.0)
    seed: int = _field(0, "seed of init, label noise, data order and pruning", low=0)
    precision: str = _field(
        "auto", "float precision of the forward pass and loss; auto: bf16 autocast on cuda, "
                "fp32 elsewhere (bf16 changes float rounding, not the recipe)",
        choices=PRECISIONS)
    # where, how long and how fast; none of these change the numbers (compile: beyond float
    # rounding), so they are not in the identity
    levels: int = _field(25, "pruning levels after the dense level 0", low=0, identity=False)
    device: str = _field("auto", "torch device: auto (cuda when present), cpu, cuda, cuda:N",
                         identity=False)
    compile: str = _field("auto", "torch.compile the forward pass and loss; auto: on with cuda, "
                                  "off on the cpu", choices=COMPILE_MODES,
                          identity=False)
    threads: Optional[int] = _field(
        None, "torch cpu threads of the run; none = auto: 1 for mlp and cnn1d on the cpu "
              "(several runs train at once, one per core), every core otherwise", low=1,
        identity=False)

    # ------------------------------------------------------------------ public
    def __post_init__(self):
        for f in dataclasses.fields(self):
            setattr(self, f.name, _coerce(f, getattr(self, f.name)))
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad key and its allowed values."""
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if value is None:
                continue
            if meta["choices"] and value not in meta["choices"]:
                raise ConfigError(
                    f"{f.name}: {value!r} is not allowed; allowed: {', '.join(meta['choices'])}")
            bounds = _bounds_text(meta)
            for item in (value if isinstance(value, list) else [value]):
                if isinstance(item, (int, float)) and not isinstance(item, bool):
                    if (meta["low"] is not None and item < meta["low"]) or (
                            meta["high"] is not None and item > meta["high"]):
                        raise ConfigError(f"{f.name}: {item!r} is out of range; allowed: {bounds}")
        if self.model == "mlp" and (not self.widths or min(self.widths) < 1):
            raise ConfigError("widths: need one or more positive hidden widths, e.g. 300,100")
        if any(m < 0 for m in self.milestones):
            raise ConfigError("milestones: epochs must be >= 0")
        if self.retrain == "finetune" and self.rewind_iteration:
            raise ConfigError("rewind_iteration: only the lottery (and reinit) modes rewind; "
                              "allowed with finetune: 0")
        if self.model in ("mlp",) and self.dataset != "mnist1d" and self.augment:
            raise ConfigError("augment: crop/flip needs an image model; allowed with mlp: false")
        if self.dataset == "mnist1d" and self.model not in ("mlp", "cnn1d"):
            raise ConfigError(f"model: {self.model!r} needs image data; allowed with mnist1d: "
                              "mlp, cnn1d")
        if self.dataset != "mnist1d" and self.model == "cnn1d":
            raise ConfigError("model: cnn1d reads 1-D signals; allowed dataset: mnist1d")
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"device: {self.device!r} is not allowed; allowed: auto, cpu, "
                              "cuda, cuda:N")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ExperimentConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                raise ConfigError(f"{key}: unknown key; allowed: {', '.join(sorted(known))}")
        return cls(**values)

    def replace(self, **changes) -> "ExperimentConfig":
        return ExperimentConfig.from_dict({**self.to_dict(), **changes})

    def with_sets(self, assignments: list[str]) -> "ExperimentConfig":
        """Apply ``key=value`` strings as given on the command line."""
        changes = {}
        for text in assignments:
            if "=" not in text:
                raise ConfigError(f"--set: expected key=value, got {text!r}")
            key, raw = text.split("=", 1)
            key = key.strip().replace("-", "_")
            fields = {f.name: f for f in dataclasses.fields(self)}
            if key not in fields:
                raise ConfigError(f"{key}: unknown key; allowed: {', '.join(sorted(fields))}")
            changes[key] = _parse(fields[key], raw.strip())
        return self.replace(**changes)

    def identity(self) -> dict[str, Any]:
        """The fields that decide the numbers, in a stable form, for hashing."""
        values = {}
        for f in dataclasses.fields(self):
            if not f.metadata["identity"]:
                continue
            value = getattr(self, f.name)
            if f.name in _ADDED_LATER and value == _ADDED_LATER[f.name]:
                continue
            values[f.name] = value
        return values

    def short_hash(self) -> str:
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    def readable_name(self) -> str:
        noise = f"{self.noise_kind}{round(self.noise * 100)}" if self.noise else "clean"
        return (f"{self.dataset}-{self.model}-{noise}-{self.criterion}-{self.retrain}"
                f"-seed{self.seed}")

    def run_name(self) -> str:
        return f"{self.readable_name()}-{self.short_hash()}"

    # ------------------------------------------------------------------ derived
    @property
    def use_augment(self) -> bool:
        if self.augment is not None:
            return self.augment
        return self.dataset in ("cifar10", "cifar100", "tinyimagenet")

    @property
    def model_width(self) -> int:
        if self.width is not None:
            return self.width
        return 32 if self.model == "cnn1d" else 64

    @property
    def lottery_counterpart(self) -> "ExperimentConfig":
        """reinit borrows its masks from the lottery run with the same everything else."""
        return self.replace(retrain="lottery")


# Fields that accept none, with the type of their other values.
_NULLABLE = {"train_size": int, "test_size": int, "image_size": int, "augment": bool,
             "prune_output": bool, "width": int, "redense_level": int,
             "threads": int}

# Fields added after the first release, with the default that keeps old identities.
_ADDED_LATER: dict[str, Any] = {"redense_level": None, "precision": "auto"}


def help_table() -> list[tuple[str, str, str]]:
    """(key, default, help with allowed values) for every field, for the CLI's help."""
    rows = []
    for f in dataclasses.fields(ExperimentConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        allowed = (", ".join(f.metadata["choices"]) if f.metadata["choices"]
                   else _bounds_text(f.metadata))
        text = f.metadata["help"] + (f" [{allowed}]" if allowed else "")
        rows.append((f.name, _format(default), text))
    return rows


def _bounds_text(meta) -> str:
    low, high = meta["low"], meta["high"]
    if low is not None and high is not None:
        return f"{low} to {high}"
    if low is not None:
        return f">= {low}"
    if high is not None:
        return f"<= {high}"
    return ""


def _format(value) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return "none" if value is None else str(value)


def _base_type(f):
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if isinstance(default, list):
        return list
    return _NULLABLE.get(f.name) or type(default)


def _parse(f, raw: str):
    """Parse a command-line string into the field's type."""
    kind = _base_type(f)
    if raw.lower() in ("none", "null") and f.name in _NULLABLE:
        return None
    try:
        if kind is bool:
            if raw.lower() in ("true", "yes", "1", "on"):
                return True
            if raw.lower() in ("false", "no", "0", "off"):
                return False
            raise ValueError
        if kind is list:
            return [int(v) for v in raw.replace(" ", "").split(",") if v]
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        return raw
    except ValueError:
        expected = {bool: "true or false", list: "comma-separated integers", int: "an integer",
                    float: "a number"}[kind]
        raise ConfigError(f"{f.name}: {raw!r} is not {expected}") from None


def _coerce(f, value):
    """Check types of values given in Python or YAML (ints where floats are fine)."""
    kind = _base_type(f)
    if value is None:
        if f.name in _NULLABLE:
            return None
        raise ConfigError(f"{f.name}: none is not allowed; give a value")
    if isinstance(value, str) and kind is not str:
        return _parse(f, value)
    if kind is str and isinstance(value, bool) and {"on", "off"} <= set(f.metadata["choices"]
                                                                        or ()):
        value = "on" if value else "off"  # YAML reads a bare on/off as a bool
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        list: isinstance(value, (list, tuple)) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value),
    }[kind]
    if not ok:
        expected = {bool: "true or false", list: "a list of integers", int: "an integer",
                    float: "a number", str: "a string"}[kind]
        raise ConfigError(f"{f.name}: {value!r} is not {expected}")
    if kind is float:
        return float(value)
    if kind is list:
        return list(value)
    return value
