"""Learning distance (He et al. 2022): how far training moves a level's trainable weights.

For a level with mask ``m`` whose training starts from the weights ``w_start`` and ends at
``w_final``, the learning distance is

    ||m * (w_final - w_start)||_2

``w_start`` is what the retraining mode starts the level from: the original init for the
dense level 0 and for lottery rewinding to iteration 0, the rewind point for later rewind
points, the previous level's trained weights for ``finetune`` and ``lr-rewind``, a fresh
init for ``scratch`` and ``reinit`` (``Experiment.start_state`` says which). Pruned
weights are zero in both, so only the weights the level can train count. This is the
paper's quantity: its blog says that in the last phase "it is difficult for the learning
distance to rise again due to too few trainable parameters", and its code's distance
penalty sums ``||param - init||^2`` over the level's own masked starting state.

An earlier sddlib measured ``||w_init - w_final||`` over all weights, pruned ones counted
as 0 against the dense init: that tends to ``||w_init||`` as sparsity grows, so it
measured sparsity, not learning. Runs stored with it are recomputed from their
checkpoints (``checkpoints.upgrade_learning_distance``); :data:`VERSION` marks which
definition a run's ``levels.csv`` holds.

Which tensors count is not published. We take every conv and linear weight (state-dict
entries named ``*.weight`` with two or more dimensions, the output layer included whether
it is pruned or not) and leave out biases and BatchNorm parameters: they are never
pruned, and on the models here they hold a small share of the parameters.
"""
from __future__ import annotations

from typing import Mapping

import torch

VERSION = 2  # the masked, from-the-level's-start definition above


def weight_names(state: Mapping[str, torch.Tensor]) -> list[str]:
    """The conv and linear weight tensors of a state dict: what the distance is taken over."""
    return [name for name, value in state.items()
            if name.endswith(".weight") and value.dim() >= 2]


def learning_distance(start: Mapping[str, torch.Tensor], final: Mapping[str, torch.Tensor],
                      masks: Mapping[str, torch.Tensor]) -> float:
    """``||m * (w_final - w_start)||_2`` over :func:`weight_names`; a tensor without a mask
    (an output layer left unpruned) counts whole."""
    return sum(squared_by_layer(start, final, masks).values()) ** 0.5


def squared_by_layer(start: Mapping[str, torch.Tensor], final: Mapping[str, torch.Tensor],
                     masks: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """The squared distance of each weight tensor, keyed by its module's name."""
    squares = {}
    for name in weight_names(final):
        moved = final[name].float() - start[name].float()
        if name in masks:
            moved = moved * masks[name].to(moved.device, moved.dtype)
        squares[name[: -len(".weight")]] = float(moved.pow(2).sum())
    return squares
