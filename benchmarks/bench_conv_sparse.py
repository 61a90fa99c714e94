"""Would a pruned 1-D convolution pay on the CSR kernels? Its unrolled matrix against conv1d.

The quick profile spends most of its training in the MNIST-1D CNN (``cnn1d``), and its
convolutions stay dense-masked on the sparse path (:mod:`sddlib.pruning.sparse` packs
linear layers only). A convolution over a signal is a linear map of the flattened signal
whose matrix (output channels x positions, input channels x positions) has one entry per
kernel tap that lands inside the signal; with the kernel's masked taps left out, it is a
CSR matrix of the kept taps, whose values are the kept weights repeated once per position.
This times, at batch 128 with one torch thread, what a training step needs of each of the
CNN's three convolutions (forward and the weight gradient; the input gradient, which the
second and third also need, is left out, so the CSR side is a lower bound) on that CSR
matrix against ``F.conv1d`` of the masked weight, at random masks of several densities.

Not built into the library: the convolutions fall below the crossing density only in the
last levels of a curve (``benchmarks/MEASUREMENTS.md``), too few to pay for a second path.

    python benchmarks/bench_conv_sparse.py [REPEATS]
"""
from __future__ import annotations

import sys
import warnings

import common
import torch
from bench_conv1d import BATCH, LAYERS, LENGTH, WIDTH
from torch.nn import functional as F

from sddlib.engine import threads

DENSITIES = (1.0, 0.4, 0.2, 0.1, 0.05)

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


def unrolled(channels: int, length: int, taps: int, stride: int, padding: int):
    """Row, column and kernel index of every in-signal tap of the unrolled matrix."""
    out_length = (length + 2 * padding - taps) // stride + 1
    o, t, c, j = torch.meshgrid(torch.arange(WIDTH), torch.arange(out_length),
                                torch.arange(channels), torch.arange(taps), indexing="ij")
    position = t * stride - padding + j
    inside = (position >= 0) & (position < length)
    rows = (o * out_length + t)[inside]
    cols = (c * length + position)[inside]
    source = ((o * channels + c) * taps + j)[inside]
    return rows, cols, source, out_length


def one_layer(channels, length, taps, stride, padding, density, repeats, generator):
    x = torch.randn(BATCH, channels, length, generator=generator)
    mask = (torch.rand(WIDTH, channels, taps, generator=generator) < density).float()
    weight = (torch.randn(WIDTH, channels, taps, generator=generator) * mask).requires_grad_()
    bias = torch.randn(WIDTH, generator=generator).requires_grad_()
    rows, cols, source, out_length = unrolled(channels, length, taps, stride, padding)
    grad = torch.randn(BATCH, WIDTH, out_length, generator=generator)

    def dense_masked():
        y = F.conv1d(x, weight * mask, bias, stride=stride, padding=padding)
        torch.autograd.grad(y, (weight, bias), grad)

    kept = mask.reshape(-1)[source] != 0
    rows, cols, source = rows[kept], cols[kept], source[kept]
    shape = (WIDTH * out_length, channels * length)
    crow = torch.zeros(shape[0] + 1, dtype=torch.long)
    crow[1:] = torch.bincount(rows, minlength=shape[0]).cumsum(0)
    zeros = torch.sparse_csr_tensor(crow, cols, torch.zeros(len(cols)), size=shape,
                                    check_invariants=False)
    flat = weight.detach().reshape(-1)

    def csr() -> tuple[torch.Tensor, torch.Tensor]:
        matrix = torch.sparse_csr_tensor(crow, cols, flat[source], size=shape,
                                         check_invariants=False)
        x_t = x.reshape(BATCH, -1).t().contiguous()
        y = torch.sparse.mm(matrix, x_t).t().reshape(BATCH, WIDTH, out_length)
        y = y + bias[None, :, None]
        g = grad.reshape(BATCH, -1).t().contiguous()
        tap_grads = torch.sparse.sampled_addmm(zeros, g, x_t.t(), beta=0.0).values()
        grad_weight = torch.zeros(flat.numel()).index_add_(0, source, tap_grads)
        grad.sum((0, 2))  # the bias gradient: timed, as conv1d's backward computes it
        return y, grad_weight.view(weight.shape)

    # the two give the same output and the same weight gradient at the kept taps
    # (checked before timing)
    reference = F.conv1d(x, weight * mask, bias, stride=stride, padding=padding)
    reference_grad, = torch.autograd.grad(reference, weight, grad)
    y, grad_weight = csr()
    assert torch.allclose(y.detach(), reference.detach(), atol=1e-4)
    assert torch.allclose(grad_weight, reference_grad, atol=1e-3)
    return common.mean_seconds(dense_masked, repeats), common.mean_seconds(csr, repeats)


def main(repeats: int = 60) -> list[tuple[str, str]]:
    generator = torch.Generator().manual_seed(0)
    rows = []
    length = LENGTH
    with threads.torch_threads(1):
        for number, (channels, _, taps, stride, padding) in enumerate(LAYERS, 1):
            for density in DENSITIES:
                dense, csr = one_layer(channels, length, taps, stride, padding, density,
                                       repeats, generator)
                rows.append((f"conv_sparse: cnn1d conv {number} at {density:.0%} of its "
                             "weights, unrolled CSR / dense-masked conv1d (fwd + weight grad)",
                             f"{csr / dense:.2f}"))
            length = (length + 2 * padding - taps) // stride + 1
    return common.report(rows)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
