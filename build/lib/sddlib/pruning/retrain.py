"""Retraining modes and branches: what happens after each pruning step, one entry each.

Level 0 of every run trains the dense model from its initialisation; a mode says what the
pruned levels after it do (He et al.; REFERENCE.md):

=============  ================================================================
``lottery``    surviving weights reset to the rewind point (iteration ``k`` of
               the dense run; ``k = 0`` is the original init), schedule from ``k``
``finetune``   continue from the pruned trained weights at ``finetune_lr``, constant
               (none: ``lr``/100, the paper's 0.001 after 0.1)
``lr-rewind``  continue from the pruned trained weights with the full schedule
``scratch``    a fresh random init (seeded per level), the full schedule
``reinit``     the lottery run's masks, a fresh random init, the full schedule
=============  ================================================================

and the re-dense *branch* (``redense_level = L``): one level that starts from a finished
run's level-``L`` solution (its parent, the same config without ``redense_level``), lets
every pruned weight grow back from zero and trains the full recipe.

Distillation (:mod:`sddlib.engine.distill`) is orthogonal to the mode: a loss, not a schedule, so
it is no mode here; :func:`runs_needed` adds a distilling run's teacher run to what its
mode needs.

Each is one :class:`Mode`: which runs it needs finished first, its level-0 weights, where
a pruned level's masks come from, what weights the level starts from (also where its
learning distance is measured from, see :mod:`sddlib.engine.distance`), what recipe it trains,
and which config fields it reads (the others do nothing for it and stay out of a run's
identity). Adding a mode is one subclass here and one entry in :data:`MODES`.

A mode works on the run being computed through a small interface, ``exp``: its
``config``, ``run`` (the folder), ``store``, ``init_state`` (level 0's weights),
``fresh_init(seed)`` and ``prune_previous(level, model)`` (the run's pruning criterion on
the previous level's weights); see :class:`sddlib.engine.experiment.Experiment`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from sddlib.base.files import load_torch
from sddlib.base.seeds import derive_seed

if TYPE_CHECKING:  # annotations only: the config reads the mode names from here, and the
    # engine, which trains with a Recipe, runs the modes
    from sddlib.config.fields import ExperimentConfig
    from sddlib.engine.train import Recipe


class Mode:
    """The shared behaviour; each mode overrides what it does differently."""

    name = ""
    uses: tuple[str, ...] = ()  # config fields that only this mode reads

    def needs(self, config: "ExperimentConfig") -> list["ExperimentConfig"]:
        """Runs that must be finished before this one can start."""
        return []

    def validate(self, config: "ExperimentConfig") -> Optional[str]:
        """A one-line complaint about ``config`` for this mode, or None."""
        return None

    def levels(self, config: "ExperimentConfig") -> int:
        """The last level the run trains."""
        return config.levels

    def initial_seed(self, config: "ExperimentConfig") -> int:
        return config.seed

    def initial_state(self, exp) -> Optional[dict]:
        """Level 0's weights when they are not a fresh init from :meth:`initial_seed`."""
        return None

    def masks(self, exp, level: int, model) -> dict:
        """A pruned level's masks (level 0 is dense for every mode)."""
        return exp.prune_previous(level, model)

    def start(self, exp, level: int) -> dict:
        """The weights a pruned level starts from, before its masks are applied."""
        return exp.init_state

    def recipe(self, config: "ExperimentConfig", level: int, recipe: Recipe) -> Recipe:
        """What a pruned level trains (``recipe``: the config's own, level 0's)."""
        return recipe

    def saves_rewind_point(self, config: "ExperimentConfig") -> bool:
        return False

    def stackable(self, config: "ExperimentConfig") -> bool:
        """Whether its runs can train as members of a stacked ensemble."""
        return True


class Lottery(Mode):
    name = "lottery"
    uses = ("rewind_iteration",)

    def start(self, exp, level):
        if exp.config.rewind_iteration > 0:
            return load_torch(exp.run.file("checkpoints", "rewind.pt"))
        return exp.init_state

    def recipe(self, config, level, recipe):
        recipe.start_iteration = config.rewind_iteration
        return recipe

    def saves_rewind_point(self, config):
        return config.rewind_iteration > 0

    def stackable(self, config):
        return config.rewind_iteration == 0  # level 0 saves the rewind point mid-level


class FineTune(Mode):
    name = "finetune"
    uses = ("finetune_lr",)

    def start(self, exp, level):
        return load_torch(exp.run.level_dir(level - 1) / "final.pt")

    def recipe(self, config, level, recipe):
        recipe.lr, recipe.schedule = config.finetune_rate, "constant"
        return recipe


class LrRewind(Mode):
    name = "lr-rewind"

    def start(self, exp, level):
        return load_torch(exp.run.level_dir(level - 1) / "final.pt")


class Scratch(Mode):
    name = "scratch"

    def start(self, exp, level):
        return exp.fresh_init(derive_seed(exp.config.seed, self.name, level))


class Reinit(Mode):
    """Lottery vs reinit: the lottery run's masks, level by level, on fresh inits."""

    name = "reinit"
    uses = ("rewind_iteration",)  # through the lottery run whose masks it takes

    def needs(self, config):
        return [config.lottery_counterpart]

    def initial_seed(self, config):
        return derive_seed(config.seed, self.name, 0)

    def masks(self, exp, level, model):
        lottery = exp.store.find(exp.config.lottery_counterpart)
        return load_torch(lottery.level_dir(level) / "mask.pt")

    def start(self, exp, level):
        return exp.fresh_init(derive_seed(exp.config.seed, self.name, level))

    def stackable(self, config):
        return False  # it waits for its lottery run


class Redense(Mode):
    """The re-dense branch: a finished run's level-``L`` solution, every weight free.

    Stored as a run of its own with one level (its level 0); its ``checkpoints/init.pt``
    is that sparse solution, so its learning distance is how far re-dense training moves
    away from it.
    """

    name = "re-dense"
    uses = ("redense_level",)

    def needs(self, config):
        return [parent(config)]

    def levels(self, config):
        return 0

    def initial_state(self, exp):
        found = exp.store.find(parent(exp.config))
        return load_torch(found.level_dir(exp.config.redense_level) / "final.pt")

    def stackable(self, config):
        return False


MODES: dict[str, Mode] = {mode.name: mode for mode in
                          (Lottery(), FineTune(), LrRewind(), Scratch(), Reinit())}
REDENSE = Redense()


def mode_of(config: "ExperimentConfig") -> Mode:
    """The strategy that computes ``config``: its retraining mode, or the re-dense branch."""
    return REDENSE if config.redense_level is not None else MODES[config.retrain]


def runs_needed(config: "ExperimentConfig") -> list["ExperimentConfig"]:
    """The runs that must be finished before ``config``'s can start: what its mode needs
    (:meth:`Mode.needs`) and, when it distils, its teacher run."""
    needed = mode_of(config).needs(config)
    if config.distills:
        needed = needed + [config.teacher_config]
    return needed


def parent(config: "ExperimentConfig") -> "ExperimentConfig":
    """The run whose level-``redense_level`` solution a re-dense run starts from."""
    return config.replace(redense_level=None, levels=max(config.levels, config.redense_level))
