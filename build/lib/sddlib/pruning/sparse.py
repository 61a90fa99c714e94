"""Pruned linear layers that cost what their remaining weights cost: the CPU's sparse path.

A pruned level keeps every weight tensor at its dense shape with a 0/1 mask (:mod:`prune`),
so on its own a network with 5% of its weights left multiplies the other 95% by zero.
Within one level the masks do not change, so :func:`pack` swaps each sparse enough linear
layer, for the level's training, for a :class:`PackedLinear`: its parameter is the vector
of the kept weights alone (in the CSR order of the mask), and its products are CSR
kernels of torch (``torch.sparse.addmm`` forward, the transposed pattern for the input
gradient, ``torch.sparse.sampled_addmm`` for the weight gradient at the kept positions
only). The optimiser then steps, and weight decay, momentum and Adam's moments act, on
the kept entries only; nothing needs masking for that layer. When the level ends,
:meth:`Packing.unpack` scatters the trained vector back into the dense weight (zeros
elsewhere) and puts the original layer back, so what is stored, measured and pruned next
is exactly the format of the dense-masked path.

Why this is the same training: a masked weight of the dense path is zero, gets a zero
gradient (masked) and so a zero momentum and zero Adam moments, and SGD and Adam are
elementwise, so the kept entries follow the same updates in both paths; only the order in
which the products sum differs (float rounding, ``tests/test_sparse.py`` compares the
two). Mid-level checkpoints are written and read in the dense format
(:meth:`Packing.payload`, :meth:`Packing.optimizer_state`), so a level checkpointed on
one path resumes on the other.

Which layers: ``nn.Linear`` layers with a mask whose density is at most
:data:`PACK_BELOW` (and nothing a swap would lose: no hook, no other buffer, not shared
by two parents); convolutions stay dense-masked (torch has no sparse convolution
kernel on the CPU). Below :data:`SAMPLED_BELOW` the weight gradient is the sampled
product; between the two it is the dense product read at the kept positions, which is
faster there. Both thresholds are fixed numbers, not timed at run time, so the same
config takes the same path on every machine and gives the same numbers on the same
machine; they come from ``benchmarks/bench_sparse.py``, which times both paths over
densities (its results are in ``benchmarks/MEASUREMENTS.md``). On CUDA, with bf16
autocast or with ``torch.compile`` the layers are never packed (``fast.Speed.sparse``).

Written here rather than taken from a library because none fits: ``torch.sparse``
provides the kernels but no trainable fixed-pattern layer (a sparse ``nn.Parameter``
gets a sparse gradient the fused optimisers do not take), and the pruning libraries
(``torch.nn.utils.prune``, ShrinkBench, open_lth) all train dense-masked.
"""
from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

PACK_BELOW = 0.2      # a masked linear layer is packed at this density or less
SAMPLED_BELOW = 0.1   # below it the weight gradient is torch.sparse.sampled_addmm's

# torch warns once per process that CSR support is in beta; the kernels used here are
# checked against the dense path by the tests
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


@dataclass
class Pattern:
    """Where a packed layer's kept weights are: its dense shape, the CSR of the mask and
    of its transpose, and each kept weight's flat index in the dense tensor."""
    shape: tuple[int, int]
    crow: torch.Tensor
    col: torch.Tensor
    flat: torch.Tensor        # flat index in the dense weight of each value (CSR order)
    t_crow: torch.Tensor
    t_col: torch.Tensor
    t_order: torch.Tensor     # values[t_order] are the transpose's values in its CSR order
    zeros: torch.Tensor       # the pattern with zero values (sampled_addmm's mask)

    @classmethod
    def of(cls, mask: torch.Tensor) -> "Pattern":
        kept = mask.detach() != 0
        flat = kept.reshape(-1).nonzero().squeeze(1)
        csr = kept.to(torch.float32).to_sparse_csr()
        order = torch.arange(flat.numel(), device=mask.device, dtype=torch.float64)
        transposed = torch.sparse_coo_tensor(kept.nonzero().t(), order, kept.shape,
                                             check_invariants=False)
        transposed = transposed.t().coalesce().to_sparse_csr()
        zeros = torch.sparse_csr_tensor(csr.crow_indices(), csr.col_indices(),
                                        torch.zeros(flat.numel(), device=mask.device),
                                        size=kept.shape, check_invariants=False)
        return cls(tuple(kept.shape), csr.crow_indices(), csr.col_indices(), flat,
                   transposed.crow_indices(), transposed.col_indices(),
                   transposed.values().long(), zeros)

    @property
    def density(self) -> float:
        return self.flat.numel() / (self.shape[0] * self.shape[1])

    def matrix(self, values: torch.Tensor) -> torch.Tensor:
        return torch.sparse_csr_tensor(self.crow, self.col, values, size=self.shape,
                                       check_invariants=False)

    def transposed(self, values: torch.Tensor) -> torch.Tensor:
        return torch.sparse_csr_tensor(self.t_crow, self.t_col, values[self.t_order],
                                       size=self.shape[::-1], check_invariants=False)

    def dense(self, values: torch.Tensor) -> torch.Tensor:
        """The dense tensor of ``values`` (zeros elsewhere), of the weight's shape."""
        out = torch.zeros(self.shape[0] * self.shape[1], dtype=values.dtype,
                          device=values.device)
        out[self.flat] = values
        return out.view(self.shape)


class _SparseLinear(torch.autograd.Function):
    """``x @ W.T + b`` with ``W`` given by its kept values; gradients at the kept entries."""

    @staticmethod
    def forward(ctx, x, values, bias, pattern: Pattern):
        # the CSR kernels read the batch transposed and row-major: made once, kept for the
        # weight gradient (as x_t.t(), which sampled_addmm reads without another copy)
        x_t = x.t().contiguous()
        ctx.save_for_backward(x_t, values)
        ctx.pattern = pattern
        product = torch.sparse.mm(pattern.matrix(values), x_t).t()
        return product if bias is None else product + bias

    @staticmethod
    def backward(ctx, grad):
        x_t, values = ctx.saved_tensors
        x = x_t.t()
        pattern = ctx.pattern
        grad_x = grad_values = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.sparse.mm(pattern.transposed(values), grad.t()).t()
        if ctx.needs_input_grad[1]:
            if pattern.density < SAMPLED_BELOW:
                grad_values = torch.sparse.sampled_addmm(pattern.zeros, grad.t(), x,
                                                         beta=0.0).values()
            else:
                grad_values = (grad.t() @ x).reshape(-1)[pattern.flat]
        if ctx.needs_input_grad[2]:
            grad_bias = grad.sum(0)
        return grad_x, grad_values, grad_bias, None


class PackedLinear(nn.Module):
    """A pruned ``nn.Linear`` for one level: its kept weights as one vector ``values``
    (the parameter the optimiser steps), its bias the original layer's own parameter."""

    def __init__(self, linear: nn.Linear, mask: torch.Tensor):
        super().__init__()
        self.pattern = Pattern.of(mask)
        kept = linear.weight.detach().reshape(-1)[self.pattern.flat]
        self.values = nn.Parameter(kept.clone())
        self.bias = linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _SparseLinear.apply(x, self.values, self.bias, self.pattern)

    def dense_weight(self) -> torch.Tensor:
        return self.pattern.dense(self.values.detach())


@dataclass
class _Swap:
    name: str            # the linear layer's module name
    linear: nn.Linear    # the original layer, put back by unpack
    packed: PackedLinear


class Packing:
    """The layers :func:`pack` swapped in ``model`` for one level, and how to go back.

    ``model`` keeps its class and every other module; only the packed layers differ, so
    ``model(x)``, distillation and callbacks work unchanged. Its parameters come in the
    same order as the dense model's (``values`` where ``weight`` was), so an optimiser
    built over either holds them at the same positions, which is what maps its state
    between the two formats.
    """

    def __init__(self, model: nn.Module, swaps: list[_Swap], dense_keys: list[str]):
        self.model, self.swaps, self.dense_keys = model, swaps, dense_keys

    @property
    def layers(self) -> list[str]:
        return [swap.name for swap in self.swaps]

    def unpack(self) -> None:
        """Write the trained values into the dense weights and put the layers back."""
        with torch.no_grad():
            for swap in self.swaps:
                swap.linear.weight.copy_(swap.packed.dense_weight())
                _set_module(self.model, swap.name, swap.linear)
        self.swaps = []

    def state_dict(self) -> dict:
        """``model.state_dict()`` as the dense model would give it (same keys, same order)."""
        packed = self.model.state_dict()
        for swap in self.swaps:
            packed[f"{swap.name}.weight"] = swap.packed.dense_weight()
            packed[f"{swap.name}.weight_mask"] = getattr(swap.linear, "weight_mask")
        return {key: packed[key] for key in self.dense_keys}

    def _packed_indices(self, optimizer: torch.optim.Optimizer) -> dict[int, Pattern]:
        """Index in ``optimizer``'s ``state_dict`` (its parameters in group order) -> the
        pattern of a packed parameter."""
        patterns = {id(swap.packed.values): swap.packed.pattern for swap in self.swaps}
        steps = [p for group in optimizer.param_groups for p in group["params"]]
        return {index: patterns[id(p)] for index, p in enumerate(steps) if id(p) in patterns}

    def optimizer_state(self, optimizer: torch.optim.Optimizer, dense_state: dict) -> dict:
        """A dense-format optimiser ``state_dict`` (a checkpoint's) as ``optimizer``, built
        over the packed model, loads it: each packed parameter's state at the kept entries."""
        return _map_state(dense_state, self._packed_indices(optimizer),
                          lambda tensor, pattern: tensor.reshape(-1)[pattern.flat].clone())

    def payload(self, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
        """The model and optimiser ``state_dict`` in the dense format (write a checkpoint)."""
        return self.state_dict(), _map_state(optimizer.state_dict(),
                                             self._packed_indices(optimizer),
                                             lambda tensor, pattern: pattern.dense(tensor))


def _map_state(state: dict, packed: dict[int, Pattern], convert) -> dict:
    mapped = {}
    for index, entries in state["state"].items():
        pattern = packed.get(int(index))
        if pattern is None:
            mapped[index] = entries
            continue
        mapped[index] = {key: convert(value, pattern)
                         if torch.is_tensor(value) and value.dim() > 0 else value
                         for key, value in entries.items()}
    return {"state": mapped, "param_groups": state["param_groups"]}


def pack(model: nn.Module, enabled: bool = True,
         below: float = PACK_BELOW) -> Optional[Packing]:
    """Swap every masked ``nn.Linear`` of ``model`` whose density is at most ``below`` for
    a :class:`PackedLinear`, in place; ``None`` (nothing swapped) if none is or
    ``enabled`` is false. Call :meth:`Packing.unpack` when the level's training ends."""
    if not enabled:
        return None
    dense_keys = list(model.state_dict())
    reached = Counter(id(module) for _, module in model.named_modules(remove_duplicate=False))
    swaps = []
    for name, module in list(model.named_modules()):
        mask = getattr(module, "weight_mask", None)
        if not _packable(module, reached[id(module)]):
            continue
        if mask.numel() == 0 or float(mask.mean()) > below:
            continue
        packed = PackedLinear(module, mask)
        swaps.append(_Swap(name, module, packed))
    if not swaps:
        return None
    for swap in swaps:
        _set_module(model, swap.name, swap.packed)
    return Packing(model, swaps, dense_keys)


def _packable(module: nn.Module, paths: int) -> bool:
    """A plain ``nn.Linear`` with a mask and nothing a swap would lose: no other buffer,
    no hook, and reached by one path only (a layer shared by two would train twice)."""
    return (type(module) is nn.Linear and set(dict(module.named_buffers())) == {"weight_mask"}
            and paths == 1 and not (module._forward_hooks or module._forward_pre_hooks
                                    or module._backward_hooks or module._backward_pre_hooks))


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, leaf, module)
