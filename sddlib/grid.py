"""Grids of runs: a grid file, its runs, and one scheduler for all of them.

A grid file names the runs of a sweep (``sddlib sweep GRID.yml``)::

    base:                # config keys every run shares (``sddlib keys``)
      model: mlp
      epochs: 40
    grid:                # key: list of values; the runs are their cartesian product
      seed: [0, 1, 2]
      noise: [0.0, 0.2]
      widths: [[300, 100], [30, 10]]   # a list-valued key takes a list of lists

:func:`load_grid` checks every run before anything runs (one line naming ``base.KEY`` or
``grid.KEY`` and the allowed values, as :class:`ConfigError`), and :func:`run_all`
computes the runs that are not finished yet, as the book's whole-profile compute does:

- **one pool, dependencies first**: a run starts once the runs its mode needs
  (:meth:`sddlib.retrain.Mode.needs`: a reinit run's lottery run, a re-dense branch's
  parent) are finished; needed runs missing from the list are added;
- **biggest first** among the runs that can start (:func:`cost`), so that no long run
  starts last while the other workers idle;
- **where**: in this process (one worker), in worker processes on this machine
  (:class:`LocalPool`: one per GPU, or one per core for runs worth a process), or as
  Ray tasks on a cluster (:mod:`sddlib.distributed`);
- **faults**: a run whose worker is lost (killed, out of memory, its machine gone) is
  started again, up to ``retries`` times, and resumes from its last checkpoint where the
  worker sees the run store; a run that raises is not retried (it would raise again).
  Runs that fail are named with a one-line reason in the :class:`Summary`, and the runs
  that need them are not started.
- **progress**: one bar over the runs, with done, running and failed counts and tqdm's
  estimate of the time left.

Why a scheduler of its own rather than :func:`sddlib.sweep.run_many`'s rounds in
:func:`sddlib.parallel.run_in_pool`: that pool stops at a run's first failure, and a
:mod:`multiprocessing` pool whose worker is killed never returns that worker's run (and
:mod:`concurrent.futures` breaks the whole pool, failing every run in flight), so a lost
worker could not be told apart and retried. :class:`LocalPool` keeps one pipe per worker
process and watches each process, so the run of a dead worker is known and only it is
started again. A run itself is trained by :func:`sddlib.sweep.train_group`, as in
:func:`run_many`.
"""
from __future__ import annotations

import functools
import itertools
import multiprocessing
import os
import re
import signal
import time
from dataclasses import dataclass, field
from multiprocessing import connection
from pathlib import Path
from typing import Optional, Union

import torch
import yaml
from tqdm import tqdm

from . import parallel
from .config import ConfigError, ExperimentConfig
from .data import DATASETS
from .models import build_model
from .retrain import mode_of, runs_needed
from .store import RunStore
from .sweep import train_group

# How many times a run whose worker was lost is started again (Ray's max_retries alike).
RETRIES = 2


# ---------------------------------------------------------------------------- grid files
def load_grid(path: Union[str, Path]) -> list[ExperimentConfig]:
    """The runs of a grid file, every one checked; :class:`ConfigError` (one line naming
    ``base.KEY`` or ``grid.KEY``) on the first bad key, value or combination."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"grid: no file {path}" + (" (a folder)" if path.is_dir() else ""))
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"grid: {path}: invalid YAML{where}: "
                          f"{getattr(error, 'problem', None) or error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"grid: cannot read {path}: {error}") from None
    return expand_grid(content, str(path))


def expand_grid(content, source: str = "grid") -> list[ExperimentConfig]:
    """The runs of a grid (the parsed content of a grid file, ``base:`` and ``grid:``),
    one per combination of the grid's values, repeats of one run dropped (a key that does
    nothing for a run, such as ``momentum`` under Adam, gives it twice)."""
    if not isinstance(content, dict) or not content:
        raise ConfigError(f"grid: {source} must hold base: (config keys) and grid: (key: "
                          "list of values)")
    unknown = [key for key in content if key not in ("base", "grid")]
    if unknown:
        raise ConfigError(f"grid: {source}: unknown section {unknown[0]!r}; allowed: base, grid")
    base = content.get("base") or {}
    grid = content.get("grid") or {}
    for section, values in (("base", base), ("grid", grid)):
        if not isinstance(values, dict):
            raise ConfigError(f"{section}: expected key: value pairs, got {values!r}")
    for key, values in grid.items():
        if not isinstance(values, list):
            raise ConfigError(f"grid.{key}: expected a list of values, e.g. {key}: "
                              f"[{values}]; got {values!r}")
        if not values:
            raise ConfigError(f"grid.{key}: empty; give one or more values")
        if key in base:
            raise ConfigError(f"grid.{key}: also set in base; set it in one place")
    alone = None  # what is wrong with base alone; the grid's values may put it right
    try:
        ExperimentConfig.from_dict(dict(base))
    except ConfigError as error:
        if not grid:
            raise _located(error, base, {}) from None
        alone = str(error)
    runs: dict[str, ExperimentConfig] = {}
    keys = list(grid)
    for combination in itertools.product(*(grid[key] for key in keys)):
        chosen = dict(zip(keys, combination))
        try:
            config = ExperimentConfig.from_dict({**base, **chosen})
        except ConfigError as error:
            raise _located(error, base, {} if str(error) == alone else chosen) from None
        name = config.run_name()
        if name not in runs or config.levels > runs[name].levels:
            runs[name] = config
    return list(runs.values())


def _located(error: ConfigError, base: dict, chosen: dict) -> ConfigError:
    """``error`` with its key as ``grid.KEY`` or ``base.KEY``, and the grid values of the
    run it is about when the key is not a grid key."""
    message = str(error)
    match = re.match(r"([A-Za-z_][\w-]*):", message)
    key = match.group(1) if match else None
    where = ", ".join(f"{k}={v!r}" for k, v in chosen.items())
    if key in chosen:
        return ConfigError(f"grid.{message}")
    suffix = f" (with grid {where})" if where else ""
    if key in base:
        return ConfigError(f"base.{message}{suffix}")
    return ConfigError(f"{message}{suffix}")


# ---------------------------------------------------------------------------- scheduling
@dataclass
class Task:
    """One run to compute: its config, the runs it waits for, its estimated cost."""

    config: ExperimentConfig
    needs: set[str]
    cost: float
    attempts: int = 0  # times its worker was lost

    @property
    def name(self) -> str:
        return self.config.run_name()


@dataclass
class Summary:
    """What :func:`run_all` did: runs computed, runs already finished, runs failed (run
    name: one-line reason), runs started again after their worker was lost (how often)."""

    computed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    retried: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def report(self) -> str:
        """A few lines for people: the counts, then each failed run and why."""
        lines = [f"sweep: {len(self.computed)} computed, {len(self.reused)} already finished, "
                 f"{len(self.failed)} failed in {self.seconds:.1f} s"
                 + (f"; {sum(self.retried.values())} restart(s) after a lost worker"
                    if self.retried else "")]
        lines += [f"  failed {name}: {reason}" for name, reason in self.failed.items()]
        return "\n".join(lines)


def plan(configs: list[ExperimentConfig], store: RunStore) \
        -> tuple[dict[str, Task], list[str]]:
    """The runs to compute (with the unfinished runs they need, added) and the names of the
    runs that are finished already."""
    tasks: dict[str, Task] = {}
    reused: list[str] = []

    def visit(config: ExperimentConfig) -> bool:
        """Add ``config`` if unfinished; whether it was."""
        name = config.run_name()
        if name in tasks:
            if config.levels > tasks[name].config.levels:
                tasks[name].config = config
            return True
        found = store.find(config)
        if found is not None and found.is_finished():
            if name not in reused:
                reused.append(name)
            return False
        needs = {needed.run_name() for needed in runs_needed(config) if visit(needed)}
        done = found.levels_done() if found is not None else 0
        tasks[name] = Task(config, needs, cost(config, done))
        return True

    for config in configs:
        visit(config)
    return tasks, reused


def cost(config: ExperimentConfig, levels_done: int = 0) -> float:
    """A run's estimated work, to start the biggest first: levels still to train x epochs
    x training samples x model parameters. A rough proxy for time (a convolution's cost
    also grows with the image size, and a GPU runs small models below its peak), good for
    ordering runs, not for predicting seconds."""
    levels = mode_of(config).levels(config) + 1
    left = max(levels - levels_done, 0) / levels
    return parallel.work_size(config) * left * _parameters(
        config.model, config.dataset, tuple(config.widths), config.model_width, config.depth)


@functools.lru_cache(maxsize=None)
def _parameters(model: str, dataset: str, widths: tuple, width: int, depth: int) -> int:
    """The parameter count of a model, built on torch's meta device (no memory, no time)."""
    config = ExperimentConfig(model=model, dataset=dataset, widths=list(widths), width=width,
                              depth=depth)
    spec = DATASETS[dataset]
    try:
        with torch.device("meta"):
            network = build_model(config, spec.input_shape, spec.num_classes)
    except Exception:  # a registered model that cannot be built on the meta device
        network = build_model(config, spec.input_shape, spec.num_classes)
    return sum(parameter.numel() for parameter in network.parameters())


def run_all(configs: list[ExperimentConfig], store: RunStore, *,
            workers: Union[int, str] = "auto", ray: Optional[str] = None,
            progress: bool = True, retries: int = RETRIES, transport: str = "auto",
            checkpoint_seconds: float = 60.0, data_dir: Union[str, Path] = "data/datasets",
            download: bool = False) -> Summary:
    """Compute every run of ``configs`` not yet finished in ``store``, with the runs they
    need, and say what happened (finished runs are skipped; nothing is computed twice).

    ``workers``: runs at once. Without ``ray``, ``"auto"`` is one worker process per GPU
    when the runs train on CUDA, else one per core for runs worth a process (see
    :mod:`sddlib.parallel`), else 1, which trains in this process. With ``ray`` (an address:
    ``"auto"``, ``"local"`` to start Ray on this machine, or ``host:port``; needs the
    ``ray`` extra) each run is a Ray task asking for its resources
    (:func:`sddlib.distributed.resources`), and ``workers`` (a number) caps the tasks in
    flight; ``transport`` is ``"auto"`` (a worker that sees the store writes into it) or
    ``"bytes"`` (every run comes back to this process as bytes; see
    :mod:`sddlib.distributed`). ``retries``: how many times a run whose worker was lost is
    started again. A run that fails does not stop the others; the :class:`Summary` names
    it and why. ``checkpoint_seconds``, ``data_dir`` and ``download`` as for
    :func:`sddlib.experiment.run_experiment`. In a script with several workers, call it
    under ``if __name__ == "__main__":`` (spawned workers import the script).
    """
    started = time.time()
    if isinstance(workers, str) and workers != "auto" or isinstance(workers, bool):
        raise ValueError(f"workers: {workers!r} is not allowed; allowed: auto or an integer >= 1")
    if workers != "auto":
        parallel.parse_workers(str(workers))
    if transport not in ("auto", "bytes"):
        raise ValueError(f"transport: {transport!r} is not allowed; allowed: auto, bytes")
    tasks, reused = plan(configs, store)
    summary = Summary(reused=reused)
    if tasks:
        options = {"checkpoint_seconds": checkpoint_seconds,
                   "data_dir": str(Path(data_dir).resolve()), "download": download,
                   "progress": False}
        if ray is not None:
            from . import distributed  # Ray's backend, above this module

            backend = distributed.RayBackend(ray, store, options, retries, transport,
                                             None if workers == "auto" else workers)
        else:
            count = local_workers(workers, list(tasks.values()))
            backend = LocalPool(count, store, options) if count > 1 else \
                InProcess(store, options)
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
    return parallel.resolve_workers("auto", [[task.config] for task in tasks],
                                    torch.device("cpu"))


@dataclass
class Outcome:
    """How a started run ended: ``done``, ``failed`` (it raised: ``reason``) or ``lost``
    (its worker died: ``reason``; the run may be started again)."""

    name: str
    kind: str
    reason: str = ""


def _schedule(tasks: dict[str, Task], backend, retries: int, progress: bool,
              summary: Summary) -> None:
    """Start the ready runs, biggest first, as ``backend`` has room; record what ends."""
    waiting = dict(tasks)
    running: dict[str, Task] = {}
    bar = tqdm(total=len(tasks), desc=f"sweep ({backend.describe()})", unit="run",
               disable=not progress, dynamic_ncols=True)

    def show():
        bar.set_postfix({"done": len(summary.computed), "running": len(running),
                         "failed": len(summary.failed)})

    show()
    try:
        while waiting or running:
            for name, task in list(waiting.items()):
                broken = sorted(task.needs & set(summary.failed))
                if broken:
                    summary.failed[name] = f"needs {broken[0]}, which failed"
                    del waiting[name]
                    show()
                    bar.update(1)
            computed = set(summary.computed)
            ready = sorted((task for task in waiting.values() if task.needs <= computed),
                           key=lambda task: (-task.cost, task.name))
            for task in ready[:max(backend.capacity - len(running), 0)]:
                del waiting[task.name]
                running[task.name] = task
                backend.start(task)
            show()
            if not running:  # nothing can start: what is left waits for runs never started
                for name, task in waiting.items():
                    summary.failed[name] = f"needs {sorted(task.needs)[0]}, which never ran"
                    bar.update(1)
                waiting.clear()
                continue
            for outcome in backend.wait(timeout=1.0):
                task = running.pop(outcome.name)
                if outcome.kind == "done":
                    summary.computed.append(outcome.name)
                elif outcome.kind == "lost" and task.attempts < retries:
                    task.attempts += 1
                    summary.retried[outcome.name] = task.attempts
                    waiting[outcome.name] = task
                    continue
                elif outcome.kind == "lost":
                    summary.failed[outcome.name] = (f"{outcome.reason}; tried {task.attempts + 1} "
                                                    "time(s)")
                else:
                    summary.failed[outcome.name] = outcome.reason
                show()
                bar.update(1)
    finally:
        backend.close()
        bar.close()


def reason(error: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    text = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def portable(config: ExperimentConfig) -> ExperimentConfig:
    """``config`` for a worker that sees only its own GPU(s): ``cuda:N`` becomes ``cuda``
    (the device is not part of a run's identity)."""
    return config.replace(device="cuda") if config.device.startswith("cuda:") else config


# ---------------------------------------------------------------------------- backends
class InProcess:
    """One run at a time in this process (a run that raises fails alone)."""

    capacity = 1

    def __init__(self, store: RunStore, options: dict):
        self.store, self.options, self.task = store, options, None

    def describe(self) -> str:
        return "this process"

    def start(self, task: Task) -> None:
        self.task = task

    def wait(self, timeout: float) -> list[Outcome]:
        task, self.task = self.task, None
        try:
            train_group([task.config], self.store, self.options)
        except Exception as error:
            return [Outcome(task.name, "failed", reason(error))]
        return [Outcome(task.name, "done")]

    def close(self) -> None:
        pass


class LocalPool:
    """``count`` spawned worker processes on this machine, one run each at a time.

    Each worker has its own pipe and is watched by its process sentinel, so a worker that
    dies (killed, out of memory) is known with the run it held: that run is reported lost
    (the scheduler starts it again; it resumes from its checkpoint, the store being this
    machine's) and a new worker takes the dead one's place. On a machine with GPUs, worker
    ``k`` sees only GPU ``k mod GPUs`` (``CUDA_VISIBLE_DEVICES``), so one per GPU by default
    and several small runs per GPU when ``count`` is larger.
    """

    def __init__(self, count: int, store: RunStore, options: dict):
        self.store, self.options = store, options
        self.context = multiprocessing.get_context("spawn")
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        self.slots = [_Slot(k, k % gpus if gpus else None) for k in range(count)]
        self.capacity = count

    def describe(self) -> str:
        return f"{self.capacity} processes"

    def start(self, task: Task) -> None:
        slot = next(slot for slot in self.slots if slot.task is None)
        message = (task.name, portable(task.config).to_dict(), str(self.store.root),
                   self.options)
        if slot.process is not None and slot.process.is_alive():
            try:
                slot.conn.send(message)
                slot.task = task
                return
            except OSError:  # it died since it last answered
                slot.process.join()
        slot.launch(self.context)
        slot.conn.send(message)
        slot.task = task

    def wait(self, timeout: float) -> list[Outcome]:
        busy = [slot for slot in self.slots if slot.task is not None]
        connection.wait([slot.conn for slot in busy] + [slot.process.sentinel for slot in busy],
                        timeout)
        outcomes = []
        for slot in busy:
            message = None
            try:
                if slot.conn.poll():
                    message = slot.conn.recv()
            except (EOFError, OSError):
                message = None
            if message is not None:
                name, failure = message
                outcomes.append(Outcome(name, "failed", failure) if failure
                                else Outcome(name, "done"))
                slot.task = None
            elif not slot.process.is_alive():
                slot.process.join()
                outcomes.append(Outcome(slot.task.name, "lost",
                                        f"its worker process died ({_exit(slot.process)})"))
                slot.task = None
                slot.process = None
        return outcomes

    def close(self) -> None:
        """Stop the workers: idle ones are told to end; busy ones (an interrupted sweep)
        are terminated, and their runs keep their last checkpoints."""
        for slot in self.slots:
            if slot.process is None:
                continue
            if slot.task is None and slot.process.is_alive():
                try:
                    slot.conn.send(None)
                except OSError:
                    pass
            else:
                slot.process.terminate()
        for slot in self.slots:
            if slot.process is not None:
                slot.process.join(timeout=30)
                if slot.process.is_alive():
                    slot.process.kill()
                    slot.process.join()


class _Slot:
    """One worker process of a :class:`LocalPool`, its pipe and the run it holds."""

    def __init__(self, index: int, gpu: Optional[int]):
        self.index, self.gpu = index, gpu
        self.process = self.conn = None
        self.task: Optional[Task] = None

    def launch(self, context) -> None:
        parent, child = context.Pipe()
        self.conn = parent
        self.process = context.Process(target=_serve, args=(child, self.gpu), daemon=True,
                                       name=f"SweepWorker-{self.index}")
        self.process.start()
        child.close()


def _serve(conn, gpu: Optional[int]) -> None:
    """A worker process: train run after run until told to stop (None)."""
    # Ctrl-C is the driver's to handle: it terminates the workers, whose runs keep their
    # checkpoints, instead of every worker printing its own traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if gpu is not None:  # before anything initialises CUDA in this process
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    try:
        while (message := conn.recv()) is not None:
            name, config, root, options = message
            try:
                train_group([ExperimentConfig.from_dict(config)], RunStore(root), options)
                outcome = None
            except Exception as error:
                outcome = reason(error)
            conn.send((name, outcome))
    except (EOFError, OSError):  # the driver is gone: nobody to report to
        return


def _exit(process) -> str:
    code = process.exitcode
    if code is not None and code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"

