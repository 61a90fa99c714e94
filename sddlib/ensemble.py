"""Stacked ensembles: several runs that share a model shape and schedule, trained as one.

A sparse double descent figure repeats the same experiment over seeds, noise levels and
criteria. Runs that differ only in those share everything that decides the *shape* of
training (architecture, optimiser, batch size, schedule), so one level of all of them can
be trained as one model whose every parameter carries a leading member axis:
``torch.func.stack_module_state`` stacks the weights (and the mask buffers), ``torch.vmap``
over ``torch.func.functional_call`` runs each member's forward on its own batch, and one
backward and one optimiser step serve all members. On a GPU this turns K small launches
into one larger one; on a CPU it mainly saves per-step Python and dispatch work.

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
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from . import train


def train_level_stacked(models: list[nn.Module], inputs: list[train.Inputs],
                        recipe: train.Recipe, *, seeds: list[int], level: int) -> None:
    """Train each of ``models`` through one level as ``train_level`` would, all at once.

    Member ``k`` trains on ``inputs[k]`` with data order and augmentation drawn from
    ``seeds[k]``. The models are left holding their trained weights; their masks (buffers)
    are unchanged.
    """
    check_stackable(models, inputs, seeds)
    params, buffers = torch.func.stack_module_state(models)
    params = {name: nn.Parameter(value.detach()) for name, value in params.items()}
    weights = [params[name[: -len("_mask")]] for name in buffers if name.endswith("_mask")]
    masks = [buffers[name] for name in buffers if name.endswith("_mask")]
    optimizer = train.make_optimizer(nn.ParameterList(params.values()), recipe)
    stacked_loss = torch.vmap(_member_loss(models[0]))

    steps = recipe.steps_per_epoch(inputs[0].num_train)
    total = recipe.epochs * steps
    iteration = recipe.start_iteration
    while iteration < total:
        epoch = iteration // steps
        generators = [torch.Generator().manual_seed(train.derive_seed(seed, level, epoch, "order"))
                      for seed in seeds]
        orders = [torch.randperm(member.num_train, generator=generator).to(member.x_train.device)
                  for member, generator in zip(inputs, generators)]
        for step in range(iteration - epoch * steps, steps):
            batches, targets = [], []
            for member, order, generator in zip(inputs, orders, generators):
                index = order[step * recipe.batch_size:(step + 1) * recipe.batch_size]
                x = member.x_train[index]
                if recipe.augment:
                    x = train.random_crop_flip(x, generator)
                batches.append(member.prepare(x))
                targets.append(member.y_train[index])
            loss = stacked_loss(params, buffers, torch.stack(batches), torch.stack(targets))
            optimizer.zero_grad(set_to_none=False)
            loss.sum().backward()
            with torch.no_grad():
                torch._foreach_mul_([w.grad for w in weights], masks)
            for group in optimizer.param_groups:
                group["lr"] = recipe.lr * recipe.lr_factor(iteration, steps)
            optimizer.step()
            with torch.no_grad():
                torch._foreach_mul_(weights, masks)
            iteration += 1

    with torch.no_grad():
        for k, model in enumerate(models):
            for name, parameter in model.named_parameters():
                parameter.copy_(params[name][k])


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
