"""How many torch threads a run trains with, and the cores this process may use.

A run's thread count is part of how its numbers come out: oneDNN and MKL split their sums
by thread, so one config and seed trained with one thread and with two differ in the last
float digits, which training amplifies. So the count follows the run (``threads``; by
default 1 for the small models on the CPU, every usable core otherwise), wherever it
trains: alone, in a worker process (:mod:`sddlib.scheduling.parallel`), from the command
line or from the book; ``meta.json`` records it as ``torch_threads``.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator, Union

import torch

from sddlib.models.architectures import model_spec


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def run_threads(config, device: Union[torch.device, str]) -> int:
    """The torch threads ``config`` trains with on ``device`` (see the module docstring)."""
    if config.threads is not None:
        return config.threads
    if torch.device(device).type == "cpu" and model_spec(config.model).small:
        return 1
    return usable_cores()


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` torch intra-op threads, then restore the old count."""
    old = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(old)
