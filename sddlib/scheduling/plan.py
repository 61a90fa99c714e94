"""The one plan of many runs: each run once, what it needs first, the biggest first.

Every way of computing many runs (``sddlib run --seeds``, ``sddlib sweep``, ``sddlib figures
--compute-only``, :func:`sddlib.scheduling.sweep.run_many` from a notebook or a script)
goes through :func:`plan` and :func:`sddlib.scheduling.executor.run_all`:

- **each run once**, at the most levels asked for (a run extended to more levels keeps
  its first ones); a finished run is reused, never computed again;
- **dependencies**: a run waits for the runs its mode needs
  (:meth:`sddlib.pruning.retrain.Mode.needs`: a reinit run's lottery run, a re-dense
  branch's parent, a distilling run's teacher); needed runs missing from the list are
  added;
- **groups**: with ``stack``, runs that differ only in seed, label noise and criterion
  and wait for the same runs become one task, trained as one stacked ensemble
  (:func:`sddlib.scheduling.groups.stack_groups`); otherwise a task is one run;
- **cost**: each task's estimated work (:func:`cost`), so the executor starts the biggest
  first and no long run starts last while the other workers idle.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Optional

import torch

from sddlib.config.fields import ExperimentConfig
from sddlib.data.datasets import DATASETS
from sddlib.models.architectures import build_model
from sddlib.pruning.retrain import mode_of, runs_needed
from sddlib.scheduling import parallel
from sddlib.scheduling.groups import stack_groups
from sddlib.storage.store import RunStore


@dataclass
class Task:
    """One unit of work: a run, or a group of runs trained as one stacked ensemble; the
    runs it waits for (run names) and its estimated cost."""

    configs: list[ExperimentConfig]
    needs: set[str]
    cost: float
    attempts: int = 0  # times its worker was lost

    @property
    def config(self) -> ExperimentConfig:
        """The first (for a single run: the only) run of the task."""
        return self.configs[0]

    @property
    def name(self) -> str:
        return self.configs[0].run_name()

    @property
    def names(self) -> list[str]:
        return [config.run_name() for config in self.configs]


@dataclass
class Summary:
    """What :func:`sddlib.scheduling.executor.run_all` did: runs computed, runs already
    finished, runs failed (run name: one-line reason), runs started again after their
    worker was lost (how often)."""

    computed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    retried: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    # the exceptions of the runs that raised, where they came back (from this process or a
    # local worker process; from Ray only their one-line reasons)
    errors: dict[str, BaseException] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return not self.failed

    def failures(self) -> str:
        """The failed runs in one line: "2 run(s) failed: NAME: REASON; NAME: REASON"."""
        return f"{len(self.failed)} run(s) failed: " + "; ".join(
            f"{name}: {why}" for name, why in self.failed.items())

    def raise_failures(self) -> None:
        """Raise for the failed runs, if any: the exception itself when every failed run
        raised the same one (bad input, such as a device or a ``train_size`` this machine
        or dataset lacks, fails every run alike, and stays the one-line error of bad
        input), else a :class:`RuntimeError` of :meth:`failures`."""
        if not self.failed:
            return
        errors = {(type(error), str(error)) for error in self.errors.values()}
        if len(errors) == 1 and len(self.errors) == len(self.failed):
            raise next(iter(self.errors.values()))
        raise RuntimeError(self.failures())

    def report(self) -> str:
        """A few lines for people: the counts, then each failed run and why."""
        lines = [f"sweep: {len(self.computed)} computed, {len(self.reused)} already finished, "
                 f"{len(self.failed)} failed in {self.seconds:.1f} s"
                 + (f"; {sum(self.retried.values())} restart(s) after a lost worker"
                    if self.retried else "")]
        lines += [f"  failed {name}: {reason}" for name, reason in self.failed.items()]
        return "\n".join(lines)


@dataclass
class Outcome:
    """How a started task ended: ``done``, ``failed`` (it raised: ``reason``) or ``lost``
    (its worker died: ``reason``; the task may be started again)."""

    name: str
    kind: str
    reason: str = ""
    error: Optional[BaseException] = None  # the exception itself, where it was raised here


def plan(configs: list[ExperimentConfig], store: RunStore, stack: bool = False) \
        -> tuple[dict[str, Task], list[str]]:
    """The tasks that compute every unfinished run of ``configs`` (with the unfinished runs
    they need, added), by task name, and the names of the runs finished already."""
    wanted: dict[str, ExperimentConfig] = {}
    needs: dict[str, set[str]] = {}
    done: dict[str, int] = {}
    reused: list[str] = []

    def visit(config: ExperimentConfig) -> bool:
        """Add ``config`` if unfinished; whether it was."""
        name = config.run_name()
        if name in wanted:
            if config.levels > wanted[name].levels:
                wanted[name] = config
            return True
        found = store.find(config)
        if found is not None and found.is_finished():
            if name not in reused:
                reused.append(name)
            return False
        wanted[name] = config
        needs[name] = {needed.run_name() for needed in runs_needed(config) if visit(needed)}
        done[name] = found.levels_done() if found is not None else 0
        return True

    for config in configs:
        visit(config)
    groups = stack_groups(list(wanted.values()), needs) if stack else \
        [[config] for config in wanted.values()]
    tasks = {}
    for group in groups:
        names = {config.run_name() for config in group}
        task = Task(group, set().union(*(needs[name] for name in names)) - names,
                    sum(cost(config, done[config.run_name()]) for config in group))
        tasks[task.name] = task
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


def reason(error: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    text = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def portable(config: ExperimentConfig) -> ExperimentConfig:
    """``config`` for a worker that sees only its own GPU(s): ``cuda:N`` becomes ``cuda``
    (the device is not part of a run's identity)."""
    return config.replace(device="cuda") if config.device.startswith("cuda:") else config
