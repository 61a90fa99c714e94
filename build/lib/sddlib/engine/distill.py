"""Distillation from a sparse teacher (DSD², Quetu & Tartaglione, AAAI 2024).

A *student* run learns every level from a fixed *teacher*: a level of another stored run,
in eval mode, never trained further. The loss of a batch, with student logits ``z_s``,
teacher logits ``z_t``, temperature ``T`` and weight ``alpha`` (config
``distill_temperature``, ``distill_alpha``; the paper's 10 and 0.8), is::

    alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * CE(z_s, y)

with the KL divergence averaged over the batch (PyTorch's ``reduction="batchmean"``, as
the paper's code) and ``y`` the labels trained on, noisy where the noise hit. The student
trains its dense level with this loss, then is pruned and retrained with it through the
same retraining modes as any run (:mod:`sddlib.pruning.retrain`).

Which level teaches (config ``distill_from``) is a rule, never a look at the test set:

- ``dense``: the teacher run's level 0;
- ``best-fit``: the teacher run's level with the highest ``val_acc``, its accuracy on a
  validation split held out of the training set (config ``validation_size``, see
  :func:`sddlib.data.datasets.split_validation`); ties go to the lower ``val_loss``, then to the
  denser level. The paper picked its teacher in the best-fit region by hand, from test
  accuracy (REFERENCE.md, section 2); a held-out split makes the choice without it. Only
  levels ``0..levels`` of the teacher's config count, so a teacher run extended later
  does not change the choice.

The teacher run is the student's config without distillation, with the config key
``teacher``'s entries over it (``ExperimentConfig.teacher_config``; it may be another
architecture), computed first if missing, like the lottery run a reinit run needs
(:func:`sddlib.pruning.retrain.runs_needed`). The student's ``meta.json`` records which run and
level taught it.

Teacher logits: without augmentation a batch's teacher logits depend only on which
samples it holds, so they are computed once per run for the whole training set and a
step only indexes them (:class:`Distiller`); with augmentation the teacher sees each
augmented batch the student sees, one extra forward pass per step.
"""
from __future__ import annotations

from typing import Callable, Optional

import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from sddlib.engine import fast


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      labels: torch.Tensor, alpha: float, temperature: float) -> torch.Tensor:
    """The DSD² loss of one batch (see the module docstring); ``alpha = 0`` is plain
    cross-entropy on ``labels``."""
    t = temperature
    kl = F.kl_div(F.log_softmax(student_logits / t, dim=1),
                  F.log_softmax(teacher_logits / t, dim=1), reduction="batchmean",
                  log_target=True)
    return alpha * t * t * kl + (1 - alpha) * F.cross_entropy(student_logits, labels)


def teacher_level(levels: pd.DataFrame, rule: str, last_level: int) -> int:
    """The level of a teacher run that ``rule`` picks from its ``levels.csv`` table,
    among levels ``0..last_level``."""
    if rule == "dense":
        return 0
    if rule != "best-fit":
        raise ValueError(f"distill_from: {rule!r} picks no level; allowed: dense, best-fit")
    candidates = levels[levels.level <= last_level]
    if "val_acc" not in candidates or candidates.val_acc.isna().all():
        raise ValueError("distill_from: best-fit needs the teacher run's val_acc column; "
                         "allowed: a teacher with validation_size >= 1")
    best = candidates.sort_values(["val_acc", "val_loss", "level"],
                                  ascending=[False, True, True]).iloc[0]
    return int(best.level)


class Distiller:
    """The loss a distilling student trains with: ``loss(model, x, y, index)``, where ``x``
    is the prepared batch and ``index`` its samples' positions in the training set
    (what :func:`sddlib.engine.train.train_level` passes as ``distill``).

    ``teacher`` is put in eval mode and frozen. ``teacher_input``, if given, maps the
    student's prepared inputs to the teacher's (a teacher trained on another subset of a
    signal dataset was standardised with other statistics). ``cached``: the teacher's
    logits on the whole training set (:meth:`precompute`), used instead of a forward pass
    per step when the batches are not augmented.
    """

    def __init__(self, teacher: nn.Module, alpha: float, temperature: float,
                 speed: Optional[fast.Speed] = None,
                 teacher_input: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
        self.teacher = teacher.eval().requires_grad_(False)
        self.alpha, self.temperature = alpha, temperature
        self.speed = speed or fast.Speed()
        self.teacher_input = teacher_input
        self.cached: Optional[torch.Tensor] = None
        self._loss = student_loss(self.speed)

    @torch.no_grad()
    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's float32 logits on a prepared batch."""
        if self.teacher_input is not None:
            x = self.teacher_input(x)
        with self.speed.autocast(x.device.type):
            return self.teacher(x).float()

    def precompute(self, inputs, batch_size: int = 2048) -> "Distiller":
        """Keep the teacher's logits on every training sample of ``inputs`` (``train.Inputs``)
        for steps on unaugmented batches."""
        chunks = []
        for start in range(0, inputs.num_train, batch_size):
            x = inputs.x_train[start:start + batch_size]
            chunks.append(self.teacher_logits(inputs.prepare(fast.to_memory_format(x,
                                                                                  self.speed))))
        self.cached = torch.cat(chunks)
        return self

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             index: torch.Tensor) -> torch.Tensor:
        target = self.cached[index] if self.cached is not None else self.teacher_logits(x)
        return self._loss(model, x, y, target, self.alpha, self.temperature)


def _student_fp32(model, x, y, teacher_logits, alpha, temperature):
    return distillation_loss(model(x), teacher_logits, y, alpha, temperature)


def _student_bf16(model, x, y, teacher_logits, alpha, temperature):
    with torch.autocast(x.device.type, dtype=torch.bfloat16):
        logits = model(x)
    return distillation_loss(logits.float(), teacher_logits, y, alpha, temperature)


_EAGER = {"fp32": _student_fp32, "bf16": _student_bf16}
_COMPILED: dict[str, Callable] = {}


def student_loss(speed: fast.Speed) -> Callable:
    """``loss(model, x, y, teacher_logits, alpha, temperature)`` as ``speed`` says: the
    distilling counterpart of :func:`sddlib.engine.fast.model_loss` (bf16 autocast of the forward
    pass, the loss in float32; compiled once per process and precision when asked). The
    teacher's forward pass stays eager, outside the compiled graph: it needs no gradient.
    """
    if not speed.compile:
        return _EAGER[speed.precision]
    if speed.precision not in _COMPILED:
        _COMPILED[speed.precision] = torch.compile(_EAGER[speed.precision], dynamic=False)
    return _COMPILED[speed.precision]
