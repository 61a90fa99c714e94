"""How many runs train at once on this machine, and which runs are worth a process.

The default 1-D CNN is too small to keep two cores busy: its small convolutions and
matmuls split poorly over threads, so a second torch thread speeds one run up far less
than twice, while two runs side by side, one thread each, keep both cores working and
get more done per second than one run on every thread (``benchmarks/bench_level.py``,
``bench_flops.py`` and ``bench_stack.py`` measure both; the reference page's
Measurements has the numbers of the development machine). So ``workers="auto"`` (what the
book and ``sddlib run --seeds`` use) trains the runs it has to compute in worker
processes (:class:`sddlib.scheduling.backends.LocalPool`), one per core on the CPU when
the runs are big enough to be worth starting a process for (:func:`resolve_workers`); a
run of a small model trains with one torch thread on the CPU wherever it runs
(:mod:`sddlib.engine.threads` says why: its numbers must not depend on where it ran).

The workers are :mod:`multiprocessing` processes with the ``spawn`` start method (a forked
child of a process whose OpenMP threads have started can hang); each imports torch once
and takes run after run. As always with ``spawn``, a script that starts workers must do so
under ``if __name__ == "__main__":`` (the workers import the script); notebooks and the
``sddlib`` command need nothing.
"""
from __future__ import annotations

from typing import Optional, Union

import torch

from sddlib.data.datasets import DATASETS
from sddlib.engine import threads
from sddlib.pruning.retrain import mode_of

# A worker process takes seconds to start (it imports torch), so a run is worth one when
# it trains at least this many samples in all (levels x epochs x training samples): a few
# times that start-up for the default CNN on one core. Smaller runs (the smoke profile's)
# run in the calling process.
WORTH_A_PROCESS = 200_000


def work_size(config) -> int:
    """Samples trained by a whole run (levels x epochs x training samples)."""
    return _levels(config) * config.epochs * (config.train_size or
                                              DATASETS[config.dataset].train_size)


def resolve_workers(workers: Union[str, int], groups: list[list], device) -> int:
    """How many processes train ``groups`` (lists of configs trained together).

    ``"auto"``: on the CPU, one per usable core divided by the runs' threads, at most one
    per group, and 1 (no pool) when there is one group or the runs are small (see
    ``WORTH_A_PROCESS``); on a GPU 1 (there, small runs are stacked instead, see
    :func:`sddlib.scheduling.groups.stacking_pays`). A number is taken as it is (at most one
    per group).
    """
    if workers == "auto":
        if torch.device(device).type != "cpu" or len(groups) < 2:
            return 1
        sizes = [work_size(group[0]) for group in groups]
        if sum(sizes) / len(sizes) < WORTH_A_PROCESS:
            return 1
        most = max(threads.run_threads(config, device) for group in groups for config in group)
        return max(1, min(len(groups), threads.usable_cores() // most))
    return min(_checked(workers, workers), max(1, len(groups)))


def parse_workers(text: Optional[str], name: str = "workers") -> Union[str, int]:
    """``"auto"`` or a positive integer from the command line or the environment."""
    if text is None or text == "auto":
        return "auto"
    try:
        return _checked(int(text), text, name)
    except ValueError:
        return _checked(None, text, name)


def _checked(value, given, name: str = "workers") -> int:
    """``value`` if it is an integer >= 1, else the one-line error naming ``given``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: {given!r} is not allowed; allowed: auto or an integer >= 1")
    return value


def _levels(config) -> int:
    return mode_of(config).levels(config) + 1
