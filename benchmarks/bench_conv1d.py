"""The default 1-D CNN's convolutions as one matmul over their taps, against torch's conv1d.

The quick profile's runs are mostly the MNIST-1D CNN (``cnn1d``: 1 -> 32 -> 32 -> 32
channels, kernels 5, 3, 3, on signals of 40), and their epochs are spent in
``convolution_backward`` and ``mkldnn_convolution`` (oneDNN). A convolution is a matmul of
the unfolded input (batch x positions, channels x taps) with the weights (taps x outputs),
so it can run on the matmul kernels that reach several times conv1d's FLOP/s on this CPU.
Measured here, forward and backward of the CNN's three convolutions at batch 128 with one
torch thread (what a small model trains with), the same numbers to float tolerance
(checked before timing):

- ``unfold + einsum``: the whole convolution and its autograd as tensor ops;
- ``unfold + addmm``: the same as one explicit matmul per layer;
- ``custom backward``: oneDNN's forward, the weight gradient as one matmul and the input
  gradient from ``torch.nn.grad.conv1d_input``.

Each is reported as time per step over conv1d's in the same process (below 1: faster).

    python benchmarks/bench_conv1d.py [REPEATS]
"""
from __future__ import annotations

import sys

import common
import torch
from torch.nn import functional as F

from sddlib.engine import threads

BATCH, LENGTH, WIDTH = 128, 40, 32
LAYERS = [(1, WIDTH, 5, 1, 2), (WIDTH, WIDTH, 3, 2, 1), (WIDTH, WIDTH, 3, 2, 1)]


def conv1d(x, w, b, stride, padding):
    return F.conv1d(x, w, b, stride=stride, padding=padding)


def unfold_einsum(x, w, b, stride, padding):
    cols = F.pad(x, (padding, padding)).unfold(2, w.shape[-1], stride)  # (B, C, L, K)
    return torch.einsum("bclk,ock->bol", cols, w) + b[None, :, None]


def unfold_addmm(x, w, b, stride, padding):
    out_channels, channels, taps = w.shape
    cols = F.pad(x, (padding, padding)).unfold(2, taps, stride)
    length = cols.shape[2]
    cols = cols.permute(0, 2, 1, 3).reshape(-1, channels * taps)
    out = torch.addmm(b, cols, w.view(out_channels, -1).t())
    return out.view(x.shape[0], length, out_channels).permute(0, 2, 1)


class _MatmulWeightGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, stride, padding):
        ctx.save_for_backward(x, w)
        ctx.stride, ctx.padding = stride, padding
        return F.conv1d(x, w, b, stride=stride, padding=padding)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        out_channels, channels, taps = w.shape
        cols = F.pad(x, (ctx.padding, ctx.padding)).unfold(2, taps, ctx.stride)
        grad_w = (grad.permute(1, 0, 2).reshape(out_channels, -1)
                  @ cols.permute(0, 2, 1, 3).reshape(-1, channels * taps)).view(w.shape)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.nn.grad.conv1d_input(x.shape, w, grad, stride=ctx.stride,
                                                padding=ctx.padding)
        return grad_x, grad_w, grad.sum((0, 2)), None, None


def custom_backward(x, w, b, stride, padding):
    return _MatmulWeightGrad.apply(x, w, b, stride, padding)


def _network(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    weights = [torch.randn(o, c, k, generator=generator).mul_(0.3).requires_grad_()
               for c, o, k, _, _ in LAYERS]
    biases = [torch.randn(o, generator=generator).requires_grad_() for _, o, _, _, _ in LAYERS]
    x = torch.randn(BATCH, 1, LENGTH, generator=generator)
    return x, weights, biases


def _step(conv, x, weights, biases) -> None:
    h = x
    for (_, _, _, stride, padding), w, b in zip(LAYERS, weights, biases):
        h = torch.relu(conv(h, w, b, stride, padding))
    h.square().mean().backward()


def _grads(conv, x, weights, biases) -> list[torch.Tensor]:
    for p in weights + biases:
        p.grad = None
    _step(conv, x, weights, biases)
    return [p.grad.clone() for p in weights + biases]


def _seconds(conv, x, weights, biases, repeats: int) -> float:
    return common.mean_seconds(lambda: _step(conv, x, weights, biases), repeats, warmup=10)


def main(repeats: int = 300) -> list[tuple[str, str]]:
    with threads.torch_threads(1):
        x, weights, biases = _network()
        reference = _grads(conv1d, x, weights, biases)
        rows = []
        for name, conv in (("unfold + einsum", unfold_einsum), ("unfold + addmm", unfold_addmm),
                           ("custom backward", custom_backward)):
            got = _grads(conv, x, weights, biases)
            worst = max(float((a - b).abs().max() / a.abs().max().clamp_min(1e-12))
                        for a, b in zip(reference, got))
            assert worst < 1e-4, f"{name}: gradients differ from conv1d's by {worst:.1e}"
            ratios = []
            for _ in range(3):  # interleaved, so a busy moment hits both
                base = _seconds(conv1d, x, weights, biases, repeats)
                ratios.append(_seconds(conv, x, weights, biases, repeats) / base)
            ratios.sort()
            rows.append((f"cnn1d convolutions, {name}: step time / conv1d's (1 thread, "
                         f"batch {BATCH}; median of 3)", f"{ratios[1]:.2f}"))
    return common.report(rows)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
