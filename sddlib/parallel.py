"""Several runs at once on the CPU: one process per run, one torch thread each.

The default 1-D CNN is too small to keep two cores busy: its small convolutions and
matmuls split poorly over threads, so a second torch thread speeds one run up far less
than twice, while two runs side by side, one thread each, keep both cores working and
get more done per second than one run on every thread (``benchmarks/bench_level.py``,
``bench_flops.py`` and ``bench_stack.py`` measure both; the reference page's
Measurements has the numbers of the development machine). So
:func:`sweep.run_many` with ``workers="auto"`` (what the book and ``sddlib run
--seeds`` use) trains the runs it has to compute in a pool of worker processes, one per
core on the CPU when the runs are big enough to be worth starting a process for, and a
run of a small model (``mlp``, ``cnn1d``) trains with one torch thread on the CPU
wherever it runs.

That last rule is about reproducibility, not speed: the number of torch threads changes
how oneDNN and MKL split their sums, so the same config and seed trained with one thread
and with two differ in the last float digits, which training amplifies. Tying the thread
count to the run (``threads``, default auto: 1 for small models on the CPU, every usable
core otherwise) gives a run the same numbers alone, in a pool, from the command line or
from the book. ``meta.json`` records ``torch_threads``.

The pool is :mod:`multiprocessing` with the ``spawn`` start method (a forked child of a
process whose OpenMP threads have started can hang); each worker imports torch once and
takes run after run. As always with ``spawn``, a script that starts a pool must do so
under ``if __name__ == "__main__":`` (the workers import the script); notebooks and the
``sddlib`` command need nothing. Runs that start from another run's results (``reinit``, re-dense)
wait for a later round, after the runs they need. A worker's failure stops the pool (its
runs keep their checkpoints, as after a kill) and is raised in the caller.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
from typing import Callable, Iterator, Optional, Union

import torch
from tqdm import tqdm

from .data import DATASETS
from .models import model_spec
from .retrain import mode_of

# A worker process takes seconds to start (it imports torch), so a run is worth one when
# it trains at least this many samples in all (levels x epochs x training samples): a few
# times that start-up for the default CNN on one core. Smaller runs (the smoke profile's)
# run in the calling process.
WORTH_A_PROCESS = 200_000


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


def work_size(config) -> int:
    """Samples trained by a whole run (levels x epochs x training samples)."""
    return _levels(config) * config.epochs * (config.train_size or
                                              DATASETS[config.dataset].train_size)


def resolve_workers(workers: Union[str, int], groups: list[list], device) -> int:
    """How many processes train ``groups`` (lists of configs trained together).

    ``"auto"``: on the CPU, one per usable core divided by the runs' threads, at most one
    per group, and 1 (no pool) when there is one group or the runs are small (see
    ``WORTH_A_PROCESS``); on a GPU 1 (there, small runs are stacked instead, see
    :func:`sweep.stacking_pays`). A number is taken as it is (at most one per group).
    """
    if workers == "auto":
        if torch.device(device).type != "cpu" or len(groups) < 2:
            return 1
        sizes = [work_size(group[0]) for group in groups]
        if sum(sizes) / len(sizes) < WORTH_A_PROCESS:
            return 1
        threads = max(run_threads(config, device) for group in groups for config in group)
        return max(1, min(len(groups), usable_cores() // threads))
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


def run_in_pool(rounds: list[list[list]], store, workers: int, progress: bool,
                options: dict, train_group: Callable[[list, object, dict], None]) -> None:
    """Train ``rounds`` (each a list of groups; a round starts when the last one is done)
    in ``workers`` spawned processes, with one progress bar counting levels.

    ``train_group(group, store, options)`` trains one group in a worker; it must be a
    module-level function (the pool pickles it by name), so this module never imports the
    engine that trains.
    """
    groups = [group for round_ in rounds for group in round_]
    total = sum(_levels(config) for group in groups for config in group)
    context = multiprocessing.get_context("spawn")
    bar = tqdm(total=total, desc=f"runs ({workers} processes)", unit="level",
               disable=not progress)
    pool = context.Pool(workers)
    try:
        for round_ in rounds:
            # the biggest first, so that no big run starts last while the other cores idle
            ordered = sorted(round_, key=lambda group: -sum(map(work_size, group)))
            pending = [pool.apply_async(train_group, (group, store, options))
                       for group in ordered]
            while pending:
                pending[0].wait(timeout=2.0)
                for result in [r for r in pending if r.ready()]:
                    result.get()  # raises a worker's exception here
                    pending.remove(result)
                done = sum(_done(store, config) for group in groups for config in group)
                if done > bar.n:
                    bar.update(done - bar.n)
        pool.close()
    except BaseException:
        pool.terminate()  # the runs in flight keep their last checkpoints
        raise
    finally:
        pool.join()
        bar.close()


def _levels(config) -> int:
    return mode_of(config).levels(config) + 1


def _done(store, config) -> int:
    run = store.find(config)  # levels are not part of a run's identity
    return 0 if run is None else min(run.levels_done(), _levels(config))
