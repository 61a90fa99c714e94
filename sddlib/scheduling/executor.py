"""The one executor of the plan: start the ready tasks, biggest first, where there is room.

:func:`run_all` computes every unfinished run of a list of configs (:func:`sddlib.scheduling.
plan.plan`: each run once, the runs it needs first) on one of three backends:

- **where**: in this process (one worker; :class:`~sddlib.scheduling.backends.InProcess`),
  in worker processes on this machine (:class:`~sddlib.scheduling.backends.LocalPool`: one
  per GPU, or one per core for runs worth a process), or as Ray tasks on a cluster
  (:mod:`sddlib.scheduling.distributed`);
- **stacked or not**: with ``stack`` (``"auto"``: on CUDA, where it pays, see
  :func:`sddlib.scheduling.groups.stacking_pays`) a task is a group of runs trained as one
  stacked ensemble, on whichever backend; it is the plan's choice, not another path;
- **faults**, the same on every backend: a task whose worker is lost (killed, out of
  memory, its machine gone) is started again, up to ``retries`` times, and resumes from its
  last checkpoint where the worker sees the run store; a task that raises is not retried
  (it would raise again). The other tasks go on; the runs that fail are named with a
  one-line reason in the :class:`~sddlib.scheduling.plan.Summary`, and the runs that need
  them are not started;
- **progress**: one bar over the runs, with done, running and failed counts and tqdm's
  estimate of the time left.

Why a scheduler of its own rather than a :mod:`multiprocessing` pool: a pool whose worker
is killed never returns that worker's task (and :mod:`concurrent.futures` breaks the whole
pool, failing every task in flight), so a lost worker could not be told apart and retried.
:class:`~sddlib.scheduling.backends.LocalPool` keeps one pipe per worker process and
watches each process, so the task of a dead worker is known and only it is started again.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Union

import torch
from tqdm import tqdm

from sddlib.config.fields import ExperimentConfig
from sddlib.engine.train import resolve_device, training_device
from sddlib.scheduling import parallel
from sddlib.scheduling.backends import InProcess, LocalPool
from sddlib.scheduling.groups import stacking_pays
from sddlib.scheduling.plan import Summary, Task, plan
from sddlib.storage.store import RunStore

# How many times a task whose worker was lost is started again (Ray's max_retries alike).
RETRIES = 2


def run_all(configs: list[ExperimentConfig], store: RunStore, *,
            workers: Union[int, str] = "auto", ray: Optional[str] = None,
            stack: Union[bool, str] = False, progress: bool = True, retries: int = RETRIES,
            transport: str = "auto", checkpoint_seconds: float = 60.0,
            data_dir: Union[str, Path] = "data/datasets", download: bool = False) -> Summary:
    """Compute every run of ``configs`` not yet finished in ``store``, with the runs they
    need, and say what happened (finished runs are skipped; nothing is computed twice).

    ``workers``: tasks at once. Without ``ray``, ``"auto"`` is one worker process per GPU
    when the runs train on CUDA, else one per core for runs worth a process (see
    :mod:`sddlib.scheduling.parallel`), else 1, which trains in this process (with each
    run's own progress bar when ``progress``). With ``ray`` (an address: ``"auto"``,
    ``"local"`` to start Ray on this machine, or ``host:port``; needs the ``ray`` extra)
    each task is a Ray task asking for its resources
    (:func:`sddlib.scheduling.distributed.resources`), and ``workers`` (a number) caps the
    tasks in flight; ``transport`` is ``"auto"`` (a worker that sees the store writes into
    it) or ``"bytes"`` (every run comes back to this process as bytes; see
    :mod:`sddlib.scheduling.distributed`). ``stack``: train runs that differ only in seed,
    noise and criterion as one stacked ensemble (``"auto"``: where it pays, on CUDA).
    ``retries``: how many times a task whose worker was lost is started again. A task that
    fails does not stop the others; the :class:`Summary` names its runs and why. Without
    ``ray``, a device this machine lacks is bad input, raised before anything starts
    (:func:`sddlib.engine.train.training_device`).
    ``checkpoint_seconds``, ``data_dir`` and ``download`` as for
    :func:`sddlib.engine.experiment.run_experiment`. In a script with several workers, call
    it under ``if __name__ == "__main__":`` (spawned workers import the script).
    """
    started = time.time()
    if isinstance(workers, str) and workers != "auto" or isinstance(workers, bool):
        raise ValueError(f"workers: {workers!r} is not allowed; allowed: auto or an integer >= 1")
    if workers != "auto":
        parallel.parse_workers(str(workers))
    if transport not in ("auto", "bytes"):
        raise ValueError(f"transport: {transport!r} is not allowed; allowed: auto, bytes")
    if stack not in (True, False, "auto"):
        raise ValueError(f"stack: {stack!r} is not allowed; allowed: true, false, auto")
    if stack == "auto":
        stack = bool(configs) and stacking_pays(resolve_device(configs[0].device))
    tasks, reused = plan(configs, store, stack=stack)
    summary = Summary(reused=reused)
    if tasks:
        options = {"checkpoint_seconds": checkpoint_seconds,
                   "data_dir": str(Path(data_dir).resolve()), "download": download,
                   "progress": False}
        if ray is not None:
            from sddlib.scheduling import distributed  # needs the ray extra

            backend = distributed.RayBackend(ray, store, options, retries, transport,
                                             None if workers == "auto" else workers)
        else:  # the runs train on this machine: a device it lacks fails them all alike
            for device in sorted({c.device for task in tasks.values() for c in task.configs}):
                training_device(device)
            count = local_workers(workers, list(tasks.values()))
            backend = LocalPool(count, store, options) if count > 1 else \
                InProcess(store, {**options, "progress": progress})
        _schedule(tasks, backend, retries, progress, summary)
    summary.seconds = time.time() - started
    return summary


def local_workers(workers: Union[int, str], tasks: list[Task]) -> int:
    """How many worker processes train ``tasks`` on this machine (see :func:`run_all`)."""
    if workers != "auto":
        return max(1, min(int(workers), len(tasks)))
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus and any(task.config.device != "cpu" for task in tasks):
        return max(1, min(gpus, len(tasks)))
    return parallel.resolve_workers("auto", [task.configs for task in tasks],
                                    torch.device("cpu"))


def _schedule(tasks: dict[str, Task], backend, retries: int, progress: bool,
              summary: Summary) -> None:
    """Start the ready tasks, biggest first, as ``backend`` has room; record what ends
    (per run: a group's runs end together)."""
    waiting = dict(tasks)
    running: dict[str, Task] = {}
    bar = tqdm(total=sum(len(task.configs) for task in tasks.values()),
               desc=f"sweep ({backend.describe()})", unit="run", disable=not progress,
               dynamic_ncols=True)

    def show():
        bar.set_postfix({"done": len(summary.computed), "running": len(running),
                         "failed": len(summary.failed)})

    def fail(task: Task, why: str) -> None:
        for name in task.names:
            summary.failed[name] = why
        bar.update(len(task.names))

    show()
    try:
        while waiting or running:
            for name, task in list(waiting.items()):
                broken = sorted(task.needs & set(summary.failed))
                if broken:
                    fail(task, f"needs {broken[0]}, which failed")
                    del waiting[name]
                    show()
            computed = set(summary.computed)
            ready = sorted((task for task in waiting.values() if task.needs <= computed),
                           key=lambda task: (-task.cost, task.name))
            for task in ready[:max(backend.capacity - len(running), 0)]:
                del waiting[task.name]
                running[task.name] = task
                backend.start(task)
            show()
            if not running:  # nothing can start: what is left waits for runs never started
                for task in waiting.values():
                    fail(task, f"needs {sorted(task.needs)[0]}, which never ran")
                waiting.clear()
                continue
            for outcome in backend.wait(timeout=1.0):
                task = running.pop(outcome.name)
                if outcome.kind == "done":
                    summary.computed.extend(task.names)
                    bar.update(len(task.names))
                elif outcome.kind == "lost" and task.attempts < retries:
                    task.attempts += 1
                    for name in task.names:
                        summary.retried[name] = task.attempts
                    waiting[outcome.name] = task
                    continue
                elif outcome.kind == "lost":
                    fail(task, f"{outcome.reason}; tried {task.attempts + 1} time(s)")
                else:
                    fail(task, outcome.reason)
                    if outcome.error is not None:
                        summary.errors.update(dict.fromkeys(task.names, outcome.error))
                show()
    finally:
        backend.close()
        bar.close()
