"""Stacked ensembles: several runs that share a model shape and schedule, trained as one.

A sparse double descent figure repeats the same experiment over seeds, noise levels and
criteria. Runs that differ only in those share everything that decides the *shape* of
training (architecture, optimiser, batch size, schedule), so one level of all of them can
be trained as one model whose every parameter carries a leading member axis:
``torch.func.stack_module_state`` stacks the weights (and the mask buffers), ``torch.vmap``
over ``torch.func.functional_call`` runs each member's forward on its own batch, and one
backward and one optimiser step serve all members. On a GPU this turns K small launches
into one larger one. On a CPU it saves only per-step Python and dispatch work, while the
grouped convolutions vmap makes cost about as much per member as K separate runs, so
there it does not pay (``benchmarks/bench_stack.py`` measures both; the reference page's
Measurements has the numbers of the development machine).

Each member keeps everything that makes it its own run: its weights and masks, its
(noisy) labels, its data order and augmentation, drawn from
``derive_seed(seed, level, epoch, "order")`` exactly as :func:`train.train_level` draws
them. The loss is the *sum* over members of each member's mean cross-entropy, so a
member's gradient is exactly its own, and SGD (momentum, weight decay) and Adam act
elementwise on a stacked tensor; so every member ends where training it alone ends, up
to float rounding (the batched convolutions and matmuls sum in another order;
``tests/test_ensemble.py`` checks 1e-5). Masks act as in :mod:`prune`: the stacked
gradients are multiplied by the stacked masks before the step and the weights after it,
so pruned weights stay exactly zero.

BatchNorm is not supported: training-mode BatchNorm updates its running statistics in
place, which vmap cannot do on a per-member slice of a stacked buffer;
``torch.func.replace_all_batch_norm_modules_`` would only avoid that by not tracking the
statistics at all, which changes what evaluation sees. Models with BatchNorm (the
ResNets and VGGs) are trained one by one with :func:`train.train_level`.

Checkpoints: callbacks see a :class:`StackedState`, and :func:`member_checkpoint` cuts it
into one member's checkpoint in exactly :func:`train.checkpoint_payload`'s format (the
member's ``state_dict`` with its masks, the optimiser ``state_dict`` of that member alone,
the iteration). The optimiser state of SGD (``momentum_buffer``) and Adam (``exp_avg``,
``exp_avg_sq``) is elementwise, so member ``k``'s state is the ``k``-th slice of the stacked
state; the step count is shared. So a member's checkpoint is interchangeable with a single
run's: ``train_level_stacked(..., resume=[...])`` resumes a group from its members'
checkpoints (bit for bit on the same machine), and ``train.train_level(..., resume=...)``
resumes one member alone from its checkpoint.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn
from torch.nn import functional as F

from sddlib.engine import train


@dataclass
class StackedState:
    """What a callback of :func:`train_level_stacked` sees: the stacked weights, buffers and
    optimiser, the members' models (holding their start weights until the level ends) and
    where training stands, as in :class:`train.LevelState`."""
    models: list[nn.Module]
    params: dict[str, nn.Parameter]   # name -> [members, *shape]
    buffers: dict[str, torch.Tensor]  # name -> [members, *shape] (the masks)
    optimizer: torch.optim.Optimizer
    iteration: int      # optimiser steps done since the start of the schedule
    epoch: int          # epochs finished
    total_iterations: int


def train_level_stacked(models: list[nn.Module], inputs: list[train.Inputs],
                        recipe: train.Recipe, *, seeds: list[int], level: int,
                        callbacks: tuple[Callable, ...] = (),
                        resume: Optional[list[dict]] = None,
                        precision: str = "fp32") -> StackedState:
    """Train each of ``models`` through one level as ``train_level`` would, all at once.

    Member ``k`` trains on ``inputs[k]`` with data order and augmentation drawn from
    ``seeds[k]``. The models are left holding their trained weights; their masks (buffers)
    are unchanged. Callbacks get ``("iteration", state)`` after every step and
    ``("epoch", state)`` after every epoch, ``state`` a :class:`StackedState`.
    ``resume``: one checkpoint per member (:func:`member_checkpoint` or
    :func:`train.checkpoint_payload`, written at an epoch end), all at the same iteration.
    ``precision="bf16"``: the forward pass and loss run under bf16 autocast, as the fast
    path's single runs do (:mod:`fast`); stacked training is never compiled.
    """
    check_stackable(models, inputs, seeds)
    iteration = recipe.start_iteration
    if resume is not None:
        if len(resume) != len(models):
            raise ValueError(f"stacked training: {len(resume)} checkpoints for "
                             f"{len(models)} members")
        iterations = {payload["iteration"] for payload in resume}
        if len(iterations) != 1:
            raise ValueError("stacked training: the members' checkpoints are at different "
                             f"iterations {sorted(iterations)}; resume needs one")
        iteration = iterations.pop()
        for model, payload in zip(models, resume):
            model.load_state_dict(payload["model"])
    params, buffers = torch.func.stack_module_state(models)
    params = {name: nn.Parameter(value.detach()) for name, value in params.items()}
    weights = [params[name[: -len("_mask")]] for name in buffers if name.endswith("_mask")]
    masks = [buffers[name] for name in buffers if name.endswith("_mask")]
    optimizer = train.make_optimizer(nn.ParameterList(params.values()), recipe)
    if resume is not None:
        optimizer.load_state_dict(_stack_optimizer_states(
            [payload["optimizer"] for payload in resume], list(params.values())))
    stacked_loss = torch.vmap(_member_loss(models[0]))
    autocast = (torch.autocast(inputs[0].x_train.device.type, dtype=torch.bfloat16)
                if precision == "bf16" else contextlib.nullcontext())

    steps = recipe.steps_per_epoch(inputs[0].num_train)
    total = recipe.epochs * steps
    state = StackedState(models, params, buffers, optimizer, iteration, iteration // steps, total)
    while state.iteration < total:
        epoch = state.iteration // steps
        generators = [torch.Generator().manual_seed(train.derive_seed(seed, level, epoch, "order"))
                      for seed in seeds]
        orders = [torch.randperm(member.num_train, generator=generator).to(member.x_train.device)
                  for member, generator in zip(inputs, generators)]
        for step in range(state.iteration - epoch * steps, steps):
            batches, targets = [], []
            for member, order, generator in zip(inputs, orders, generators):
                index = order[step * recipe.batch_size:(step + 1) * recipe.batch_size]
                x = member.x_train[index]
                if recipe.augment:
                    x = train.random_crop_flip(x, generator)
                batches.append(member.prepare(x))
                targets.append(member.y_train[index])
            with autocast:
                loss = stacked_loss(params, buffers, torch.stack(batches), torch.stack(targets))
            train.take_step(loss.sum(), optimizer, (weights, masks), recipe, steps, state,
                            callbacks)
        train.end_epoch(state, epoch, callbacks)

    with torch.no_grad():
        for k, model in enumerate(models):
            for name, parameter in model.named_parameters():
                parameter.copy_(params[name][k])
    return state


def member_checkpoint(state: StackedState, k: int) -> dict:
    """Member ``k``'s checkpoint, in :func:`train.checkpoint_payload`'s format.

    ``model``: its ``state_dict`` (weights and masks) as if it had trained alone; ``optimizer``:
    the ``state_dict`` its own ``train.make_optimizer`` would have, each elementwise state
    tensor the ``k``-th slice of the stacked one, the step count shared; ``iteration``.
    Every tensor is a copy, so saving it saves one member, not the stack.
    """
    stacked = {**state.params, **state.buffers}
    model = {name: stacked[name][k].detach().clone()
             for name in state.models[k].state_dict(keep_vars=True)}
    whole = state.optimizer.state_dict()
    params = list(state.params.values())
    member_state = {}
    for index, entry in whole["state"].items():
        shape = params[index].shape
        member_state[index] = {
            key: (value[k].clone() if torch.is_tensor(value) and value.shape == shape else
                  value.clone() if torch.is_tensor(value) else copy.deepcopy(value))
            for key, value in entry.items()}
    return {"model": model,
            "optimizer": {"state": member_state,
                          "param_groups": copy.deepcopy(whole["param_groups"])},
            "iteration": state.iteration}


def _stack_optimizer_states(states: list[dict], params: list[torch.Tensor]) -> dict:
    """The stacked optimiser's ``state_dict`` from each member's (see :func:`member_checkpoint`)."""
    first = states[0]
    for other in states[1:]:
        if set(other["state"]) != set(first["state"]) or \
                len(other["param_groups"]) != len(first["param_groups"]):
            raise ValueError("stacked training: the members' optimiser checkpoints differ in "
                             "their parameters")
    stacked = {}
    for index, entry in first["state"].items():
        shape = params[index].shape[1:]
        stacked[index] = {
            key: (torch.stack([other["state"][index][key] for other in states])
                  if torch.is_tensor(value) and value.shape == shape else value)
            for key, value in entry.items()}
    return {"state": stacked, "param_groups": copy.deepcopy(first["param_groups"])}


def check_stackable(models: list[nn.Module], inputs: list[train.Inputs],
                    seeds: list[int]) -> None:
    """Raise ``ValueError`` unless the members can be trained as one stacked model."""
    if not models:
        raise ValueError("stacked training: need at least one model")
    if not len(models) == len(inputs) == len(seeds):
        raise ValueError(f"stacked training: {len(models)} models, {len(inputs)} inputs and "
                         f"{len(seeds)} seeds; need one of each per member")
    for module in models[0].modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            raise ValueError(
                "stacked training: BatchNorm running statistics are updated in place, which "
                "vmap cannot do per member; train models with BatchNorm one by one "
                "(train.train_level)")
    shapes = {name: tensor.shape for name, tensor in models[0].state_dict().items()}
    for model in models[1:]:
        if type(model) is not type(models[0]) or \
                {n: t.shape for n, t in model.state_dict().items()} != shapes:
            raise ValueError("stacked training: members need the same model class and shapes")
    if len({member.num_train for member in inputs}) != 1:
        raise ValueError("stacked training: members need the same number of training samples "
                         "(the schedule counts steps per epoch)")


def _member_loss(model: nn.Module):
    """One member's mean cross-entropy as a function of its weights, buffers and batch."""
    skeleton = copy.deepcopy(model).to("meta")  # the structure only; the weights come in
    skeleton.train()

    def loss(params, buffers, x, y):
        logits = torch.func.functional_call(skeleton, (params, buffers), (x,))
        return F.cross_entropy(logits, y)
    return loss
