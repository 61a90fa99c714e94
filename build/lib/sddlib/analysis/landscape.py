"""The loss landscape around a trained (sparse) network: why sparse double descent happens.

He et al. ask whether flatness explains the curve: they draw the loss along a
filter-normalised random direction around each solution (Li et al. 2018) and the loss on
the straight line from a sparse solution to its re-dense solution. This module computes
both, and two numbers the paper did not use that measure sharpness without a picture:
the top eigenvalues of the training-loss Hessian and its trace.

For a pruned network every quantity lives on the weights that are still there:

- the *weights* are every conv and linear weight tensor (the output layer included, as
  for the learning distance); biases and BatchNorm parameters are left out, as Li et al.
  leave them out of their directions;
- a random direction is zero on pruned entries, and the Hessian is restricted to the
  unpruned entries of those weights: its size is the number of weights left.

Losses, accuracies and Hessians are taken with BatchNorm in eval mode (its running
statistics), the network the run's evaluation reports on. ``x`` arguments are raw
inputs (as stored in :class:`train.Inputs`); they are prepared here.

The Hessian-vector products, Lanczos and Hutch++ come from ``hessian-eigenthings``; this
is the only module that imports it.
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Sequence

import pandas as pd
import torch
from hessian_eigenthings import (
    HessianOperator,
    LambdaOperator,
    hutch_plus_plus,
    lanczos,
    supervised_loss,
)
from torch import nn
from torch.nn import functional as F

from sddlib.base.cache import cached
from sddlib.base.files import load_torch
from sddlib.engine import checkpoints, train
from sddlib.engine.checkpoints import load_level
from sddlib.engine.experiment import run_experiment
from sddlib.models import architectures as models
from sddlib.pruning import prune

Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]


def _code():
    """The modules whose source the per-run results below depend on (their cache key)."""
    import sys

    return (sys.modules[__name__], checkpoints, models, prune, train)

# Central-difference step of the finite-difference Hessian-vector product (see
# restricted_hessian): small enough to step over few ReLU kinks, large enough for float32.
FD_STEP = 2e-4


def filter_normalised_direction(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """A random direction over every parameter of ``model``, filter-normalised (Li et al.).

    Every conv and linear weight gets Gaussian entries, zeroed where its mask is 0; then
    each filter (output row of a linear layer, output channel of a convolution) is scaled
    to the norm of the same filter of the weights, so a step ``alpha`` moves every filter
    by ``alpha`` times its own size. Biases and BatchNorm parameters get zeros.
    """
    generator = torch.Generator().manual_seed(seed)
    weights = _weight_names(model)
    masks = prune.get_masks(model)
    direction = {}
    for name, param in model.named_parameters():
        if name not in weights:
            direction[name] = torch.zeros_like(param)
            continue
        values = torch.randn(param.shape, generator=generator).to(param)
        if name in masks:
            values = values * masks[name]
        axes = tuple(range(1, values.dim()))  # a 2-d conv's filter spans three axes
        scale = torch.linalg.vector_norm(param.detach(), dim=axes, keepdim=True) / (
            torch.linalg.vector_norm(values, dim=axes, keepdim=True) + 1e-12)
        direction[name] = values * scale
    return direction


@torch.no_grad()
def loss_along_direction(model: nn.Module, direction: dict[str, torch.Tensor],
                         alphas: Iterable[float], inputs: train.Inputs, x: torch.Tensor,
                         y: torch.Tensor) -> pd.DataFrame:
    """Loss and accuracy of ``model`` moved to ``w + alpha * direction``, per alpha.

    The model's parameters are restored afterwards.
    """
    params = dict(model.named_parameters())
    saved = {name: param.detach().clone() for name, param in params.items()}
    rows = []
    try:
        for alpha in alphas:
            for name, param in params.items():
                param.copy_(saved[name] + alpha * direction[name])
            rows.append({"alpha": float(alpha), **_measure(model, inputs, x, y)})
    finally:
        for name, param in params.items():
            param.copy_(saved[name])
    return pd.DataFrame(rows, columns=["alpha", "loss", "accuracy"])


@torch.no_grad()
def interpolate(model: nn.Module, state_a: dict, state_b: dict, alphas: Iterable[float],
                inputs: train.Inputs, x: torch.Tensor, y: torch.Tensor) -> pd.DataFrame:
    """Loss and accuracy on the straight line ``(1 - alpha) * a + alpha * b``, per alpha.

    Every floating-point entry of the two state dicts (weights, biases, BatchNorm
    parameters and running statistics) is interpolated. Masks play no part: on the path
    the weights are whatever the mix gives, so a sparse end point and a dense one can be
    joined (the masks are set to ones while measuring). ``model`` is left as it was.
    """
    saved = {key: value.detach().clone() for key, value in model.state_dict().items()}
    device = next(model.parameters()).device
    rows = []
    try:
        for alpha in alphas:
            mixed = {}
            for key, a in state_a.items():
                b = state_b[key]
                if key.endswith("_mask"):
                    mixed[key] = torch.ones_like(a)
                elif a.is_floating_point():
                    mixed[key] = torch.lerp(a.float(), b.float(), float(alpha)).to(a.dtype)
                else:
                    mixed[key] = a
            model.load_state_dict({k: v.to(device) for k, v in mixed.items()})
            rows.append({"alpha": float(alpha), **_measure(model, inputs, x, y)})
    finally:
        model.load_state_dict(saved)
    return pd.DataFrame(rows, columns=["alpha", "loss", "accuracy"])


def training_batches(inputs: train.Inputs, batch_size: int, count: int,
                     seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` seeded mini-batches of the (noisy-label) training set, prepared, for the
    Hessian: a subset, since every Hessian-vector product passes over all of them."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(inputs.num_train, generator=generator)
    batches = []
    for start in range(0, min(count * batch_size, inputs.num_train), batch_size):
        index = order[start:start + batch_size].to(inputs.x_train.device)
        batches.append((inputs.prepare(inputs.x_train[index]), inputs.y_train[index]))
    return batches


def restricted_hessian(model: nn.Module, batches: Batches,
                       method: str = "autograd") -> LambdaOperator:
    """The training-loss Hessian over the unpruned entries of the conv and linear weights.

    The loss is the mean cross-entropy over ``batches`` (the mean of the batches' means).
    ``HessianOperator`` takes the whole conv and linear weight tensors (its
    ``param_filter`` selects whole tensors); the operator returned here works on the
    coordinates whose mask is 1 (all of a tensor without a mask), scattering a vector
    into them before the product and gathering them after, so its size is the number of
    weights left. Biases and BatchNorm parameters are held fixed. The model must be in
    eval mode while the operator is used (see :func:`hessian_top_eigenvalues`).

    ``method`` is hessian-eigenthings' Hessian-vector product: ``"autograd"`` (exact,
    double backward) or ``"finite_difference"`` (central difference of two gradients with
    step ``FD_STEP``). On the CPU, double backward through ``Conv1d`` is far slower than a
    gradient, so the convolutional runs use finite differences. The library's float32
    step, 5e-3, steps over ReLU kinks and overestimates the top eigenvalue; ``FD_STEP`` is
    small enough for the eigenvalues to agree with autograd's
    (``tests/test_landscape.py`` checks the agreement).
    """
    names = _weight_names(model)
    full = HessianOperator(model, list(batches), supervised_loss(F.cross_entropy),
                           param_filter=lambda name, _: name in names, method=method,
                           fd_eps=FD_STEP)
    masks = prune.get_masks(model)
    kept, offset = [], 0
    for name, param in model.named_parameters():
        if name not in names:
            continue
        mask = masks.get(name, torch.ones_like(param))
        kept.append(mask.reshape(-1).nonzero().squeeze(1) + offset)
        offset += param.numel()
    index = torch.cat(kept).to(full.device)

    def matvec(vector: torch.Tensor) -> torch.Tensor:
        spread = torch.zeros(full.size, dtype=full.dtype, device=full.device)
        spread[index] = vector
        return full.matvec(spread)[index]

    return LambdaOperator(matvec, int(index.numel()), device=full.device, dtype=full.dtype)


def hessian_top_eigenvalues(model: nn.Module, batches: Batches, k: int = 3,
                            max_iter: int = 20, tol: float = 1e-4, seed: int = 0,
                            method: str = "autograd") -> list[float]:
    """The ``k`` largest eigenvalues (descending) of :func:`restricted_hessian`.

    Lanczos (with full reorthogonalisation) starts with ``max_iter`` steps and doubles
    them until every Ritz value has ``converged`` (residual below ``tol`` times the value);
    with the default ``2k`` steps hessian-eigenthings returns wrong lower eigenvalues and
    says so only through that flag. At the operator's size Lanczos is exact; a failure
    to converge there is an error.
    """
    with _eval_mode(model):
        operator = restricted_hessian(model, batches, method)
        steps = min(max(max_iter, k), operator.size)
        while True:
            result = lanczos(operator, k=k, max_iter=steps, tol=tol, which="LA",
                             reorthogonalize=True, seed=seed)
            if bool(result.converged.all()):
                return [float(value) for value in result.eigenvalues]
            if steps == operator.size:
                raise RuntimeError(f"hessian_top_eigenvalues: Lanczos did not converge in "
                                   f"{steps} steps (the operator's size)")
            steps = min(2 * steps, operator.size)


def hutchpp_trace(model: nn.Module, batches: Batches, queries: int = 99, seed: int = 0,
                  method: str = "autograd") -> float:
    """Hutch++ (Meyer et al. 2021) estimate of the trace of :func:`restricted_hessian`.

    hessian-eigenthings has Hutch++ (``hutch_plus_plus``: a third of the ``queries``
    Hessian-vector products sketch the top of the spectrum, whose trace is taken exactly,
    the rest estimate the remainder with Rademacher probes), so it is used rather than
    written again. With ``queries >= 3 * size`` the sketch spans the whole space and the
    estimate is exact up to rounding.
    """
    with _eval_mode(model):
        operator = restricted_hessian(model, batches, method)
        return float(hutch_plus_plus(operator, num_matvecs=queries, seed=seed).estimate)


# ---------------------------------------------------------------------------- per run
def direction_curves(run, levels: Iterable[int], alphas: Sequence[float], seed: int = 0,
                     data_dir="data/datasets", cache: bool = True) -> pd.DataFrame:
    """Loss and accuracy along a filter-normalised direction around each of ``levels``.

    Measured on the training set with its noisy labels (``split = "train"``) and on the
    test set (``"test"``). Columns: level, sparsity, split, alpha, loss, accuracy. Kept in
    the run's folder and reused (:mod:`sddlib.base.cache`; ``cache=False`` computes afresh).
    """
    levels, alphas = [int(level) for level in levels], [float(a) for a in alphas]
    return cached(run.path, "direction_curves", {"levels": levels, "alphas": alphas,
                                                 "seed": seed},
                  lambda: _direction_curves(run, levels, alphas, seed, data_dir), _code(),
                  enabled=cache)


def _direction_curves(run, levels, alphas, seed, data_dir) -> pd.DataFrame:
    frames = []
    for level, model, inputs in _level_models(run, levels, data_dir):
        direction = filter_normalised_direction(model, seed)
        for split, x, y in _splits(inputs):
            curve = loss_along_direction(model, direction, alphas, inputs, x, y)
            frames.append(curve.assign(level=level, sparsity=_sparsity(model), split=split))
    return _tidy(frames, ["level", "sparsity", "split", "alpha", "loss", "accuracy"])


def sharpness_by_level(run, levels: Iterable[int] | None = None, hessian_batches: int = 4,
                       k: int = 3, trace_queries: int = 30, seed: int = 0,
                       method: str = "autograd", data_dir="data/datasets",
                       cache: bool = True) -> pd.DataFrame:
    """Top Hessian eigenvalue and Hutch++ trace of each level's solution (default: all).

    The Hessian is that of the training loss (noisy labels) over ``hessian_batches``
    seeded mini-batches of the run's batch size; ``method`` as in
    :func:`restricted_hessian`. Columns: level, sparsity, weights (the
    restricted Hessian's size), top_eigenvalue, eigenvalues (all ``k``, descending), trace.
    Kept in the run's folder and reused (:mod:`sddlib.base.cache`; ``cache=False`` computes
    afresh).
    """
    levels = [int(level) for level in (run.levels().level if levels is None else levels)]
    arguments = {"levels": levels, "hessian_batches": hessian_batches, "k": k,
                 "trace_queries": trace_queries, "seed": seed, "method": method}
    return cached(run.path, "sharpness", arguments,
                  lambda: _sharpness_by_level(run, data_dir=data_dir, **arguments),
                  _code(), enabled=cache)


def _sharpness_by_level(run, levels, hessian_batches, k, trace_queries, seed, method,
                        data_dir) -> pd.DataFrame:
    rows = []
    for level, model, inputs in _level_models(run, levels, data_dir):
        batches = training_batches(inputs, run.config.batch_size, hessian_batches, seed)
        eigenvalues = hessian_top_eigenvalues(model, batches, k=k, seed=seed, method=method)
        rows.append({"level": level, "sparsity": _sparsity(model),
                     "weights": restricted_hessian(model, batches).size,
                     "top_eigenvalue": eigenvalues[0], "eigenvalues": eigenvalues,
                     "trace": hutchpp_trace(model, batches, trace_queries, seed, method)})
    return pd.DataFrame(rows)


def redense_paths(run, store, levels: Iterable[int], alphas: Sequence[float],
                  data_dir="data/datasets", progress: bool = False,
                  cache: bool = True) -> pd.DataFrame:
    """The straight line from each level's sparse solution (alpha 0) to its re-dense one.

    The re-dense runs (``redense_level = level``, see ``experiment``) are computed if
    missing. Columns: level, sparsity, split, alpha, loss, accuracy. Kept in the run's
    folder and reused (:mod:`sddlib.base.cache`; ``cache=False`` computes afresh).
    """
    levels, alphas = [int(level) for level in levels], [float(a) for a in alphas]
    return cached(run.path, "redense_paths", {"levels": levels, "alphas": alphas},
                  lambda: _redense_paths(run, store, levels, alphas, data_dir, progress),
                  _code(), enabled=cache)


def _redense_paths(run, store, levels, alphas, data_dir, progress) -> pd.DataFrame:
    frames = []
    for level, model, inputs in _level_models(run, levels, data_dir):
        redense = run_experiment(run.config.replace(redense_level=level), store,
                                 progress=progress, data_dir=data_dir)
        sparse = load_torch(run.level_dir(level) / "final.pt")
        dense = load_torch(redense.level_dir(0) / "final.pt")
        for split, x, y in _splits(inputs):
            path = interpolate(model, sparse, dense, alphas, inputs, x, y)
            frames.append(path.assign(level=level, sparsity=_sparsity(model), split=split))
    return _tidy(frames, ["level", "sparsity", "split", "alpha", "loss", "accuracy"])


def barrier_height(path: pd.DataFrame) -> float:
    """The largest rise of the loss above the straight line between the path's two ends.

    ``max_alpha [L(alpha) - ((1 - alpha) L(0) + alpha L(1))]`` for one path (columns alpha,
    loss); 0 when the loss never rises above that line (no barrier).
    """
    path = path.sort_values("alpha")
    alpha, loss = path["alpha"].to_numpy(), path["loss"].to_numpy()
    line = loss[0] + (alpha - alpha[0]) / (alpha[-1] - alpha[0]) * (loss[-1] - loss[0])
    return float(max((loss - line).max(), 0.0))


def barrier_table(paths: pd.DataFrame) -> pd.DataFrame:
    """One row per (level, split) of :func:`redense_paths`: the ``barrier``
    (:func:`barrier_height`) and the accuracy at the path's first alpha (``sparse_acc``,
    the sparse solution when alphas run from 0) and last alpha (``redense_acc``).
    Columns level, sparsity, split, barrier, sparse_acc, redense_acc."""
    rows = [{"level": level, "sparsity": path.sparsity.iloc[0], "split": split,
             "barrier": barrier_height(path), "sparse_acc": path.accuracy.iloc[0],
             "redense_acc": path.accuracy.iloc[-1]}
            for (level, split), path in paths.groupby(["level", "split"])]
    return pd.DataFrame(rows, columns=["level", "sparsity", "split", "barrier", "sparse_acc",
                                       "redense_acc"])


# ---------------------------------------------------------------------------- helpers
def _level_models(run, levels: Iterable[int], data_dir):
    """(level, model with that level's weights and masks, inputs), the data loaded once."""
    levels = list(levels)
    if not levels:
        return
    model, inputs = load_level(run, levels[0], data_dir=data_dir)
    device = inputs.x_train.device
    for level in levels:
        state = load_torch(run.level_dir(level) / "final.pt")
        model.load_state_dict({k: v.to(device) for k, v in state.items()})
        yield level, model, inputs


def _splits(inputs: train.Inputs):
    return [("train", inputs.x_train, inputs.y_train), ("test", inputs.x_test, inputs.y_test)]


def _sparsity(model: nn.Module) -> float:
    return prune.sparsity(prune.get_masks(model))


def _tidy(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]


def _weight_names(model: nn.Module) -> set[str]:
    """Conv and linear weights, the output layer included: the learning distance's set."""
    return set(prune.prunable_parameters(model, prune_output=True))


def _measure(model: nn.Module, inputs: train.Inputs, x: torch.Tensor, y: torch.Tensor) -> dict:
    correct, loss = train.evaluate(model, inputs, x, y)
    return {"loss": loss, "accuracy": float(correct.float().mean())}


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
