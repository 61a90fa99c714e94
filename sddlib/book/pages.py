"""Each page of the book, declared once: its parameters, the kind of each, and its runs.

A page's runs come from its parameters through :func:`page_runs`, which the page's
notebook calls to get its variants (``variants = pages.page_runs("label-noise",
globals())``) and which ``sddlib figures --compute-only`` calls to plan every page's runs
in one schedule without executing a page. The checks of a page's parameters come from the
same declaration (:func:`check_parameters`): each parameter's :class:`Parameter` kind
checks its value (one line naming the parameter and what is allowed), and building the
page's runs checks every experiment and variant as :class:`ExperimentConfig` checks it,
naming the parameter at fault (``noises.clean.noise``, ``experiment.rate``). A page
whose notebook declares a parameter that its :class:`Page` does not (or the reverse) is
refused by the tests.

Runs a page asks for only after reading others (the re-dense branches of the levels a
curve picks) are not declared: the page computes them itself.
"""
from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from sddlib.analysis import theory
from sddlib.analysis.network_check import network_plan, width_config
from sddlib.config.fields import RETRAIN_MODES, ConfigError, ExperimentConfig
from sddlib.data.datasets import DATASETS
from sddlib.pruning.prune import CRITERIA

Variants = dict[str, list[ExperimentConfig]]  # label -> one config per seed


def merge(base: dict, changes: dict) -> dict:
    """``changes`` over ``base``; nested dicts are merged, everything else replaced."""
    result = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


# ---------------------------------------------------------------------------- value checks
def _kind_text(default) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a dict (key: value pairs)"}.get(type(default),
                                                                  type(default).__name__)


def _same_kind(value, default) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float)) and (isinstance(value, int) or
                                                    isinstance(default, float))
    return isinstance(value, type(default))


def _integers(key, value, low: int, *, empty: bool = False, text: str = "integers") -> None:
    if not isinstance(value, list) or (not value and not empty) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= low for v in value):
        raise ValueError(f"{key}: {value!r} is not allowed; allowed: a list of {text} >= {low}, "
                         f"e.g. [{low}, {low + 1}]")


def _integer(key, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{key}: {value!r} is not allowed; allowed: an integer >= {low}")


def _choices(allowed):
    def check(key, value):
        if not isinstance(value, list) or not value or not all(
                isinstance(v, str) and v in allowed for v in value):
            raise ValueError(f"{key}: {value!r} is not allowed; allowed: a list of "
                             f"{', '.join(allowed)}")
    return check


def _dict_of_dicts(key, value, names=None) -> None:
    if not isinstance(value, dict) or not value:
        raise ValueError(f"{key}: {value!r} is not allowed; allowed: label: {{key: value}} "
                         f"pairs, e.g. {{clean: {{noise: 0.0}}}}")
    for label, changes in value.items():
        if names is not None and label not in names:
            raise ValueError(f"{key}.{label}: unknown dataset; allowed: {', '.join(names)}")
        if not isinstance(changes, dict):
            raise ValueError(f"{key}.{label}: {changes!r} is not allowed; allowed: experiment "
                             f"keys as key: value pairs, e.g. {{}} or {{noise: 0.4}}")


def _rates(key, value) -> None:
    if not isinstance(value, list) or not value or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1
            for v in value):
        raise ValueError(f"{key}: {value!r} is not allowed; allowed: a list of rates in "
                         f"[0, 1), e.g. [0.1, 0.2, 0.5]")


def _antidotes(key, value) -> None:
    _dict_of_dicts(key, value)
    for label, changes in value.items():
        if "seeds" in changes:
            _integers(f"{key}.{label}.seeds", changes["seeds"], 0, text="seeds")


def _experiment(key, value) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"{key}: {value!r} is not allowed; allowed: experiment keys as "
                         f"key: value pairs (see sddlib keys)")


def _alphas(key, value) -> None:
    if not isinstance(value, list) or not value or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in value):
        raise ValueError(f"{key}: {value!r} is not allowed; allowed: a list of numbers, "
                         f"e.g. [0.0, 0.5, 1.0]")


def _levels_shown(key, value) -> None:
    if value != "auto":
        try:
            _integers(key, value, 0)
        except ValueError:
            raise ValueError(f"{key}: {value!r} is not allowed; allowed: auto or a list of "
                             f"levels >= 0") from None


def _one_of(*allowed):
    def check(key, value):
        if not any(type(value) is type(a) and value == a for a in allowed):
            shown = ", ".join(str(a).lower() if isinstance(a, bool) else str(a)
                              for a in allowed)
            raise ValueError(f"{key}: {value!r} is not allowed; allowed: {shown}")
    return check


def _theory(function: str, excluded: set, required: tuple):
    """A theory simulation's parameters: the keys of ``function`` the page does not set
    itself (``excluded``), with ``required`` ones the page reads."""
    def check(key, value) -> None:
        signature = inspect.signature(getattr(theory, function))
        allowed = [n for n in signature.parameters if n not in excluded]
        if not isinstance(value, dict):
            raise ValueError(f"{key}: {value!r} is not allowed; allowed: key: value pairs of "
                             f"{', '.join(allowed)}")
        for name, item in value.items():
            if name not in allowed:
                raise ValueError(f"{key}.{name}: unknown key; allowed: {', '.join(allowed)}")
            default = signature.parameters[name].default
            if name in ("n", "d", "s", "k", "trials", "n_test") or (
                    isinstance(default, int) and not isinstance(default, bool)):
                _integer(f"{key}.{name}", item, 1)
            elif isinstance(default, float):
                if isinstance(item, bool) or not isinstance(item, (int, float)) or \
                        not math.isfinite(item) or item < 0:
                    raise ValueError(f"{key}.{name}: {item!r} is not allowed; allowed: a "
                                     f"number >= 0")
            elif item is not None and default not in (None, inspect.Parameter.empty) and \
                    not isinstance(item, type(default)):
                raise ValueError(f"{key}.{name}: {item!r} is not {_kind_text(default)}")
        for name in required:
            if name not in value:
                raise ValueError(f"{key}.{name}: missing; the notebook reads it")
    return check


def _network(key, value) -> None:
    allowed = ("experiment", "widths", "target_weights", "seeds", "criteria")
    if not isinstance(value, dict):
        raise ValueError(f"{key}: {value!r} is not allowed; allowed: key: value pairs of "
                         f"{', '.join(allowed)}")
    for name in value:
        if name not in allowed:
            raise ValueError(f"{key}.{name}: unknown key; allowed: {', '.join(allowed)}")
    for name in ("experiment", "widths", "target_weights"):
        if name not in value:
            raise ValueError(f"{key}.{name}: missing; the notebook reads it")
    _experiment(f"{key}.experiment", value["experiment"])
    _integers(f"{key}.widths", value["widths"], 1, text="widths")
    _integer(f"{key}.target_weights", value["target_weights"], 1)
    seeds = value.get("seeds", [0])
    _integers(f"{key}.seeds", seeds, 0, text="seeds")
    if "criteria" in value:
        _choices(CRITERIA)(f"{key}.criteria", value["criteria"])
    for width in value["widths"]:
        try:
            width_config(value["experiment"], width, seed=seeds[0], retrain="lr-rewind",
                         rewind_iteration=0, levels=1, rate=0.5)
        except ConfigError as error:
            raise ValueError(f"{key}.experiment.{error}") from None


# ---------------------------------------------------------------------------- parameter kinds
@dataclass(frozen=True)
class Parameter:
    """A kind of page parameter: how its value is checked, and what it is to the page's
    runs. ``role``: ``experiment`` (a base experiment, config keys), ``variants`` (entries
    that each change the experiment named by ``base``: ``changes`` turns the value into
    label -> config changes), ``seeds``, ``theory``, ``network`` or ``value`` (anything
    else; without a ``check`` it must be of the kind of the notebook's default)."""

    check: Optional[Callable[[str, Any], None]] = None
    role: str = "value"
    base: str = ""
    changes: Optional[Callable[[Any], dict[str, dict]]] = None


EXPERIMENT = Parameter(_experiment, "experiment")
SEEDS = Parameter(lambda key, value: _integers(key, value, 0, text="seeds"), "seeds")
SEED = Parameter(lambda key, value: _integer(key, value, 0), "seeds")
VALUE = Parameter()
COMMON = {"profile": VALUE, "compute_missing": Parameter(_one_of(True, False))}


def _variants(check, changes, base: str = "experiment") -> Parameter:
    return Parameter(check, "variants", base, changes)


DATASET_VARIANTS = _variants(
    lambda key, value: _dict_of_dicts(key, value, DATASETS),
    lambda sets: {name: {"dataset": name, **(changes or {})} for name, changes in sets.items()})
# label -> changes, each with its own "seeds" if it has one (not a config key)
ANTIDOTE_VARIANTS = _variants(
    _antidotes, lambda entries: {label: {k: v for k, v in changes.items() if k != "seeds"}
                                 for label, changes in entries.items()})


# ---------------------------------------------------------------------------- runs
def configs(experiment: dict, seeds: Iterable[int], variants: dict[str, dict],
            where: str = "experiment", owner: str = "") -> Variants:
    """One list of configs (one per seed) per named variant of the base ``experiment``;
    a bad value raises :class:`ValueError` naming the parameter at fault: ``owner.LABEL.KEY``
    for a key the variant sets, else ``where.KEY``."""
    built = {}
    for label, changes in variants.items():
        built[label] = []
        for seed in seeds:
            try:
                built[label].append(ExperimentConfig.from_dict(
                    merge(experiment, {**changes, "seed": seed})))
            except ConfigError as error:
                message = str(error)
                key = message.split(":", 1)[0]
                prefix = f"{owner}.{label}" if owner and key in changes else where
                raise ValueError(f"{prefix}.{message}") from None
    return built


def _variant_runs(key: str, extra: Optional[dict] = None):
    """The runs of a page whose ``key`` parameter names variants of its experiment."""
    def runs(p: dict) -> Variants:
        changes = PAGES_PARAMETER[key].changes(p[key])
        changes = {label: {**(extra or {}), **c} for label, c in changes.items()}
        return configs(p["experiment"], p["seeds"], changes, owner=key)
    return runs


def _fixed_runs(variants: dict[str, dict], seeds: str = "seeds"):
    """The runs of a page with fixed variants of its experiment, on its seeds (or seed)."""
    def runs(p: dict) -> Variants:
        chosen = p[seeds] if seeds == "seeds" else [p[seeds]]
        return configs(p["experiment"], chosen, variants)
    return runs


def _antidote_runs(p: dict) -> Variants:
    """Each antidote on its own seeds (a ``seeds`` entry), else the page's."""
    changes = ANTIDOTE_VARIANTS.changes(p["antidotes"])
    return {label: configs(p["experiment"], p["antidotes"][label].get("seeds", p["seeds"]),
                           {label: changes[label]}, owner="antidotes")[label]
            for label in p["antidotes"]}


def capacity_variants(p: dict) -> tuple[Variants, dict[str, dict]]:
    """The antidote-capacity page's variants (every size of the width and the depth sweep,
    at every noise rate, plain and distilled) and what each is, column by column."""
    ways = {"plain": {}, "distilled": {"distill_from": p["distill_from"]}}
    variants, described = {}, {}
    for sweep, base, sizes in (("width", "width_experiment", "width_sweep"),
                               ("depth", "depth_experiment", "depth_sweep")):
        for size, changes in p[sizes].items():
            for noise in p["noise_rates"]:
                for way, extra in ways.items():
                    label = f"{sweep}, {size}, {noise:.0%} noise, {way}"
                    variants[label] = configs(p[base], p["seeds"],
                                              {label: {**changes, "noise": noise, **extra}},
                                              where=base)[label]
                    described[label] = {"sweep": sweep, "size": size,
                                        "noise rate": f"{noise:.0%}", "training": way,
                                        "model size": size + (f", {noise:.0%} noise"
                                                              if len(p["noise_rates"]) > 1
                                                              else "")}
    return variants, described


def _headline_runs(p: dict) -> Variants:
    """The landing page's runs: the first dataset of the datasets page, with the parameters
    that page was executed with (the profile's when it has not been executed)."""
    from sddlib.book.figures import page_parameters  # the executed page, where there is one

    headline = page_parameters("sdd-datasets", p["profile"])
    main = next(iter(headline["datasets"]))
    return configs(headline["experiment"], headline["seeds"],
                   DATASET_VARIANTS.changes({main: headline["datasets"][main]}),
                   owner="datasets")


def network_arguments(network: dict) -> dict:
    """The theory page's ``network`` parameter as the arguments of
    :func:`sddlib.analysis.network_check.network_check` (and of its ``network_plan``): the
    page calls the check with them, and :func:`page_runs` lists its runs with them."""
    keys = ("experiment", "widths", "target_weights", "criteria", "seeds")
    return {key: network[key] for key in keys if key in network}


def _network_runs(p: dict) -> Variants:
    plan = network_plan(**network_arguments(p["network"]))
    return {f"width {width}, {group[0].criterion}": group for width, _, group in plan}


# ---------------------------------------------------------------------------- the pages
@dataclass(frozen=True)
class Page:
    """A page's parameters (besides :data:`COMMON`'s), by name, and its runs: parameters
    -> label -> configs (None: the page trains nothing)."""

    parameters: dict[str, Parameter]
    runs: Optional[Callable[[dict], Variants]] = None


# parameters that mean the same on every page that has them
PAGES_PARAMETER: dict[str, Parameter] = {
    "experiment": EXPERIMENT, "seeds": SEEDS, "seed": SEED,
    "criteria": _variants(_choices(CRITERIA), lambda names: {c: {"criterion": c}
                                                             for c in names}),
    "modes": _variants(_choices(RETRAIN_MODES), lambda names: {m: {"retrain": m}
                                                               for m in names}),
    "noises": _variants(_dict_of_dicts, lambda noises: noises),
    "datasets": DATASET_VARIANTS,
    "antidotes": ANTIDOTE_VARIANTS,
    "width_experiment": EXPERIMENT, "depth_experiment": EXPERIMENT,
    "width_sweep": _variants(_dict_of_dicts, lambda entries: entries, "width_experiment"),
    "depth_sweep": _variants(_dict_of_dicts, lambda entries: entries, "depth_experiment"),
    "noise_rates": Parameter(_rates),
    "distill_from": Parameter(_one_of("dense", "best-fit")),
    "patience": Parameter(lambda key, value: _integer(key, value, 1)),
    "alphas": Parameter(_alphas),
    "levels_shown": Parameter(_levels_shown),
    "hessian_batches": Parameter(lambda key, value: _integer(key, value, 1)),
    "trace_queries": Parameter(lambda key, value: _integer(key, value, 1)),
    "hessian_method": Parameter(_one_of("autograd", "finite_difference")),
    "linear": Parameter(_theory("simulate_linear", {"seed", "problem"}, ("n", "s")),
                        "theory"),
    "isotropic": Parameter(_theory("simulate_linear", {"seed", "spectrum", "p_values",
                                                       "problem"}, ("n", "d", "s", "sigma2")),
                           "theory"),
    "random_features": Parameter(_theory("simulate_random_features",
                                         {"seed", "p_values", "teacher"}, ("n", "s")),
                                 "theory"),
    "correlated": VALUE,
    "network": Parameter(_network, "network"),
}


def _page(names: str, runs=None) -> Page:
    return Page({name: PAGES_PARAMETER[name] for name in names.split()}, runs)


PAGES: dict[str, Page] = {
    "intro": _page("", _headline_runs),
    "sdd-datasets": _page("experiment seeds datasets", _variant_runs("datasets")),
    "pruning-criteria": _page("experiment seeds criteria", _variant_runs("criteria")),
    "retraining-modes": _page("experiment seeds modes", _variant_runs("modes")),
    "label-noise": _page("experiment seeds noises", _variant_runs("noises")),
    "lottery-vs-reinit": _page("experiment seeds", _fixed_runs(
        {"lottery": {"retrain": "lottery"}, "reinit": {"retrain": "reinit"}})),
    "learning-distance": _page("experiment seeds datasets",
                               _variant_runs("datasets", {"retrain": "lottery"})),
    "minima-flatness": _page("experiment seeds levels_shown alphas hessian_batches "
                             "trace_queries hessian_method",
                             _fixed_runs({"lottery": {"retrain": "lottery"}})),
    "redense-interpolation": _page("experiment seed levels_shown alphas",
                                   _fixed_runs({"lottery": {"retrain": "lottery"}}, "seed")),
    "antidotes": _page("experiment seeds antidotes patience", _antidote_runs),
    "antidote-capacity": _page("width_experiment width_sweep depth_experiment depth_sweep "
                               "noise_rates seeds distill_from",
                               lambda p: capacity_variants(p)[0]),
    "theory": _page("linear isotropic random_features correlated network seed",
                    _network_runs),
    "reproduction-status": _page("experiment seeds datasets", _variant_runs("datasets")),
    "reference": _page(""),
}


def page(name: str) -> Page:
    if name not in PAGES:
        raise ValueError(f"page: {name!r} is not a page; allowed: {', '.join(PAGES)}")
    return PAGES[name]


def page_runs(name: str, parameters: dict) -> Variants:
    """The runs page ``name`` computes with ``parameters`` (its notebook's ``globals()``
    or a checked dict: only the page's own keys are read), as label -> configs; empty for
    a page that trains nothing."""
    declared = page(name)
    if declared.runs is None:
        return {}
    wanted = {key: parameters[key] for key in (*declared.parameters, *COMMON)
              if key in parameters}
    return declared.runs(wanted)


def keys_with_role(role: str) -> dict[str, Parameter]:
    """Every page parameter of ``role`` (``experiment``, ``variants``, ``theory``, ...)."""
    return {key: kind for key, kind in PAGES_PARAMETER.items() if kind.role == role}


def check_parameters(name: str, parameters: dict, defaults: dict) -> None:
    """Raise :class:`ValueError` (one line, naming the parameter) unless ``parameters``
    would run page ``name``: each value as its kind allows (or of the kind of the
    notebook's ``defaults`` for a plain value), and every run the page builds from them a
    valid :class:`ExperimentConfig`."""
    declared = page(name)
    for key, value in parameters.items():
        kind = declared.parameters.get(key) or COMMON.get(key) or VALUE
        default = defaults.get(key)
        if kind.check is not None:
            kind.check(key, value)
        elif default is not None and not _same_kind(value, default):
            raise ValueError(f"{key}: {value!r} is not {_kind_text(default)}")
    built = page_runs(name, {**defaults, **parameters})
    levels = [config.levels for group in built.values() for config in group]
    shown = parameters.get("levels_shown")
    if isinstance(shown, list) and levels and any(level > max(levels) for level in shown):
        raise ValueError(f"levels_shown: {shown!r} goes past the experiment's levels; allowed: "
                         f"0 to {max(levels)}")


def unused_override(name: str, parameters: dict, base: str, key: str) -> Optional[str]:
    """The variant parameter of page ``name`` that sets ``key`` in every one of its runs of
    the base experiment ``base`` (so an override ``base.key`` would change nothing), or
    None where the override reaches a run."""
    owners = [k for k, kind in page(name).parameters.items()
              if kind.role == "variants" and kind.base == base and k in parameters]
    if base not in parameters or not owners:
        return None
    changes = list(page(name).parameters[owners[0]].changes(parameters[owners[0]]).values())
    return owners[0] if all(key in c for c in changes) else None
