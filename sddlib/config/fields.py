"""The hyperparameters of one sparse double descent experiment.

An :class:`ExperimentConfig` names everything that decides a run's numbers: the data and
its label noise, the model, the pruning rule, the retraining mode and the training
recipe. Each field carries its allowed values and a one-line help, so the command line
(``--set key=value``), config files and validation are all generated from this one
class: a new knob is one field here, nothing else.

A run's identity (:meth:`ExperimentConfig.identity`, version :data:`IDENTITY_VERSION`)
holds only the settings that change its numbers *given its other settings*: ``widths``
only for a model that reads them, ``momentum`` only under SGD, ``milestones`` and
``gamma`` only for the multistep schedule, ``finetune_lr`` only in finetune,
``rewind_iteration`` only where the mode rewinds, ``gradient_batches`` only for the
gradient criterion, ``noise_kind`` only with noise, ``validation_size`` only when a split
is held out, the distillation keys only when the run distils (and then its teacher run's
own identity, see :mod:`distill`), and every none resolved to what it
means (the dataset's sizes, the model's width, its output-layer rule, the dataset's
augmentation). What a model, criterion or mode reads is said by its registry entry
(:mod:`models`, :mod:`prune`, :mod:`retrain`). Settings that never change the numbers
(where data lives, which device trains, how many levels to go to) are left out, so a run
found on disk is reused and can be extended by asking for more levels. Two configs of one
experiment therefore have one name.

Runs stored under the first identity (:meth:`ExperimentConfig.legacy_identity`, which
hashed every field) are found by their old name and moved to the new one, once, by
:meth:`sddlib.storage.store.RunStore.find`. ``threads`` (torch CPU threads) is left out of the
identity like ``device``, though it changes float rounding: its default gives a run one
fixed count wherever it runs (see :mod:`sddlib.engine.threads`), and ``meta.json`` records
the count a run trained with, with the resolved ``precision`` and ``compile`` settings
(:mod:`fast`).
A config is immutable once built: change one with :meth:`ExperimentConfig.replace`.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

import yaml

from sddlib.data.datasets import DATASETS, MNIST1D_TEST_SIZE, MNIST1D_TRAIN_SIZE, NOISE_KINDS
from sddlib.models.architectures import MODELS, model_spec
from sddlib.pruning.prune import CRITERIA
from sddlib.pruning.retrain import MODES, mode_of

SCOPES = ("global", "layerwise")
RETRAIN_MODES = tuple(MODES)  # sddlib.pruning.retrain: one entry per mode
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "multistep", "cosine")
DISTILL_RULES = ("none", "dense", "best-fit")  # sddlib.engine.distill: whom a run learns from
# sddlib.engine.fast: how a level computes (none of them enters the numbers beyond float
# tolerance except precision, which is part of the run identity)
PRECISIONS = ("auto", "fp32", "bf16")
COMPILE_MODES = ("auto", "on", "off")
SPARSE_MODES = ("auto", "on", "off")
DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?"  # a run's torch device, as config and CLI take it
DEVICES_ALLOWED = "auto, cpu, cuda, cuda:N"


class ConfigError(ValueError):
    """Bad input: one line naming the key and what is allowed."""


def _field(default, help: str, choices=None, low=None, high=None, identity=True, above=None,
           below=None, short=None, only_if=None, owned=False, added_later=False):
    """One config knob and everything the library needs to know about it, in one place.

    ``help``: the text of ``sddlib keys``. ``choices``: the allowed values (a callable
    reads a registry when asked); ``low``/``high``: inclusive bounds; ``above``/``below``:
    exclusive ones. A default of none makes none an allowed value; the type of the others
    is the field's annotation (``Optional[int]``).

    The identity: ``identity=False`` keeps the field out of a run's identity (where, how
    long and how fast a run trains). ``only_if(config)``: the field enters the identity
    only where it changes the numbers (momentum only with SGD); ``owned``: it belongs to a
    model, criterion or mode, whose registry entry lists it and decides the same.
    ``added_later``: the field came after the first identity
    (:meth:`ExperimentConfig.legacy_identity`), which leaves it out at its default.
    ``short``: the field in a run's readable name when it differs from its default (see
    :meth:`ExperimentConfig.readable_name`): a prefix put before the value (``"wd"`` gives
    ``wd5e-3``), or ``""`` for the value alone (``sgd``); fields the name's fixed part
    already shows have none."""
    meta = {"help": help, "choices": choices, "low": low, "high": high, "above": above,
            "below": below, "identity": identity, "short": short, "only_if": only_if,
            "owned": owned, "added_later": added_later}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


IDENTITY_VERSION = 2


@dataclass(frozen=True)
class ExperimentConfig:
    # data
    dataset: str = _field("mnist1d", "dataset name", choices=lambda: tuple(DATASETS))
    train_size: Optional[int] = _field(
        None, "training samples (mnist1d: generated; others: a fixed subset); none = the "
              "dataset's default (mnist1d: 8000; others: the whole split)", low=1)
    test_size: Optional[int] = _field(
        None, "test samples (mnist1d: generated; others: a fixed subset); none = the "
              "dataset's default (mnist1d: 2000; others: the whole split)", low=1, short='t')
    image_size: Optional[int] = _field(
        None, "resize image sets to this side (tinyimagenet: 32 as the paper; none = native)",
        low=4, short='img', only_if=lambda c: c.dataset == "tinyimagenet")
    noise: float = _field(0.2, "fraction of training labels made noisy", low=0.0, high=1.0)
    noise_kind: str = _field("random", "label noise model", choices=NOISE_KINDS,
                             only_if=lambda c: c.noise > 0)
    augment: Optional[bool] = _field(
        None, "random crop (padding 4) and horizontal flip; none = on for cifar/tinyimagenet",
        short='aug')
    validation_size: int = _field(
        0, "training samples held out as a validation split (drawn after the label noise, "
           "so its labels are noisy as a researcher's are; stratified, seeded by seed; "
           "stored in validation.npz); each level's row gets val_acc and val_loss; 0 = none",
        low=0, short='val', only_if=lambda c: c.validation_size > 0, added_later=True)
    # model
    model: str = _field("cnn1d", "architecture", choices=lambda: tuple(MODELS))
    widths: list = _field([300, 100], "hidden widths of the mlp (LeNet-300-100: 300,100)",
                          owned=True)
    width: Optional[int] = _field(
        None, "base width (channels) of cnn1d, resnet, vgg16, vgglike; none = 32 for cnn1d "
              "and vgglike (DSD²'s), 64 (the papers') for the others", low=1, owned=True)
    depth: int = _field(5, "number of conv blocks of vgglike", low=1, high=8, owned=True)
    # pruning
    criterion: str = _field("magnitude", "pruning score", choices=lambda: tuple(CRITERIA))
    scope: str = _field("global", "one threshold over all layers, or one per layer",
                        choices=SCOPES, short='')
    rate: float = _field(0.2, "fraction of the remaining weights pruned at each level",
                         above=0.0, below=1.0, short='rate')
    prune_output: Optional[bool] = _field(
        None, "prune the output layer too; none = the paper's choice per model "
              "(resnet: yes; mlp, vgg: no)", short='pruneout')
    gradient_batches: int = _field(
        8, "seeded mini-batches averaged for the gradient criterion", low=1, short='gb',
        owned=True)
    # retraining
    retrain: str = _field("lottery", "what happens after each pruning step", choices=RETRAIN_MODES)
    rewind_iteration: int = _field(
        0, "lottery: iteration of the dense run to rewind to (0 = original init)", low=0,
        short='rewind', owned=True)
    finetune_lr: Optional[float] = _field(
        None, "constant learning rate of finetune mode; none = lr/100, the paper's ratio "
              "(0.001 after 0.1 for CIFAR)", above=0.0, short='ftlr', owned=True)
    redense_level: Optional[int] = _field(
        None, "train the run's level-L sparse solution on with every weight free (re-dense); "
              "none = off", low=0, only_if=lambda c: c.redense_level is not None,
        added_later=True)
    # distillation from a sparse teacher (DSD², see sddlib.engine.distill)
    distill_from: str = _field(
        "none", "train every level with distillation from a fixed level of the teacher run: "
                "dense = its level 0; best-fit = its level with the best val_acc (needs "
                "validation_size >= 1); the teacher run is computed first if missing",
        choices=DISTILL_RULES, only_if=lambda c: c.distills, added_later=True)
    distill_alpha: float = _field(
        0.8, "weight of the distillation term: alpha*T^2*KL(teacher || student) + "
             "(1-alpha)*CE on the noisy labels", low=0.0, high=1.0, short='alpha',
        only_if=lambda c: c.distills, added_later=True)
    distill_temperature: float = _field(
        10.0, "softmax temperature T of distillation", above=0.0, short='T',
        only_if=lambda c: c.distills, added_later=True)
    teacher: dict = _field(
        {}, "the teacher run: the student's config without distillation, with these keys "
            "over it (--set teacher.model=cnn1d --set teacher.width=64); best-fit picks "
            "among its levels 0..levels, by default the student's levels, a range that is "
            "part of the student's identity (set teacher.levels to extend a student)",
        short='teacher', only_if=lambda c: c.distills, added_later=True)
    # training
    epochs: int = _field(30, "epochs per level", low=1, short='e')
    batch_size: int = _field(128, "mini-batch size", low=1, short='b')
    optimizer: str = _field("adam", "optimiser", choices=OPTIMIZERS, short='')
    lr: float = _field(1e-3, "learning rate", above=0.0, short='lr')
    momentum: float = _field(0.9, "SGD momentum", low=0.0, below=1.0, short='mom',
                             only_if=lambda c: c.optimizer == "sgd")
    weight_decay: float = _field(0.0, "L2 weight decay", low=0.0, short='wd')
    schedule: str = _field("constant", "learning-rate schedule", choices=SCHEDULES, short='')
    milestones: list = _field([], "multistep: epochs at which the lr is multiplied by gamma",
                              short='ms', only_if=lambda c: c.schedule == "multistep")
    gamma: float = _field(0.1, "multistep: lr factor at each milestone", above=0.0,
                          short='gamma', only_if=lambda c: c.schedule == "multistep")
    seed: int = _field(0, "seed of init, label noise, data order and pruning", low=0)
    precision: str = _field(
        "auto", "float precision of the forward pass and loss; auto: bf16 autocast on cuda, "
                "fp32 elsewhere (bf16 changes float rounding, not the recipe)",
        choices=PRECISIONS, short='', added_later=True)
    # where, how long and how fast; none of these change the numbers (compile: beyond float
    # rounding), so they are not in the identity
    levels: int = _field(25, "pruning levels after the dense level 0", low=0, identity=False)
    device: str = _field("auto", "torch device: auto (cuda when present), cpu, cuda, cuda:N",
                         identity=False)
    compile: str = _field("auto", "torch.compile the forward pass and loss; auto: on with cuda, "
                                  "off on the cpu", choices=COMPILE_MODES,
                          identity=False)
    sparse: str = _field("auto", "train pruned linear layers of density <= 0.2 with CSR "
                                 "kernels (sddlib.pruning.sparse); auto: on on the cpu in fp32, "
                                 "off on cuda", choices=SPARSE_MODES, identity=False)
    threads: Optional[int] = _field(
        None, "torch cpu threads of the run; none = auto: 1 for mlp and cnn1d on the cpu "
              "(several runs train at once, one per core), every core otherwise", low=1,
        identity=False)

    # ------------------------------------------------------------------ public
    def __post_init__(self):
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _coerce(f, getattr(self, f.name)))
        self.validate()
        if self.teacher:  # its entries as the teacher's config reads them (80,120 -> [80, 120])
            teacher = self.teacher_config
            object.__setattr__(self, "teacher", {k: getattr(teacher, k) for k in self.teacher})

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad key and its allowed values."""
        for f in dataclasses.fields(self):
            _check_field(f, getattr(self, f.name))
        if self.model == "mlp" and (not self.widths or min(self.widths) < 1):
            raise ConfigError("widths: need one or more positive hidden widths, e.g. 300,100")
        if any(m < 0 for m in self.milestones):
            raise ConfigError("milestones: epochs must be >= 0")
        if (complaint := mode_of(self).validate(self)) is not None:
            raise ConfigError(complaint)
        if self.teacher or self.distills:
            self._check_teacher()
        model, kind = model_spec(self.model), DATASETS[self.dataset].kind
        if model.reads == "image" and kind != "image":
            readers = [name for name, spec in MODELS.items() if spec.reads in ("any", kind)]
            raise ConfigError(f"model: {self.model!r} needs image data; allowed with "
                              f"{self.dataset}: {', '.join(readers)}")
        if model.reads == "signal" and kind != "signal":
            signals = [name for name, spec in DATASETS.items() if spec.kind == "signal"]
            raise ConfigError(f"model: {self.model} reads 1-D signals; allowed dataset: "
                              f"{', '.join(signals)}")
        if self.augment and (model.reads != "image" or kind != "image"):
            raise ConfigError(f"augment: crop/flip needs an image model on images; allowed "
                              f"with {self.model} on {self.dataset}: false")
        if not re.fullmatch(DEVICE_PATTERN, self.device):
            raise ConfigError(f"device: {self.device!r} is not allowed; allowed: "
                              f"{DEVICES_ALLOWED}")
        if self.dataset == "mnist1d":
            train = MNIST1D_TRAIN_SIZE if self.train_size is None else self.train_size
            test = MNIST1D_TEST_SIZE if self.test_size is None else self.test_size
            if (train + test) % 10:
                raise ConfigError(f"train_size: mnist1d makes whole classes, so train_size + "
                                  f"test_size must be a multiple of 10; got {train} + {test}")
            if self.image_size is not None:
                raise ConfigError(f"image_size: mnist1d has no images; allowed: none, got "
                                  f"{self.image_size!r}")
        elif self.image_size is not None and self.dataset != "tinyimagenet":
            native = DATASETS[self.dataset].input_shape[-1]
            if self.image_size != native:
                raise ConfigError(f"image_size: only tinyimagenet is resized; allowed with "
                                  f"{self.dataset}: none, {native}; got {self.image_size!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ExperimentConfig":
        # keys new users try that are options of the command, not of the experiment
        options = {"data_dir": "--data-dir DIR", "runs_dir": "--runs-dir DIR",
                   "download": "--download", "seeds": "--seeds 0 1 2 (the config key is seed)",
                   "workers": "--workers N", "checkpoint_every": "--checkpoint-every SECONDS",
                   "stack": "--stack or --no-stack", "quiet": "--quiet"}
        if not isinstance(values, dict):
            raise ConfigError(f"config: expected key: value pairs, got {values!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key in options:
                raise ConfigError(f"{key}: not a config key but an option of `sddlib run`: "
                                  f"{options[key]}")
            if key not in known:
                raise ConfigError(unknown_key_message(str(key), known))
        return cls(**values)

    def replace(self, **changes) -> "ExperimentConfig":
        return ExperimentConfig.from_dict({**self.to_dict(), **changes})

    def with_sets(self, assignments: list[str]) -> "ExperimentConfig":
        """Apply ``key=value`` strings as given on the command line (:func:`parse_assignments`;
        ``-`` in a key reads as ``_``)."""
        keys_read = [key.replace("-", "_") + equals + value for key, equals, value in
                     (text.partition("=") for text in assignments)]
        changes = parse_assignments(keys_read, flag="--set")
        for key, value in changes.items():
            if isinstance(value, dict):
                if key not in _DICT_FIELDS:
                    raise ConfigError(f"{key}: --set takes config keys, not dotted ones; "
                                      f"allowed: the keys of `sddlib keys` and dotted "
                                      f"{', '.join(k + '.KEY' for k in _DICT_FIELDS)}")
                changes[key] = {**getattr(self, key), **value}  # one entry at a time
        return self.replace(**changes)

    def identity(self) -> dict[str, Any]:
        """The settings that change this run's numbers, resolved, for hashing (see the
        module docstring)."""
        values: dict[str, Any] = {"identity": IDENTITY_VERSION}
        for f in dataclasses.fields(self):
            if f.metadata["identity"] and _matters(self, f.name):
                values[f.name] = _resolved(self, f.name)
        return values

    def short_hash(self) -> str:
        return _hash(self.identity())

    def readable_name(self) -> str:
        """``dataset[-nTRAIN]-model[-size]-noise-criterion-mode[-redenseL][-distill-RULE]
        [-SETTINGS]-seedS``: the size is the MLP's widths (``300x100``) or the base width
        (``w32``), ``nTRAIN`` a training set smaller than the dataset's own, and
        ``SETTINGS`` every other setting of the run's identity that differs from its
        default, each by its field's ``short`` name (``e40-sgd-lr0.1-mom0-wd5e-3-val500``),
        so runs that differ in any setting of their identity never share a name."""
        noise = f"{self.noise_kind}{round(self.noise * 100)}" if self.noise else "clean"
        data = self.dataset
        spec = DATASETS[self.dataset]
        if self.train_size is not None and self.train_size != spec.train_size:
            data += f"-n{self.train_size}"
        fields = model_spec(self.model).fields
        model = self.model
        if "widths" in fields:
            model += "-" + "x".join(str(w) for w in self.widths)
        elif "width" in fields:
            model += f"-w{self.model_width}" + (f"d{self.depth}" if "depth" in fields else "")
        mode = self.retrain + (f"-redense{self.redense_level}"
                               if self.redense_level is not None else "")
        if self.distills:
            mode += f"-distill-{self.distill_from}"
        settings = "".join(f"-{token}" for token in self._setting_tokens())
        return f"{data}-{model}-{noise}-{self.criterion}-{mode}{settings}-seed{self.seed}"

    def _setting_tokens(self) -> list[str]:
        """The name tokens of :meth:`readable_name`'s ``SETTINGS``, in field order."""
        tokens = []
        for f in dataclasses.fields(self):
            short = f.metadata.get("short")
            if short is None or not f.metadata["identity"] or not _matters(self, f.name):
                continue
            value = _resolved(self, f.name)
            if isinstance(value, dict):  # a dict's default is the run's own settings
                if self._dict_entries(f.name):
                    tokens.append(f"{short}{_hash(value)[:6]}")
                continue
            default = copy.copy(self)  # the default in this run's context, unvalidated
            object.__setattr__(default, f.name, f.default if f.default is not dataclasses.MISSING
                               else f.default_factory())
            if value == _resolved(default, f.name):
                continue
            if isinstance(value, bool):
                tokens.append(short if value else f"no{short}")
            elif isinstance(value, (list, tuple)):
                tokens.append(short + "_".join(_short_number(v) for v in value))
            else:
                tokens.append(short + _short_number(value))
        return tokens

    def _dict_entries(self, name: str) -> dict[str, Any]:
        """The entries of a dict field (``teacher``) that change the run: those that differ
        from the run's own setting, and for best-fit the teacher's ``levels`` whenever set
        (the student's own ``levels`` is not part of its identity, so it cannot be the
        default a name is read against)."""
        raw = getattr(self, name)
        return {key: value for key, value in raw.items()
                if (key == "levels" and self.distill_from == "best-fit")
                or (key != "levels" and value != getattr(self, key))}

    def run_name(self) -> str:
        return f"{self.readable_name()}-{self.short_hash()}"

    def legacy_identity(self) -> dict[str, Any]:
        """The first identity (before version 2): every field that can change the numbers,
        whether or not it does for this config; kept to find runs stored under it."""
        values = {}
        for f in dataclasses.fields(self):
            if not f.metadata["identity"]:
                continue
            value = _stable_value(self, f.name, getattr(self, f.name))
            if f.metadata["added_later"] and value == _default(f):
                continue
            values[f.name] = value
        return values

    def legacy_run_name(self) -> str:
        """The folder name a run of this config had under the first identity."""
        noise = f"{self.noise_kind}{round(self.noise * 100)}" if self.noise else "clean"
        return (f"{self.dataset}-{self.model}-{noise}-{self.criterion}-{self.retrain}"
                f"-seed{self.seed}-{_hash(self.legacy_identity())}")

    # ------------------------------------------------------------------ derived
    @property
    def distills(self) -> bool:
        """Whether the run trains with distillation from a teacher run
        (``distill_from`` other than ``none``)."""
        return self.distill_from != "none"

    @property
    def use_augment(self) -> bool:
        if self.augment is not None:
            return self.augment
        return DATASETS[self.dataset].augment

    @property
    def model_width(self) -> int:
        if self.width is not None:
            return self.width
        return model_spec(self.model).default_width or 64

    @property
    def finetune_rate(self) -> float:
        """The constant learning rate finetune levels train at."""
        return self.lr / 100 if self.finetune_lr is None else self.finetune_lr

    @property
    def lottery_counterpart(self) -> "ExperimentConfig":
        """reinit borrows its masks from the lottery run with the same everything else."""
        return self.replace(retrain="lottery")

    @property
    def teacher_config(self) -> "ExperimentConfig":
        """The run a distilling student learns from: its own config without distillation,
        ``teacher``'s entries over it; its ``levels``: 0 for a dense teacher, the student's
        for best-fit (unless ``teacher`` sets them)."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)
                    if f.name in ("distill_from", "distill_alpha", "distill_temperature")}
        levels = self.levels if self.distill_from == "best-fit" else 0
        return ExperimentConfig.from_dict({**self.to_dict(), **defaults, "teacher": {},
                                           "levels": levels, **self.teacher})

    def _check_teacher(self) -> None:
        wrong = sorted(set(self.teacher) & _NOT_FOR_TEACHER)
        if wrong:
            raise ConfigError(f"teacher.{wrong[0]}: a teacher reads the student's inputs and "
                              f"does not distil; allowed: any key but "
                              f"{', '.join(sorted(_NOT_FOR_TEACHER))}")
        try:
            teacher = self.teacher_config
        except ConfigError as error:
            raise ConfigError(f"teacher.{error}") from None
        if not self.distills:
            return
        if self.redense_level is not None:
            raise ConfigError("redense_level: a distilling run has no re-dense branch; "
                              "allowed: none")
        if self.distill_from == "best-fit" and teacher.validation_size == 0:
            raise ConfigError("validation_size: best-fit picks the teacher's level by its "
                              "accuracy on a validation split; allowed: >= 1, e.g. --set "
                              "validation_size=500")


# What a teacher may not change: what its inputs are, and distillation itself.
_NOT_FOR_TEACHER = {"dataset", "image_size", "distill_from", "distill_alpha",
                    "distill_temperature", "teacher", "redense_level"}

def parse_assignments(assignments: Iterable[str], flag: str = "-p") -> dict:
    """``key=value`` strings as a nested dict: the one override grammar of ``--set``
    (config keys), ``-p`` (notebook parameters) and, value for value, config files.

    Values are YAML (``0.4``, ``[80, 120]``, ``none``; lists of integers may also be
    written ``80,120``, which the config reads); a dotted key sets one entry of a dict
    parameter: ``experiment.noise=0.4``.
    """
    result: dict = {}
    for text in assignments:
        key, equals, raw = text.partition("=")
        parts = key.strip().split(".")
        if not equals or not all(part.strip() for part in parts):
            raise ConfigError(f"{flag}: expected key=value, e.g. {flag} seeds=[0,1] or "
                              f"{flag} experiment.noise=0.4; got {text!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at column {mark.column + 1}" if mark is not None else ""
            raise ConfigError(f"{key.strip()}: {raw!r} is not a YAML value{where} "
                              f"({getattr(error, 'problem', None) or 'unreadable'}); "
                              f"allowed: YAML, e.g. 0.4, [0, 1], {{noise: 0.4}}") from None
        target = result
        *path, leaf = [part.strip() for part in parts]
        for depth, part in enumerate(path):
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{'.'.join(parts[:depth + 1])}: set to {target!r} and "
                                  f"also used as a dict by {text!r}")
        target[leaf] = value
    return result



def unknown_key_message(key: str, known) -> str:
    """One short line for a key that is not a config key: the closest keys by spelling and
    where the whole list is (``sddlib keys``), not all forty of them."""
    names = sorted(known)
    close = difflib.get_close_matches(key, names, n=1)
    if close:
        return f"{key}: unknown key; did you mean {close[0]}? (every key: sddlib keys)"
    nearest = difflib.get_close_matches(key, names, n=3, cutoff=0.0)
    return (f"{key}: unknown key; the closest: {', '.join(nearest)} (every key: "
            f"sddlib keys)")


def _short_number(value) -> str:
    """A value as a run name shows it: the shorter of ``0.005`` and ``5e-3``, ``10`` for
    10.0, strings as they are."""
    if isinstance(value, float):
        if value == int(value) and abs(value) < 1e6:
            return str(int(value))
        plain = f"{value:g}"
        mantissa, _, exponent = f"{value:e}".partition("e")
        scientific = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        return scientific if len(scientific) < len(plain) else plain
    return str(value)


def _hash(identity: dict[str, Any]) -> str:
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _matters(config: "ExperimentConfig", name: str) -> bool:
    """Whether ``name`` changes the numbers of ``config``, given its other settings (its
    field's ``only_if`` and ``owned``)."""
    meta = _FIELDS[name].metadata
    if meta["only_if"] is not None:
        return meta["only_if"](config)
    if meta["owned"]:
        modes = {MODES[config.retrain], mode_of(config)}  # a re-dense branch: its parent's too
        return (name in model_spec(config.model).fields
                or name in CRITERIA[config.criterion].fields
                or any(name in mode.uses for mode in modes))
    return True


def _resolved(config: "ExperimentConfig", name: str):
    """What a setting means for ``config``: none replaced by the value it stands for."""
    spec = DATASETS[config.dataset]
    if name in ("train_size", "test_size") and getattr(config, name) is None and \
            spec.exact_sizes:
        return getattr(spec, name)
    if name == "width":
        return config.model_width
    if name == "finetune_lr":
        return config.finetune_rate
    if name == "augment":
        return config.use_augment
    if name == "prune_output":
        return (model_spec(config.model).prune_output if config.prune_output is None
                else config.prune_output)
    if name == "image_size" and config.image_size is None:
        return spec.input_shape[-1]
    if name == "teacher":  # the teacher run itself, and for best-fit the levels it picks among
        teacher = config.teacher_config
        return {**teacher.identity(), **({"levels": teacher.levels}
                                         if config.distill_from == "best-fit" else {})}
    return getattr(config, name)


# Fields whose default changed, hashed as the runs stored before the change had them.
_MNIST1D_SIZES = {"train_size": MNIST1D_TRAIN_SIZE, "test_size": MNIST1D_TEST_SIZE}
_OLD_FINETUNE_LR = 1e-3


def _stable_value(config: "ExperimentConfig", name: str, value):
    """``value`` as :meth:`ExperimentConfig.identity` hashes it.

    - ``train_size``/``test_size`` of none mean mnist1d's default sizes (8000/2000), which
      were the fields' explicit defaults before none meant "the dataset's default", so
      such runs keep their names.
    - ``finetune_lr`` does nothing outside finetune: there it is hashed as its old default
      (1e-3), so lottery and other runs keep their names whatever it is set to; in finetune
      the rate actually used is hashed, so a finetune run stored under the old default with
      another ``lr`` (which trained at 1e-3, not at lr/100) is not taken for a new one.
    """
    if name in _MNIST1D_SIZES and value is None and config.dataset == "mnist1d":
        return _MNIST1D_SIZES[name]
    if name == "finetune_lr":
        return config.finetune_rate if config.retrain == "finetune" else _OLD_FINETUNE_LR
    return value


def help_table() -> list[tuple[str, str, str]]:
    """(key, default, help with allowed values) for every field, for the CLI's help."""
    rows = []
    for f in dataclasses.fields(ExperimentConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        allowed = (", ".join(_choices(f.metadata)) if _choices(f.metadata)
                   else _bounds_text(f.metadata))
        text = f.metadata["help"] + (f" [{allowed}]" if allowed else "")
        rows.append((f.name, _format(default), text))
    return rows


def _choices(meta) -> tuple:
    """A field's allowed values; registries (datasets, models, criteria) are read when
    asked, so that what a user registers is allowed too."""
    choices = meta["choices"]
    return tuple(choices()) if callable(choices) else tuple(choices or ())


def _bounds_text(meta) -> str:
    low, high = meta["low"], meta["high"]
    above, below = meta.get("above"), meta.get("below")
    if low is not None and high is not None:
        return f"{low} to {high}"
    parts = []
    if low is not None:
        parts.append(f">= {low}")
    if above is not None:
        parts.append(f"> {above}")
    if high is not None:
        parts.append(f"<= {high}")
    if below is not None:
        parts.append(f"< {below}")
    return " and ".join(parts)


def _format(value) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return "none" if value is None else str(value)


def _default(f):
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def _nullable(f) -> bool:
    """Whether none is allowed: the fields whose default is none."""
    return _default(f) is None


_OPTIONAL = re.compile(r"Optional\[(int|float|bool|str)\]")


def _base_type(f):
    """The type of a field's values other than none: its default's, or for a field whose
    default is none the one its annotation names (``Optional[int]``)."""
    default = _default(f)
    if default is None:
        found = _OPTIONAL.fullmatch(str(f.type))
        if found is None:
            raise TypeError(f"config field {f.name}: a default of none needs an annotation "
                            f"Optional[int|float|bool|str], got {f.type!r}")
        return {"int": int, "float": float, "bool": bool, "str": str}[found.group(1)]
    return type(default)


def _parse(f, raw: str):
    """Parse a command-line string into the field's type."""
    kind = _base_type(f)
    if raw.lower() in ("none", "null") and _nullable(f):
        return None
    try:
        if kind is bool:
            if raw.lower() in ("true", "yes", "1", "on"):
                return True
            if raw.lower() in ("false", "no", "0", "off"):
                return False
            raise ValueError
        if kind is list:  # 300,100 or, as in YAML, [300, 100]
            return [int(v) for v in raw.replace(" ", "").strip("[]").split(",") if v]
        if kind is dict:
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError:
                raise ValueError from None
            if not isinstance(value, dict):
                raise ValueError
            return value
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        return raw
    except ValueError:
        expected = {bool: "true or false", list: "comma-separated integers", int: "an integer",
                    float: "a number", dict: "key: value pairs"}[kind]
        allowed = _bounds_text(f.metadata)
        raise ConfigError(f"{f.name}: {raw!r} is not {expected}"
                          + (f"; allowed: {allowed}" if allowed else "")) from None


def checked_value(key: str, value):
    """``value`` as config field ``key`` holds it (``80,120`` -> ``[80, 120]``), its type
    and allowed values checked as a config checks them; a one-line :class:`ConfigError`
    naming the key otherwise (for filters over stored runs, ``sddlib ls --set``)."""
    fields = {f.name: f for f in dataclasses.fields(ExperimentConfig)}
    if key not in fields or isinstance(value, dict):
        raise ConfigError(f"--set: {key!r} is not a config key; allowed: "
                          f"{', '.join(sorted(fields))}")
    value = _coerce(fields[key], value)
    _check_field(fields[key], value)
    return value


def _check_field(f, value) -> None:
    """One field's value against its own metadata: its choices, or its bounds (each item
    of a list); a one-line :class:`ConfigError` naming the field otherwise."""
    meta = f.metadata
    if value is None:
        return
    allowed = _choices(meta)
    if allowed and value not in allowed:
        raise ConfigError(f"{f.name}: {value!r} is not allowed; allowed: {', '.join(allowed)}")
    bounds = _bounds_text(meta)
    low, high = meta["low"], meta["high"]
    above, below = meta.get("above"), meta.get("below")
    for item in (value if isinstance(value, list) else [value]):
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            if not math.isfinite(item):
                raise ConfigError(f"{f.name}: {item!r} is not a finite number"
                                  + (f"; allowed: {bounds}" if bounds else ""))
            if ((low is not None and item < low) or (high is not None and item > high)
                    or (above is not None and item <= above)
                    or (below is not None and item >= below)):
                raise ConfigError(f"{f.name}: {item!r} is out of range; allowed: {bounds}")


def _coerce(f, value):
    """Check types of values given in Python or YAML (ints where floats are fine)."""
    kind = _base_type(f)
    allowed = (", ".join(_choices(f.metadata)) if _choices(f.metadata)
               else _bounds_text(f.metadata))
    allowed = f"; allowed: {allowed}" if allowed else ""
    if value is None:
        if _nullable(f):
            return None
        raise ConfigError(f"{f.name}: none is not allowed; give a value{allowed}")
    if isinstance(value, str) and kind is not str:
        return _parse(f, value)
    if kind is list and isinstance(value, int) and not isinstance(value, bool):
        value = [value]  # `--set widths=300`: one hidden layer
    if kind is str and isinstance(value, bool) and {"on", "off"} <= set(_choices(f.metadata)
                                                                        or ()):
        value = "on" if value else "off"  # YAML reads a bare on/off as a bool
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        list: isinstance(value, (list, tuple)) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value),
        dict: isinstance(value, dict) and all(isinstance(k, str) for k in value),
    }[kind]
    if not ok:
        expected = {bool: "true or false", list: "a list of integers", int: "an integer",
                    float: "a number", str: "a string",
                    dict: "key: value pairs, e.g. {model: mlp}"}[kind]
        raise ConfigError(f"{f.name}: {value!r} is not {expected}{allowed}")
    if kind is float:
        return float(value)
    if kind in (list, dict):
        return kind(value)
    return value


# The fields by name, and those whose value is a dict (``--set teacher.model=mlp`` sets
# one entry): read from the fields themselves.
_FIELDS = {f.name: f for f in dataclasses.fields(ExperimentConfig)}
_DICT_FIELDS = tuple(name for name, f in _FIELDS.items() if isinstance(_default(f), dict))
