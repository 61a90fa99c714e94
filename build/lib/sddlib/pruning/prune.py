"""Pruning: which weights may be pruned, how they are scored, and the masks that result.

A mask is a 0/1 float tensor per prunable weight, kept as a buffer ``<name>_mask`` on the
module that owns the weight, so it moves with the model, shows in its ``state_dict`` and
never changes a shape. Prunable tensors are the weights of convolutions and linear layers;
biases and BatchNorm never are; the output layer only when asked (``prune_output``).

A pruning step is one small function of the scores and the current masks (ShrinkBench's
shape): among the weights still present it removes ``round(rate * remaining)`` with the
lowest scores, over all layers at once (``global``) or in each layer (``layerwise``).
Ties are broken by ``torch.topk`` exactly as ``torch.nn.utils.prune`` does, so global
magnitude masks equal ``global_unstructured(..., L1Unstructured)`` on the same weights.

Criteria: ``magnitude`` |w|; ``gradient`` |w * dL/dw| averaged over several seeded
mini-batches (He et al.'s code used one random batch; averaging is less noisy);
``random`` seeded uniform scores.

Masked weights stay exactly zero: :func:`mask_gradients` zeroes their gradients before the
optimiser step (so momentum and Adam moments of pruned weights stay zero) and
:func:`apply_masks` multiplies the weights after it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import torch
from torch import nn

Masks = dict[str, torch.Tensor]

_PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)


def prunable_parameters(model: nn.Module, prune_output: bool) -> dict[str, nn.Parameter]:
    """Conv and linear weights by parameter name, the output layer only if ``prune_output``."""
    output_name = getattr(model, "output_name", None)
    found = {}
    for module_name, module in model.named_modules():
        if not isinstance(module, _PRUNABLE_TYPES):
            continue
        if module_name == output_name and not prune_output:
            continue
        found[f"{module_name}.weight"] = module.weight
    return found


def attach_masks(model: nn.Module, prune_output: bool) -> None:
    """Give every prunable weight an all-ones mask buffer (the dense model)."""
    for name in prunable_parameters(model, prune_output):
        module, leaf = _owner(model, name)
        if not hasattr(module, f"{leaf}_mask"):
            module.register_buffer(f"{leaf}_mask", torch.ones_like(getattr(module, leaf)))


def get_masks(model: nn.Module) -> Masks:
    """The masks attached to ``model``, by the name of the weight they mask."""
    masks = {}
    for buffer_name, buffer in model.named_buffers():
        if buffer_name.endswith("_mask"):
            masks[buffer_name[: -len("_mask")]] = buffer
    return masks


def set_masks(model: nn.Module, masks: Masks) -> None:
    current = get_masks(model)
    if set(current) != set(masks):
        raise ValueError(f"mask names differ: model has {sorted(current)}, got {sorted(masks)}")
    with torch.no_grad():
        for name, mask in masks.items():
            current[name].copy_(mask)
    apply_masks(model)


def masked_pairs(model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    params = dict(model.named_parameters())
    masks = get_masks(model)
    names = list(masks)
    return [params[n] for n in names], [masks[n] for n in names]


@torch.no_grad()
def apply_masks(model: Optional[nn.Module], pairs=None) -> None:
    weights, masks = pairs or masked_pairs(model)
    if weights:
        torch._foreach_mul_(weights, masks)


@torch.no_grad()
def mask_gradients(model: Optional[nn.Module], pairs=None) -> None:
    weights, masks = pairs or masked_pairs(model)
    grads = [w.grad for w in weights if w.grad is not None]
    if grads:
        torch._foreach_mul_(grads, [m for w, m in zip(weights, masks) if w.grad is not None])


def sparsity(masks: Masks) -> float:
    """Fraction of prunable weights that are pruned, measured from the masks."""
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum().item()) for m in masks.values())
    return 1.0 - kept / total if total else 0.0


def remaining_weights(masks: Masks) -> int:
    return sum(int(m.sum().item()) for m in masks.values())


# ---------------------------------------------------------------------------- criteria
def magnitude_scores(model: nn.Module) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {name: params[name].detach().abs() for name in get_masks(model)}


def random_scores(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.rand(mask.shape, generator=generator).to(mask.device)
            for name, mask in get_masks(model).items()}


def gradient_scores(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                    loss_fn: Callable = nn.functional.cross_entropy) -> dict[str, torch.Tensor]:
    """|w * dL/dw| averaged over ``batches``; the model's train/eval mode is left as it was."""
    params = dict(model.named_parameters())
    names = list(get_masks(model))
    totals = {name: torch.zeros_like(params[name]) for name in names}
    count = 0
    for inputs, targets in batches:
        model.zero_grad(set_to_none=True)
        loss_fn(model(inputs), targets).backward()
        for name in names:
            totals[name] += (params[name].detach() * params[name].grad).abs()
        count += 1
    model.zero_grad(set_to_none=True)
    if count == 0:
        raise ValueError("gradient_batches: need at least one batch")
    return {name: total / count for name, total in totals.items()}


@dataclass
class ScoreInputs:
    """What a criterion may use beside the weights: a seed of its own for this run and
    level (``derive_seed(run seed, level, criterion name)``) and ``batches()``, seeded
    training mini-batches (``gradient_batches`` of them)."""

    seed: int
    batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]


@dataclass(frozen=True)
class Criterion:
    """``score(model, inputs)`` returns a score per prunable weight tensor (named as in
    :func:`get_masks`); the lowest-scored surviving weights are pruned. ``fields``: the
    config fields it reads beyond the weights (they stay out of other criteria's
    identities)."""

    score: Callable[[nn.Module, ScoreInputs], dict[str, torch.Tensor]]
    fields: tuple[str, ...] = ()


CRITERIA: dict[str, Criterion] = {
    "magnitude": Criterion(lambda model, inputs: magnitude_scores(model)),
    "gradient": Criterion(lambda model, inputs: gradient_scores(model, inputs.batches()),
                          fields=("gradient_batches",)),
    "random": Criterion(lambda model, inputs: random_scores(model, inputs.seed)),
}


def register_criterion(name: str, score: Callable[[nn.Module, ScoreInputs], dict],
                       fields: tuple[str, ...] = ("gradient_batches",)) -> None:
    """Make ``name`` a pruning criterion (``ExperimentConfig(criterion=name)``): ``score``
    as :class:`Criterion` says, run on the previous level's trained weights. ``fields``
    defaults to ``gradient_batches`` (what ``inputs.batches()`` reads); pass ``()`` for a
    criterion that never calls it."""
    CRITERIA[name] = Criterion(score, tuple(fields))


def criterion(name: str) -> Criterion:
    if name not in CRITERIA:
        raise ValueError(f"criterion: unknown {name!r}; allowed: {', '.join(CRITERIA)}")
    return CRITERIA[name]


# ---------------------------------------------------------------------------- pruning step
def prune_masks(scores: dict[str, torch.Tensor], masks: Masks, rate: float,
                scope: str = "global") -> Masks:
    """New masks with ``round(rate * remaining)`` more of the lowest-scored weights removed."""
    if scope == "global":
        names = list(masks)
        flat_scores = torch.cat([scores[n].reshape(-1) for n in names])
        flat_masks = torch.cat([masks[n].reshape(-1) for n in names])
        flat_new = _prune_flat(flat_scores, flat_masks, rate)
        new, offset = {}, 0
        for name in names:
            size = masks[name].numel()
            new[name] = flat_new[offset: offset + size].view_as(masks[name])
            offset += size
        return new
    if scope == "layerwise":
        return {name: _prune_flat(scores[name].reshape(-1), mask.reshape(-1), rate).view_as(mask)
                for name, mask in masks.items()}
    raise ValueError(f"scope: unknown {scope!r}; allowed: global, layerwise")


def _prune_flat(scores: torch.Tensor, mask: torch.Tensor, rate: float) -> torch.Tensor:
    alive = mask.bool()
    remaining = int(alive.sum().item())
    count = round(rate * remaining)
    new = mask.clone()
    if count == 0:
        return new
    alive_index = alive.nonzero().squeeze(1)
    lowest = torch.topk(scores[alive_index], k=count, largest=False).indices
    new[alive_index[lowest]] = 0
    return new


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    module_name, _, leaf = name.rpartition(".")
    return model.get_submodule(module_name) if module_name else model, leaf


def expected_sparsity(level: int, rate: float = 0.2) -> float:
    """1 - (1 - rate)^level, the sparsity iterative pruning reaches after ``level`` steps."""
    return 1.0 - (1.0 - rate) ** level


def check_masks_hold(model: nn.Module) -> Optional[str]:
    """Name of the first weight with a nonzero value under a zero mask, or None."""
    params = dict(model.named_parameters())
    for name, mask in get_masks(model).items():
        if bool((params[name].detach()[mask == 0] != 0).any()):
            return name
    return None
