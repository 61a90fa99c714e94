"""The book's figures: profiles, notebooks and the helpers their cells call.

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

The cell after ``parameters`` calls :func:`use_profile`, so a notebook given only
``profile`` (``papermill NB.ipynb OUT.ipynb -p profile paper``) loads that profile's
values, explicit values winning, and shows every value it used once.

``sddlib figures`` (:func:`make_figures`) first checks the parameters of every notebook it
will run (profile and ``-p`` overrides merged: each experiment the notebook builds must be
a valid :class:`ExperimentConfig`, seeds non-negative integers, ...; see
:func:`checked_parameters`), so bad input fails at once in one line, not in a kernel. It
skips the pages already executed with the same inputs (:func:`page_key`), asks the others
which runs they need without executing their figures (:func:`plan_runs`) and computes
them all in one schedule (:func:`schedule`); it then executes each page with papermill,
one process per notebook, into ``book/<name>.ipynb``, the landing page (which collects
every page's claims, :func:`claim`, :func:`book_claims`) last. ``jupyter-book build
book/`` renders those executed copies without executing them again, and executes the
missing ones first (:mod:`sddlib.book.extension`). The heavy compute lives in the run store, and
the analyses of stored runs beside them (:mod:`sddlib.base.cache`), so rerunning a figure with
other parameters recomputes only what is new.
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import difflib
import hashlib
import html
import inspect
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Optional

import pandas as pd
import yaml

from sddlib.book import pages
from sddlib.book.pages import merge  # noqa: F401 (figures.merge: the profiles' merge)
from sddlib.analysis.metrics import curve_summary
from sddlib.base.cache import cached
from sddlib.base.files import atomic_write_text
from sddlib.config.fields import ConfigError, ExperimentConfig, checked_value
from sddlib.config.project import ProjectSettings, load_settings
from sddlib.scheduling.executor import run_all
from sddlib.scheduling.parallel import parse_workers
from sddlib.scheduling.sweep import run_many
from sddlib.storage.store import RunStore

NOTEBOOK_DIR = "notebooks"
BOOK_DIR = "book"


# ---------------------------------------------------------------------------- profiles
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


# ---------------------------------------------------------------------------- executing
def make_figures(profile: str = "quick", only: Optional[list[str]] = None,
                 overrides: Optional[dict] = None, settings: Optional[ProjectSettings] = None,
                 book_dir: Optional[Path] = None, runs_dir: Optional[Path] = None,
                 log=print, force: bool = False, schedule_runs: bool = True) -> list[Path]:
    """Execute the notebooks of ``profile`` into the book folder; returns their paths.

    ``runs_dir`` replaces the run store of ``_config.yml`` for these notebooks (it reaches
    their kernels as ``SDDLIB_RUNS_DIR``). A page already executed from the same source,
    with the same parameters, by the same sddlib code and from the same input files
    (:func:`page_key`) is kept as it is, unless ``force``: its runs are stored, so
    executing it again would draw the same page. The landing page, which collects the
    other pages' claims, runs last, whenever another page changed. With
    ``schedule_runs`` the runs of every page to execute are computed first, in one
    schedule (:func:`plan_runs`, :func:`schedule`); the pages then only read them.
    """
    settings = settings or load_settings()
    names = _chosen(settings, only)
    book_dir = Path(book_dir or settings.root / BOOK_DIR)
    # every notebook's parameters are checked before the first one runs, so bad input
    # fails in a second with one line, not in a kernel minutes later
    plans = checked_parameters(settings, profile, names, overrides)
    for name in names:
        problem = pair_problem(settings, name)
        if problem:
            raise ValueError(problem)
    _stack_setting(), _workers_setting()  # the environment the kernels will read
    written = []
    order = [n for n in plans if n != LANDING] + [n for n in plans if n == LANDING]
    keys = {name: page_key(settings, name, plans[name], book_dir) for name in order}
    todo = [name for name in order
            if force or executed_key(book_dir / f"{name}.ipynb") != keys[name]]
    if schedule_runs and todo:  # the runs of every page to execute, in one schedule
        with _runs_dir_set(runs_dir):
            planned = plan_runs(settings, {name: plans[name] for name in todo})
            started = time.time()
            count = schedule([c for found in planned.values() for c in found], store(),
                             load_settings().data_dir, _workers_setting(),
                             progress=progress_setting())
        if count:
            log(f"[figures] {count} runs computed in one schedule in "
                f"{time.time() - started:.0f} s")
    for name in order:
        parameters = plans[name]
        output = book_dir / f"{name}.ipynb"
        if name == LANDING:  # its key holds the pages just executed
            keys[name] = page_key(settings, name, parameters, book_dir)
        if not force and executed_key(output) == keys[name]:
            log(f"[figures] {name} ({profile}) is up to date")
            written.append(output)
            continue
        started = time.time()
        log(f"[figures] {name} ({profile}) ...")
        written.append(execute_notebook(settings.root / NOTEBOOK_DIR / f"{name}.py",
                                        output, parameters, cwd=settings.root,
                                        runs_dir=runs_dir, key=keys[name]))
        log(f"[figures] {name} done in {time.time() - started:.0f} s")
    return written


# ---------------------------------------------------------------------------- one schedule
def plan_runs(settings: ProjectSettings, plans: dict[str, dict]) -> dict[str, list[ExperimentConfig]]:
    """The runs each page of ``plans`` (name -> its checked parameters) will ask for,
    from its declaration (:func:`sddlib.book.pages.page_runs`, which the page itself calls),
    without executing it. The declarations are evaluated in ``settings.root``, where the
    pages' kernels run (the landing page reads the executed datasets page from there).
    Runs a page asks for only after reading others (the re-dense branches of the levels a
    curve picks) are not in the plan: the page computes them itself."""
    planned = {}
    with contextlib.chdir(settings.root):
        for name, parameters in plans.items():
            defaults = parameters_cell_defaults(settings.root / NOTEBOOK_DIR / f"{name}.py")
            found = pages.page_runs(name, {**defaults, **parameters})
            planned[name] = [config for group in found.values() for config in group]
    return planned


def each_once(configs: Iterable[ExperimentConfig]) -> dict[str, ExperimentConfig]:
    """Run name -> config, each run once, at the most levels asked for (a run extended to
    more levels keeps its first ones: a variant that asks for fewer reads those)."""
    wanted: dict[str, ExperimentConfig] = {}
    for config in configs:
        known = wanted.get(config.run_name())
        if known is None or config.levels > known.levels:
            wanted[config.run_name()] = config
    return wanted


def schedule(configs: Iterable[ExperimentConfig], store_: RunStore, data_dir: Path,
             workers="auto", progress: bool = True, ray: Optional[str] = None) -> int:
    """Compute every run of ``configs`` not yet finished, in one schedule
    (:func:`sddlib.scheduling.executor.run_all`): each run once (at the most levels asked
    for), the runs it needs first, the biggest first, in one pool of ``workers`` processes
    or as Ray tasks on the cluster at ``ray``, with runs that differ only in seed, noise or
    criterion stacked where stacking pays (CUDA, or ``SDDLIB_STACK=1``). Returns how many
    runs were computed; raises :class:`RuntimeError` naming the runs that failed, once the
    others are done."""
    summary = run_all(list(configs), store_, workers=workers, ray=ray, stack=_stack_setting(),
                      progress=progress, data_dir=data_dir)
    if summary.failed:
        raise RuntimeError(f"{len(summary.failed)} run(s) failed: " + "; ".join(
            f"{name}: {why}" for name, why in summary.failed.items()))
    return len(summary.computed)


def compute_figures(profile: str = "quick", only: Optional[list[str]] = None,
                    overrides: Optional[dict] = None,
                    settings: Optional[ProjectSettings] = None,
                    runs_dir: Optional[Path] = None, log=print,
                    ray: Optional[str] = None) -> int:
    """``sddlib figures --compute-only``: every run the pages of ``profile`` need, in one
    schedule (on the Ray cluster at ``ray`` if given), executing no page. Returns how many
    runs were computed."""
    settings = settings or load_settings()
    names = _chosen(settings, only)
    plans = checked_parameters(settings, profile, names, overrides)
    with _runs_dir_set(runs_dir):
        planned = plan_runs(settings, plans)
        configs = [config for found in planned.values() for config in found]
        log(f"[figures] {len(configs)} runs asked for by {sum(map(bool, planned.values()))} "
            f"pages ({profile})")
        started = time.time()
        count = schedule(configs, store(), load_settings().data_dir, _workers_setting(),
                         progress=progress_setting(), ray=ray)
        log(f"[figures] {count} runs computed in {time.time() - started:.0f} s")
    return count


def plan_table(profile: str = "quick", only: Optional[list[str]] = None,
               overrides: Optional[dict] = None,
               settings: Optional[ProjectSettings] = None) -> pd.DataFrame:
    """What the pages of ``profile`` would train (``sddlib figures --plan``): one row per
    dataset and model with its runs and epochs (levels + 1 times epochs per run; the
    re-dense branches a page picks after reading a curve not counted), heaviest first."""
    settings = settings or load_settings()
    plans = checked_parameters(settings, profile, _chosen(settings, only), overrides)
    wanted = each_once(c for found in plan_runs(settings, plans).values() for c in found)
    rows = [{"dataset": c.dataset, "model": c.model, "runs": 1,
             "epochs": (c.levels + 1) * c.epochs} for c in wanted.values()]
    if not rows:
        return pd.DataFrame(columns=["dataset", "model", "runs", "epochs"])
    table = pd.DataFrame(rows).groupby(["dataset", "model"], as_index=False).sum()
    return table.sort_values("epochs", ascending=False, ignore_index=True)


@contextlib.contextmanager
def _runs_dir_set(runs_dir: Optional[Path]):
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


def _chosen(settings: ProjectSettings, only: Optional[list[str]]) -> list[str]:
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


def page_key(settings: ProjectSettings, name: str, parameters: dict, book_dir: Path) -> str:
    """What an executed page depends on, as one hash: its source, its parameters, the
    sddlib code, and the small input files pages read (published tables under
    ``data/reference``, the benchmark records). The landing page adds the other executed
    pages. The runs are not in it: a run's numbers follow from its config, which the
    parameters fix, and a finished run is never recomputed."""
    digest = hashlib.sha256()
    digest.update(json.dumps(parameters, sort_keys=True, default=str).encode())
    files = [settings.root / NOTEBOOK_DIR / f"{name}.py"]
    files += sorted(Path(__file__).parent.glob("*.py"))
    files += sorted((settings.root / "data" / "reference").glob("*"))
    files += [settings.root / "benchmarks" / "MEASUREMENTS.md",
              settings.root / "benchmarks" / "results" / "latest.md"]
    if name == LANDING:
        files += [book_dir / f"{other}.ipynb" for other in notebook_names(settings)
                  if other != LANDING]
    for path in files:
        digest.update(str(path.name).encode())
        digest.update(path.read_bytes() if path.is_file() else b"-")
    return digest.hexdigest()


def executed_key(path: Path) -> Optional[str]:
    """The :func:`page_key` an executed page was made with (None: none, or unreadable)."""
    try:
        return json.loads(path.read_text())["metadata"]["sddlib"]["key"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def executed_profile(path: Path) -> Optional[str]:
    """The profile an executed page was computed on: as sddlib recorded it, else the
    ``profile`` papermill was given (the notebook's default, quick, when it was given
    none); None for a page papermill did not execute or that cannot be read."""
    try:
        metadata = json.loads(path.read_text())["metadata"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if isinstance(metadata.get("sddlib"), dict) and "profile" in metadata["sddlib"]:
        return metadata["sddlib"]["profile"]
    if isinstance(metadata.get("papermill"), dict):
        return (metadata["papermill"].get("parameters") or {}).get("profile", "quick")
    return None


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


def execute_notebook(source: Path, output: Path, parameters: dict, cwd: Path,
                     runs_dir: Optional[Path] = None, key: Optional[str] = None) -> Path:
    """jupytext source -> executed notebook, in a papermill process of its own.

    The executed copy replaces ``output`` only when every cell ran; a failing notebook is
    kept beside it as ``<name>.failed.ipynb`` to read the error in. The copy records its
    profile, parameters and :func:`page_key` (``key``) in its metadata (``sddlib``).
    """
    import jupytext  # the book extra, as above

    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        unexecuted = Path(scratch) / f"{source.stem}.ipynb"
        jupytext.write(jupytext.read(source), unexecuted, fmt="ipynb")
        executed = output.with_name(f".{output.stem}.executing.ipynb")
        command = [sys.executable, "-m", "papermill", str(unexecuted), str(executed),
                   "--cwd", str(cwd), "--kernel", "python3", "--no-progress-bar",
                   "-y", yaml.safe_dump(parameters, sort_keys=False)]
        env = {**os.environ, "SDDLIB_PROGRESS": "0",
               "SDDLIB_BOOK_DIR": str(output.parent.resolve())}
        if runs_dir is not None:
            env["SDDLIB_RUNS_DIR"] = str(Path(runs_dir).resolve())
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            failed = output.with_name(f"{output.stem}.failed.ipynb")
            if executed.exists():
                os.replace(executed, failed)
            tail = "\n".join(result.stderr.strip().splitlines()[-15:])
            raise RuntimeError(f"notebook {source.name} failed (see {failed}):\n{tail}")
        _finish_page(executed, {"profile": parameters.get("profile"),
                                "parameters": parameters, "key": key})
        os.replace(executed, output)
        failed = output.with_name(f"{output.stem}.failed.ipynb")
        if failed.exists():  # an earlier failure, fixed now
            failed.unlink()
    return output


def _finish_page(notebook_path: Path, record: dict) -> None:
    """Hide the parameter cells (:func:`hide_parameter_cells`) and record ``record`` in
    the notebook's metadata (``sddlib``)."""
    notebook = json.loads(notebook_path.read_text())
    _hide_parameter_cells(notebook)
    notebook["metadata"]["sddlib"] = record
    notebook_path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False, default=str))


def hide_parameter_cells(path: Path) -> bool:
    """Tag the ``parameters`` cell (the notebook's defaults) and papermill's injected one
    ``remove-cell`` in the executed page ``path``, so the book shows the parameters once:
    the box :func:`use_profile` writes with every value the page was computed with.
    Rewrites the file (atomically) only when a tag was missing; True then."""
    notebook = json.loads(path.read_text())
    if not _hide_parameter_cells(notebook):
        return False
    atomic_write_text(path, json.dumps(notebook, indent=1, ensure_ascii=False, default=str))
    return True


def _hide_parameter_cells(notebook: dict) -> bool:
    changed = False
    for cell in notebook.get("cells", []):
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if {"parameters", "injected-parameters"} & set(tags) and "remove-cell" not in tags:
            tags.append("remove-cell")
            changed = True
    return changed


# ---------------------------------------------------------------------------- profiles in a kernel
def use_profile(name: str, namespace: dict, show: bool = True) -> None:
    """Give notebook ``name`` the parameters of the profile its ``profile`` parameter names.

    Called by every notebook in the cell after its ``parameters`` cell, with
    ``globals()``. The profile's parameters come from the root ``_config.yml`` (as
    ``sddlib figures --profile`` gives them); values set explicitly win: those papermill
    injected (``papermill NB.ipynb OUT.ipynb -p profile paper -p seeds "[0]"``; its
    injected cell is read back from the kernel's input history) and those edited in the
    ``parameters`` cell (any value that differs from the cell as written in
    ``notebooks/<name>.py``). The result is checked like ``sddlib figures`` checks it,
    written into ``namespace`` and shown once as the page's parameters box (``show``).
    """
    settings = load_settings()
    if settings.config_path is None:
        raise FileNotFoundError("use_profile: no _config.yml with an sddlib section in the "
                                "working folder or above; run from the repository")
    declared = parameters_cell_defaults(settings.root / NOTEBOOK_DIR / f"{name}.py")
    given = _injected_names(namespace)
    explicit = {key: namespace[key] for key in declared
                if key != "profile" and key in namespace and
                (key in given or namespace[key] != declared[key])}
    profile = namespace.get("profile", declared.get("profile", "quick"))
    parameters = notebook_parameters(settings, profile, name, explicit)
    try:
        pages.check_parameters(name, parameters, declared)
    except ValueError as error:
        raise ValueError(f"{error} (notebook {name}, profile {profile})") from None
    namespace.update(parameters)
    if show:
        from IPython.display import Markdown, display

        used = {key: namespace.get(key, default) for key, default in declared.items()}
        shown = "\n".join(yaml.safe_dump({key: value}, sort_keys=False, width=88,
                                          default_flow_style=None if isinstance(
                                              value, (dict, list)) else False).strip()
                           for key, value in used.items())
        display(Markdown(f"**Parameters** (profile `{profile}`; every value this page was "
                         f"computed with):\n\n```yaml\n{shown}\n```"))


def book_folder() -> Path:
    """The folder executed pages go to: ``SDDLIB_BOOK_DIR`` (set by :func:`execute_notebook`
    for its kernel), else ``book/`` under the project's root."""
    if os.environ.get("SDDLIB_BOOK_DIR"):
        return Path(os.environ["SDDLIB_BOOK_DIR"])
    return load_settings().root / BOOK_DIR


def page_names() -> list[str]:
    """The book's notebook pages, in book order (``notebooks`` in ``_config.yml``)."""
    return notebook_names(load_settings())


def left_for(name: str, key: str, shown, profile: str = "paper") -> list[str]:
    """The variants of page ``name``'s parameter ``key`` (a dict of labels) that
    ``profile`` computes and this page, with ``shown``, leaves out: what a page says it
    left for the paper profile."""
    theirs = notebook_parameters(load_settings(), profile, name).get(key) or {}
    return [label for label in theirs if label not in shown]


def page_parameters(name: str, profile: str) -> dict:
    """The parameters page ``name`` was executed with, when its executed copy in
    :func:`book_folder` was computed on ``profile``; else the profile's own; the
    notebook's defaults for any it leaves out."""
    path = book_folder() / f"{name}.ipynb"
    settings = load_settings()
    defaults = parameters_cell_defaults(settings.root / NOTEBOOK_DIR / f"{name}.py")
    if executed_profile(path) == profile:
        metadata = json.loads(path.read_text())["metadata"]
        if "sddlib" in metadata:
            return {**defaults, **metadata["sddlib"]["parameters"]}
        given = (metadata.get("papermill") or {}).get("parameters") or {}  # papermill's own
        return {**defaults, **notebook_parameters(
            settings, profile, name, {k: v for k, v in given.items() if k != "profile"})}
    return {**defaults, **notebook_parameters(settings, profile, name)}


def _injected_names(namespace: dict) -> set[str]:
    """The names papermill's injected ``# Parameters`` cell assigned, from the IPython
    input history (``In``) of the kernel; empty outside a papermill run."""
    for source in reversed(namespace.get("In") or []):
        if isinstance(source, str) and source.lstrip().startswith("# Parameters"):
            try:
                tree = ast.parse(source)
            except SyntaxError:
                return set()
            return {target.id for node in tree.body if isinstance(node, ast.Assign)
                    for target in node.targets if isinstance(target, ast.Name)}
    return set()


# ---------------------------------------------------------------------------- notebook helpers
def store():
    return RunStore(load_settings().runs_dir)


def gather(variants: dict[str, list[ExperimentConfig]], compute_missing: bool = True,
           label: str = "variant"):
    """The tidy levels of every variant's runs, with a ``label`` column naming the variant.

    The runs of all variants are computed in one :func:`sweep.run_many` call, so on
    CUDA runs that differ only in seed, label noise or pruning criterion train together as
    stacked ensembles, across variants (see :func:`sddlib.scheduling.groups.stack_groups`; on the CPU
    stacking does not pay, see :func:`sddlib.scheduling.groups.stacking_pays`). ``SDDLIB_STACK=1`` in the
    environment stacks on any device, ``SDDLIB_STACK=0`` never (``sddlib figures`` passes
    the environment on to the notebooks). The runs (or stacked groups) train in parallel
    processes, one per core on the CPU (see :mod:`sddlib.scheduling.parallel`); ``SDDLIB_WORKERS=N``
    sets how many (``auto`` by default, ``1``: one after another). A run in two variants
    is computed once (at the most ``levels`` asked for) and its rows appear under both
    labels, each cut at that variant's ``levels``. With ``compute_missing=False`` nothing is
    computed and each variant shows its finished runs, as :func:`sweep.run_many` says.
    """
    settings = load_settings()
    progress = progress_setting()
    if compute_missing:
        wanted = each_once(config for group in variants.values() for config in group)
        if in_kernel() and not progress:
            missing = [c for c in wanted.values() if not _finished(c)]
            if missing:  # one line instead of the bars (see progress_setting)
                print(f"computing {len(missing)} of {len(wanted)} runs (SDDLIB_PROGRESS=1 "
                      "shows their progress bars)")
        run_many(list(wanted.values()), store(), progress=progress,
                 stack=_stack_setting(), workers=_workers_setting(),
                 data_dir=settings.data_dir)
    frames = []
    for name, group in variants.items():  # now only reads the finished runs
        frame = run_many(group, store(), compute_missing=False, progress=progress,
                         data_dir=settings.data_dir)
        frame[label] = name
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    if frame.empty:
        raise RuntimeError("no finished runs for this figure; run with compute_missing=True")
    return frame


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


def _finished(config: ExperimentConfig) -> bool:
    found = store().find(config)
    return found is not None and found.is_finished()


def _stack_setting():
    value = os.environ.get("SDDLIB_STACK", "auto")
    allowed = {"auto": "auto", "1": True, "0": False}
    if value not in allowed:
        raise ValueError(f"SDDLIB_STACK: {value!r} is not allowed; allowed: auto, 1, 0")
    return allowed[value]


def _workers_setting():
    return parse_workers(os.environ.get("SDDLIB_WORKERS", "auto"), "SDDLIB_WORKERS")


def computed(function, **arguments):
    """``function(**arguments)`` for a result that comes from no run (the theory page's
    simulations): kept in the run store's ``.analysis`` folder, keyed by the arguments and
    the source of the function's module, and reused (:mod:`sddlib.base.cache`)."""
    module = inspect.getmodule(function)
    return cached(load_settings().runs_dir / ".analysis", f"{module.__name__}.{function.__name__}",
                  arguments, lambda: function(**arguments), code=(module,))


def book_curves(profile: str, exclude: Iterable[str] = (LANDING,)) -> pd.DataFrame:
    """The tidy levels of every finished run the book's pages draw on ``profile`` (each
    page with the parameters it was executed with, :func:`page_parameters`; the runs
    found by :func:`plan_runs`), for analyses across the whole book. Runs not finished
    are left out."""
    settings = load_settings()
    plans = {name: page_parameters(name, profile) for name in notebook_names(settings)
             if name not in exclude}
    wanted = each_once(c for found in plan_runs(settings, plans).values() for c in found)
    return run_many(list(wanted.values()), store(), compute_missing=False, progress=False,
                    data_dir=settings.data_dir)


def book_early_stops(profile: str, patience: int = 3) -> pd.DataFrame:
    """:func:`metrics.early_stop_report` on every curve of the book (:func:`book_curves`)
    long enough to judge (at least twice ``patience`` levels), each named in words
    (``curve``, :func:`curve_name`) and sorted by it; ``validation`` says yes or no."""
    from sddlib.analysis.metrics import early_stop_report

    curves = book_curves(profile)
    if not curves.empty:
        curves = curves[curves.groupby("run")["level"].transform("max") >= 2 * patience]
    if curves.empty:  # no run of the book stored yet
        return pd.DataFrame(columns=["run", "curve", "validation", "keep_level",
                                     "keep_sparsity", "keep_test_acc", "best_level",
                                     "best_sparsity", "best_test_acc", "test_acc_lost",
                                     "levels_saved"])
    report = early_stop_report(curves, by="run", patience=patience)
    described = curves.groupby("run").first()
    report["curve"] = [curve_name(described.loc[run]) for run in report.run]
    report["validation"] = report["validation"].map({True: "yes", False: "no"})
    return report.sort_values("curve", ignore_index=True)


def curve_name(row) -> str:
    """A run's curve in words: dataset, model, noise, criterion, retraining, seed."""
    noise = f"{row.noise:.0%} {row.noise_kind} labels" if row.noise else "clean labels"
    size = ""  # the model's size where the config sets one
    if row.model == "mlp":
        widths = row.widths if isinstance(row.widths, (list, tuple)) else \
            yaml.safe_load(str(row.widths))
        size = " " + "-".join(str(w) for w in widths)
    elif isinstance(getattr(row, "width", None), (int, float)) and not pd.isna(row.width):
        size = f" width {int(row.width)}"
    extras = ""
    if getattr(row, "weight_decay", 0):
        extras += f", L2 {row.weight_decay:g}"
    if getattr(row, "distill_from", "none") not in ("none", None):
        extras += f", distilled ({row.distill_from} teacher)"
    return (f"{row.dataset} {row.model}{size}, {noise}, {row.criterion}, {row.retrain}"
            f"{extras}, seed {row.seed}")


def lottery_runs(experiment: dict, seeds, compute_missing: bool = True):
    """The profile's lottery runs of ``seeds``: their levels (one frame) and the runs
    themselves by seed (for the pages that analyse runs' checkpoints)."""
    variants = pages.configs(experiment, list(seeds), {"lottery": {"retrain": "lottery"}})
    frame = gather(variants, compute_missing)
    return frame, {config.seed: store().find(config) for config in variants["lottery"]}


def lottery_run(experiment: dict, seed: int, compute_missing: bool = True):
    """The profile's lottery run for one seed: its levels, the run itself and its landmarks
    (:func:`lottery_runs` of one seed)."""
    frame, runs = lottery_runs(experiment, [seed], compute_missing)
    return frame, runs[seed], curve_summary(frame)


def glue(name: str, value: Any, display: bool = False) -> None:
    """myst-nb's glue, silent by default: the page shows the value where the text cites it."""
    from myst_nb import glue as myst_glue

    myst_glue(name, value, display=display)
    if type(value).__name__ == "Figure":  # shown where glued, not again below the cell
        import matplotlib.pyplot as plt

        plt.close(value)


CLAIM_PREFIX = "claim:"


def claim(name: str, statement: str, verdict: str, evidence=None) -> None:
    """Glue ``verdict`` (:func:`metrics.verdict`'s words) under ``name`` for the page's
    text, and record the claim with it in the executed page, where the landing page's
    table of every claim in the book (:func:`book_claims`) finds it. ``evidence``: the
    :class:`metrics.Judgement` the verdict rests on, or a dict of them by case (dataset,
    mode); the table shows each one's estimate, interval and seed count."""
    glue(name, verdict)
    if evidence is None:
        cases = []
    elif isinstance(evidence, dict):
        cases = [{"case": str(case), **judgement.record()}
                 for case, judgement in evidence.items()]
    else:
        cases = [{"case": "", **evidence.record()}]
    glue(CLAIM_PREFIX + name, json.dumps({"claim": statement, "verdict": verdict,
                                          "evidence": cases}))


def book_claims(book_dir: Path, names: Iterable[str]) -> pd.DataFrame:
    """Every claim recorded by :func:`claim` in the executed pages ``names`` (in that
    order) under ``book_dir``: columns page (its file name), title (its first heading),
    claim, verdict (the full words), judged (holds / does not hold here / inconclusive
    here / cannot be judged here), evidence (the judgements' records, a list), interval
    (each case's estimate and interval, one line per case) and seeds (the seed counts). A
    page not executed yet contributes nothing."""
    from sddlib.analysis.metrics import INCONCLUSIVE, VERDICTS

    states = (*VERDICTS.values(), INCONCLUSIVE)
    rows = []
    for name in names:
        path = Path(book_dir) / f"{name}.ipynb"
        if not path.is_file():
            continue
        notebook = json.loads(path.read_text())
        title = next((line.lstrip("# ").strip() for cell in notebook["cells"]
                      if cell["cell_type"] == "markdown"
                      for line in "".join(cell["source"]).splitlines()
                      if line.startswith("# ")), name)
        for cell in notebook["cells"]:
            for output in cell.get("outputs", []):
                record = output.get("metadata", {}).get("scrapbook", {})
                if not str(record.get("name", "")).startswith(CLAIM_PREFIX):
                    continue
                text = output["data"][record["mime_prefix"] + "text/plain"]
                found = json.loads(ast.literal_eval("".join(text)))
                judged = next((words for words in states
                               if found["verdict"].startswith(words)), "?")
                cases = found.get("evidence", [])
                rows.append({"page": name, "title": title, "claim": found["claim"],
                             "verdict": found["verdict"], "judged": judged,
                             "evidence": cases,
                             "interval": "\n".join(
                                 (f"{case['case']}: " if case["case"] else "")
                                 + case["interval"] for case in cases),
                             "seeds": _seed_counts(cases)})
    columns = ["page", "title", "claim", "verdict", "judged", "evidence", "interval", "seeds"]
    return pd.DataFrame(rows, columns=columns)


def _seed_counts(cases: list[dict]) -> str:
    """The seed counts of a claim's cases: one number when they agree, else per case."""
    counts = {case["seeds"] for case in cases}
    if len(counts) <= 1:
        return "".join(str(count) for count in counts)
    return "\n".join((f"{case['case']}: " if case["case"] else "") + str(case["seeds"])
                     for case in cases)


def claims_table(claims: pd.DataFrame):
    """:func:`book_claims` as the landing page's table: each claim, its estimate with its
    interval and seed count per case, its verdict and a link to the page that judges it."""
    from sddlib.analysis.metrics import CONFIDENCE

    lines = (lambda text: html.escape(text).replace("\n", "<br>"))  # noqa: E731
    shown = pd.DataFrame({
        "claim": claims.claim,
        f"estimate [{CONFIDENCE:.0%} interval]": [lines(text) or "-"
                                                  for text in claims.interval],
        "seeds": [lines(text) or "-" for text in claims.seeds],
        "verdict": claims.verdict,
        "page": [f'<a href="{page}.html">{title}</a>'
                 for page, title in zip(claims.page, claims.title)]})
    return shown.style.hide(axis="index")


def glue_summary(summary, prefix: str = "") -> None:
    """Glue a curve's landmarks (accuracies and sparsities) for the page's text, and its
    shape in words as ``<prefix>shape`` (:func:`shape_words`)."""
    for key, value in summary.as_dict().items():
        glue(f"{prefix}{key}", value)
    glue(f"{prefix}shape", shape_words(summary))


def shape_words(summary) -> str:
    """Where a curve bottoms out and peaks, in words that hold for every curve: "bottoms
    out at 67.2% sparsity and peaks at 89.3% (84.2%)", or, when its best level comes before
    any worst point, "has no dip before its peak at 20.0% sparsity (84.2%)"."""
    if summary.worst_level < 0:
        return f"has no dip before its peak at {summary.best_sparsity:.1%} sparsity " \
               f"({summary.best_acc:.1%})"
    return f"bottoms out at {summary.worst_sparsity:.1%} sparsity and peaks at " \
           f"{summary.best_sparsity:.1%} ({summary.best_acc:.1%})"


# Headings in words for the landmark columns of metrics.summaries and the comparison.
HEADINGS = {"dataset_name": "dataset", "retrain": "retraining", "criterion": "criterion",
            "dense_acc": "dense", "worst_acc": "worst", "worst_sparsity": "worst at sparsity",
            "best_acc": "best", "best_sparsity": "best at sparsity", "last_acc": "last",
            "last_sparsity": "last at sparsity", "seeds": "seeds",
            "three_phases": "three phases", "who": "numbers from", "source": "measured by",
            "data": "data", "training images": "training images",
            "dip": "dip (dense − worst)", "rise": "rise (best − worst)",
            "smallest_phase": "smallest phase [interval]", "over_seeds": "over seeds"}


def summary_table(table, label: str, judgements: Optional[dict] = None):
    """The landmarks of several curves as a readable table (percentages); with
    ``judgements`` (label -> :class:`metrics.Judgement` of its three phases over seeds),
    each curve's smallest phase with its interval and the verdict over seeds beside them."""
    columns = [label, "dense_acc", "worst_acc", "worst_sparsity", "best_acc", "best_sparsity",
               "last_acc", "last_sparsity", "seeds", "three_phases"]
    shown = table[columns].copy()
    if judgements:
        shown["smallest_phase"] = [judgements[key].interval() for key in shown[label]]
        shown["over_seeds"] = [judgements[key].state for key in shown[label]]
    shown["three_phases"] = shown.three_phases.map({True: "yes", False: "no"})
    return _worded(shown, percent=[c for c in columns if c.endswith(("_acc", "_sparsity"))])


def _worded(table, percent):
    """``table`` with word headings (:data:`HEADINGS`), ``percent`` columns in percent."""
    headings = {c: HEADINGS.get(c, c.replace("_", " ")) for c in table.columns}
    shown = table.rename(columns=headings)
    return shown.style.format({headings[c]: "{:.1%}" for c in percent},
                              na_rep="-").hide(axis="index")


def reference_path(name: str) -> Path:
    """A table of published numbers under ``data/reference/``."""
    return load_settings().root / "data" / "reference" / name


def comparison_table(comparison):
    """Ours beside the paper's, per dataset, as a readable table."""
    columns = ["dataset", "who", "source", "data", "training images", "dense_acc",
               "worst_acc", "worst_sparsity", "best_acc", "best_sparsity", "last_acc", "dip",
               "rise"]
    columns = [c for c in columns if c in comparison]
    shown = comparison[columns].sort_values(["dataset", "who"])
    return _worded(shown, percent=[c for c in columns if c.endswith(("_acc", "_sparsity"))
                                   or c in ("dip", "rise")])


def rerun_command(name: str, example: str = "") -> str:
    return f"sddlib figures --only {name}" + (f" {example}" if example else "")


def sparsity_list(values) -> str:
    """"name 12.3%, other none": a sparsity per name (NaN: never reached) in words."""
    return ", ".join(f"{name} {sparsity:.1%}" if not math.isnan(sparsity) else f"{name} none"
                     for name, sparsity in dict(values).items())


def percent_table(table, headers: dict, plain=()):
    """The columns of ``headers`` (column -> heading) as a readable table, every one in
    percent but the ``plain`` columns (named by column)."""
    shown = table[list(headers)].rename(columns=headers)
    percent = {headers[c]: "{:.1%}" for c in headers if c not in plain}
    return shown.style.format(percent, na_rep="-").hide(axis="index")


def distance_claims_table(claims):
    """The learning-distance claim per dataset (``metrics.distance_claims``) as a table."""
    return claims.rename(columns={
        "peak_sparsity": "distance peak (sparsity)", "worst_sparsity": "test minimum (sparsity)",
        "levels_apart": "levels apart", "peak_distance": "peak distance",
        "last_distance": "last distance", "last_over_peak": "last / peak",
        "interior_peak": "interior peak", "rho": "Spearman ρ", "rho_levels": "levels in ρ",
    }).style.format({"distance peak (sparsity)": "{:.1%}", "test minimum (sparsity)": "{:.1%}",
                     "levels apart": "{:.0f}", "peak distance": "{:.2f}",
                     "last distance": "{:.2f}", "last / peak": "{:.0%}", "Spearman ρ": "{:.2f}"},
                    na_rep="-").hide(axis="index")


def barrier_table(barriers):
    """Barriers per level (``landscape.barrier_table``) as a table: the training and test
    barrier side by side, with the level's sparsity and its test accuracy at both ends."""
    test = barriers[barriers.split == "test"].set_index("level")
    shown = barriers.pivot(index="level", columns="split", values="barrier").add_suffix(" barrier")
    shown = shown.join(test[["sparsity", "sparse_acc", "redense_acc"]]).reset_index()
    return shown.style.format(
        {"sparsity": "{:.1%}", "sparse_acc": "{:.1%}", "redense_acc": "{:.1%}",
         "train barrier": "{:.3f}", "test barrier": "{:.3f}"}).hide(axis="index")


def stand_in_text(comparison) -> str:
    """One clause per dataset of ours that stands in for one of the paper's
    (``metrics.compare_with_reference`` rows with ``source`` "both"): sizes, dip and rise
    beside the paper's."""
    theirs = comparison[comparison.who.eq("paper")].set_index("dataset")
    ours = comparison[comparison.who.eq("ours") & comparison.source.eq("both")]
    sentences = []
    for _, row in ours.iterrows():
        their = theirs.loc[row["dataset"]]
        sentences.append(
            f"our {row['data']} ({row['training images']:,.0f} training images) stands in for "
            f"the paper's {row['dataset']} ({their['training images']:,.0f}): a dip of "
            f"{row['dip']:.1%} below dense against the paper's {their['dip']:.1%}, a rise of "
            f"{row['rise']:.1%} out of it against {their['rise']:.1%}")
    text = "; ".join(sentences)
    return (text[0].upper() + text[1:]) if text else \
        "No dataset of this profile stands in for one of the paper's"
