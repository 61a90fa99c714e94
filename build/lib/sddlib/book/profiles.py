"""The book's profiles and settings: which pages there are, the parameters each gets, and
the environment its runs read.

Every page is one notebook in ``notebooks/``: a jupytext ``.py`` (what ``sddlib figures``
converts and reviews read) paired with an ``.ipynb`` (what papermill reads; kept equal,
:func:`pair_problem`), with a cell tagged ``parameters``. The root ``_config.yml`` lists
the notebooks in book order and, per profile (``smoke`` for tests, ``quick`` for a
laptop, ``paper`` for a GPU box), the parameters each one gets::

    profiles:
      quick:
        common: {experiment: {...}, seeds: [0, 1]}     # every notebook
        notebooks:
          pruning-criteria: {criteria: [magnitude, gradient, random]}

:func:`checked_parameters` merges a profile with ``-p`` overrides and checks every value
as the page declares it (:mod:`sddlib.book.pages`), so bad input fails at once in one
line, not in a kernel. The settings (:func:`store`, :func:`progress_setting`,
:func:`stack_setting`, :func:`workers_setting`) are read from the environment that
``sddlib figures`` passes on to the kernels.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
import sys
from pathlib import Path
from typing import Optional

import yaml

from sddlib.book import pages
from sddlib.book.pages import merge
from sddlib.config.fields import ConfigError, ExperimentConfig, checked_value
from sddlib.config.project import ProjectSettings, load_settings
from sddlib.scheduling.parallel import parse_workers
from sddlib.storage.store import RunStore

NOTEBOOK_DIR = "notebooks"


BOOK_DIR = "book"


def notebook_names(settings: ProjectSettings) -> list[str]:
    content = yaml.safe_load(settings.config_path.read_text()) if settings.config_path else {}
    return list(content.get("notebooks") or [])


def notebook_parameters(settings: ProjectSettings, profile: str, name: str,
                        overrides: Optional[dict] = None) -> dict:
    """The parameters ``name`` gets under ``profile``, with ``overrides`` merged last.

    ``common`` parameters go to the notebooks whose ``parameters`` cell declares them; a
    notebook-specific or overriding parameter the notebook does not declare is an error.
    """
    chosen = profile_section(settings, profile)
    declared = parameters_cell_defaults(settings.root / NOTEBOOK_DIR / f"{name}.py")
    common = {k: v for k, v in (chosen.get("common") or {}).items() if k in declared}
    specific = merge((chosen.get("notebooks") or {}).get(name) or {}, overrides or {})
    unknown = sorted(set(specific) - set(declared))
    if unknown:
        raise ValueError(f"{unknown[0]}: not a parameter of notebook {name}; allowed: "
                         f"{', '.join(declared)}")
    return merge(merge({"profile": profile}, common), specific)


def profile_section(settings: ProjectSettings, profile: str) -> dict:
    """The ``profiles.<profile>`` section of ``_config.yml``, its shape checked."""
    if not isinstance(settings.profiles, dict) or profile not in settings.profiles:
        allowed = ", ".join(settings.profiles) if isinstance(settings.profiles, dict) else ""
        raise ValueError(f"profile: unknown {profile!r}; allowed: {allowed or 'none'} "
                         f"(profiles in {settings.config_path})")
    chosen = settings.profiles[profile] or {}
    where = f"profiles.{profile}"
    if not isinstance(chosen, dict):
        raise ValueError(f"{where}: expected key: value pairs (common, notebooks) in "
                         f"{settings.config_path}")
    for key, value in chosen.items():
        if key not in ("common", "notebooks"):
            raise ValueError(f"{where}.{key}: unknown key; allowed: common, notebooks")
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"{where}.{key}: expected key: value pairs, got {value!r}")
    for name, values in (chosen.get("notebooks") or {}).items():
        if values is not None and not isinstance(values, dict):
            raise ValueError(f"{where}.notebooks.{name}: expected parameter: value pairs, "
                             f"got {values!r}")
    return chosen


def parameters_cell_defaults(source: Path) -> dict:
    """The values the ``parameters`` cell of a jupytext source assigns (for checks)."""
    import jupytext  # the book extra (pip install sddlib[book]): only the book needs it

    notebook = jupytext.read(source)
    for cell in notebook.cells:
        if "parameters" in cell.metadata.get("tags", []):
            namespace: dict = {}
            exec(cell.source, {}, namespace)
            return namespace
    raise ValueError(f"{source}: no cell tagged 'parameters'")


@contextlib.contextmanager
def runs_dir_set(runs_dir: Optional[Path]):
    """``SDDLIB_RUNS_DIR`` set to ``runs_dir`` within the block (for this process's reads)."""
    if runs_dir is None:
        yield
        return
    previous = os.environ.get("SDDLIB_RUNS_DIR")
    os.environ["SDDLIB_RUNS_DIR"] = str(Path(runs_dir).resolve())
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("SDDLIB_RUNS_DIR", None)
        else:
            os.environ["SDDLIB_RUNS_DIR"] = previous


def chosen_notebooks(settings: ProjectSettings, only: Optional[list[str]]) -> list[str]:
    if settings.config_path is None:
        raise FileNotFoundError("figures: no _config.yml with an sddlib section here or above")
    names = notebook_names(settings)
    if only:
        unknown = [n for n in only if n not in names]
        if unknown:
            raise ValueError(f"only: unknown notebook {unknown[0]!r}; allowed: "
                             f"{', '.join(names)}")
        names = [n for n in names if n in only]
    return names


# The book's landing page: it collects the claims of the pages executed before it.
LANDING = "intro"


def pair_problem(settings: ProjectSettings, name: str) -> Optional[str]:
    """Why ``notebooks/<name>.ipynb`` (what papermill runs) and ``notebooks/<name>.py`` (the
    jupytext source ``sddlib figures`` runs and reviews read) disagree, in one line; None
    when their cells agree (type, source and tags)."""
    import jupytext  # the book extra, as above

    folder = settings.root / NOTEBOOK_DIR
    if not (folder / f"{name}.ipynb").is_file():
        return (f"notebooks/{name}.ipynb: missing; make it with: jupytext --sync "
                f"notebooks/{name}.py")

    def cells(path):
        return [(c.cell_type, c.source.strip(), sorted(c.metadata.get("tags", [])))
                for c in jupytext.read(path).cells]

    if cells(folder / f"{name}.py") != cells(folder / f"{name}.ipynb"):
        return (f"notebooks/{name}.ipynb and notebooks/{name}.py differ; pair them with: "
                f"jupytext --sync notebooks/{name}.py (the newer file wins)")
    return None


def checked_parameters(settings: ProjectSettings, profile: str, names: list[str],
                       overrides: Optional[dict] = None) -> dict[str, dict]:
    """The parameters of each of ``names`` under ``profile``, every one checked.

    Like the profile's ``common`` parameters, an override goes to the notebooks that
    declare it (``-p seeds=[0,1,2]`` changes the pages with several seeds, not the ones
    with a ``seed``); one that none of ``names`` declares is an error. Raises
    :class:`ValueError` with one line naming the parameter (``experiment.rate``, ...)
    and the notebook.
    """
    chosen = profile_section(settings, profile)
    all_names = notebook_names(settings)
    for name in (chosen.get("notebooks") or {}):
        if name not in all_names:
            raise ValueError(f"profiles.{profile}.notebooks.{name}: no such notebook; "
                             f"allowed: {', '.join(all_names)}")
    declared = {name: parameters_cell_defaults(settings.root / NOTEBOOK_DIR / f"{name}.py")
                for name in names}
    known = sorted(set().union(*declared.values())) if declared else []
    for key in (overrides or {}):
        if key not in known:
            which = f"notebook {names[0]}" if len(names) == 1 else "any notebook run"
            nearest = difflib.get_close_matches(str(key), known, n=3, cutoff=0.0)
            raise ValueError(f"{key}: not a parameter of {which}; the closest: "
                             f"{', '.join(nearest)} (each notebook's parameters cell lists "
                             "its own)")
    plans = {}
    for name in names:
        mine = {k: v for k, v in (overrides or {}).items() if k in declared[name]}
        parameters = notebook_parameters(settings, profile, name, mine)
        try:
            pages.check_parameters(name, parameters, declared[name])
        except ValueError as error:
            raise ValueError(f"{error} (notebook {name}, profile {profile})") from None
        plans[name] = parameters
    _check_experiment_overrides(overrides or {}, plans)
    return plans


def _check_experiment_overrides(overrides: dict, plans: dict[str, dict]) -> None:
    """An override of a base experiment's key (``-p experiment.noise=0.4``): its value
    checked as the config checks it, and refused when no run of the chosen pages (their
    checked ``plans``) would use it, because every variant of each page that has the base
    sets that key itself (``--only label-noise -p experiment.noise=2``: the page's
    ``noises`` set the noise)."""
    fields = {f.name for f in dataclasses.fields(ExperimentConfig)}
    for base in pages.keys_with_role("experiment"):
        entries = overrides.get(base)
        if not isinstance(entries, dict):
            continue
        for key, value in entries.items():
            if key in fields:  # an unknown key was named by the config's own check
                try:
                    checked_value(key, value)
                except ConfigError as error:
                    raise ValueError(f"{base}.{error}") from None
        having = [name for name, parameters in plans.items() if base in parameters]
        for key in entries:
            owners = {name: pages.unused_override(name, plans[name], base, key)
                      for name in having}
            if having and all(owner is not None for owner in owners.values()):
                name = having[0]
                raise ValueError(f"{base}.{key}: every run of notebook {name} sets its own "
                                 f"{key} (from its {owners[name]}), so this override would "
                                 f"change nothing; set {owners[name]} instead")


def book_folder() -> Path:
    """The folder executed pages go to: ``SDDLIB_BOOK_DIR`` (set by :func:`execute_notebook`
    for its kernel), else ``book/`` under the project's root."""
    if os.environ.get("SDDLIB_BOOK_DIR"):
        return Path(os.environ["SDDLIB_BOOK_DIR"])
    return load_settings().root / BOOK_DIR


def page_names() -> list[str]:
    """The book's notebook pages, in book order (``notebooks`` in ``_config.yml``)."""
    return notebook_names(load_settings())


def store():
    return RunStore(load_settings().runs_dir)


def in_kernel() -> bool:
    """Whether this code runs in a Jupyter kernel (a notebook page, papermill's or yours)."""
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def progress_setting() -> bool:
    """Whether runs show tqdm's progress bars: ``SDDLIB_PROGRESS`` (``0`` or ``1``) when
    set; else yes in a terminal and no in a notebook kernel, where every refresh of a bar
    is one more output stored in the executed notebook (hundreds for one page run by
    papermill); there a page prints one line for the runs it computes."""
    value = os.environ.get("SDDLIB_PROGRESS")
    if value is not None:
        return value != "0"
    return not in_kernel()


def finished(config: ExperimentConfig) -> bool:
    found = store().find(config)
    return found is not None and found.is_finished()


def stack_setting():
    value = os.environ.get("SDDLIB_STACK", "auto")
    allowed = {"auto": "auto", "1": True, "0": False}
    if value not in allowed:
        raise ValueError(f"SDDLIB_STACK: {value!r} is not allowed; allowed: auto, 1, 0")
    return allowed[value]


def workers_setting():
    return parse_workers(os.environ.get("SDDLIB_WORKERS", "auto"), "SDDLIB_WORKERS")
