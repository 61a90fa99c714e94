"""Grid files: the runs of a sweep, every one checked before anything runs.

A grid file names the runs of a sweep (``sddlib sweep GRID.yml``)::

    base:                # config keys every run shares (``sddlib keys``)
      model: mlp
      epochs: 40
    grid:                # key: list of values; the runs are their cartesian product
      seed: [0, 1, 2]
      noise: [0.0, 0.2]
      widths: [[300, 100], [30, 10]]   # a list-valued key takes a list of lists

:func:`load_grid` checks every run (one line naming ``base.KEY`` or ``grid.KEY`` and the
allowed values, as :class:`ConfigError`); :func:`sddlib.scheduling.executor.run_all`
computes them, as it computes every other list of runs.
"""
from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Union

import yaml

from sddlib.config.fields import ConfigError, ExperimentConfig


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
