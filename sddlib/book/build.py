"""Building the book's pages: plan every page's runs, compute them in one schedule, execute
the pages.

``sddlib figures`` (:func:`make_figures`) checks the parameters of every page it will run
(:func:`sddlib.book.profiles.checked_parameters`), skips the pages already executed with
the same inputs (:func:`page_key`), lists the others' runs from their declarations
(:func:`plan_runs`, :func:`sddlib.book.pages.page_runs`) and computes them all in one
schedule (:func:`schedule`: the one plan and executor of :mod:`sddlib.scheduling`); it then
executes each page with papermill, one process per notebook, into ``book/<name>.ipynb``,
the landing page (which collects every page's claims) last. ``jupyter-book build book/``
renders those executed copies without executing them again, and executes the missing
ones first (:mod:`sddlib.book.extension`). The heavy compute lives in the run store, and
the analyses of stored runs beside them (:mod:`sddlib.base.cache`), so rerunning a figure
with other parameters recomputes only what is new.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd
import yaml

from sddlib.base.files import atomic_write_text
from sddlib.book import pages
from sddlib.book.profiles import (
    BOOK_DIR,
    LANDING,
    NOTEBOOK_DIR,
    checked_parameters,
    chosen_notebooks,
    notebook_names,
    pair_problem,
    parameters_cell_defaults,
    progress_setting,
    runs_dir_set,
    stack_setting,
    store,
    workers_setting,
)
from sddlib.config.fields import ExperimentConfig
from sddlib.config.project import ProjectSettings, load_settings
from sddlib.scheduling.executor import run_all
from sddlib.storage.store import RunStore


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
    names = chosen_notebooks(settings, only)
    book_dir = Path(book_dir or settings.root / BOOK_DIR)
    # every notebook's parameters are checked before the first one runs, so bad input
    # fails in a second with one line, not in a kernel minutes later
    plans = checked_parameters(settings, profile, names, overrides)
    for name in names:
        problem = pair_problem(settings, name)
        if problem:
            raise ValueError(problem)
    stack_setting(), workers_setting()  # the environment the kernels will read
    written = []
    order = [n for n in plans if n != LANDING] + [n for n in plans if n == LANDING]
    keys = {name: page_key(settings, name, plans[name], book_dir) for name in order}
    todo = [name for name in order
            if force or executed_key(book_dir / f"{name}.ipynb") != keys[name]]
    if schedule_runs and todo:  # the runs of every page to execute, in one schedule
        with runs_dir_set(runs_dir):
            planned = plan_runs(settings, {name: plans[name] for name in todo})
            started = time.time()
            count = schedule([c for found in planned.values() for c in found], store(),
                             load_settings().data_dir, workers_setting(),
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


def plan_runs(settings: ProjectSettings,
              plans: dict[str, dict]) -> dict[str, list[ExperimentConfig]]:
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
    runs were computed; once the others are done, raises for the runs that failed as
    :meth:`sddlib.scheduling.plan.Summary.raise_failures` says (the one error of bad input
    that failed them all, else a :class:`RuntimeError` naming each)."""
    summary = run_all(list(configs), store_, workers=workers, ray=ray, stack=stack_setting(),
                      progress=progress, data_dir=data_dir)
    summary.raise_failures()
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
    names = chosen_notebooks(settings, only)
    plans = checked_parameters(settings, profile, names, overrides)
    with runs_dir_set(runs_dir):
        planned = plan_runs(settings, plans)
        configs = [config for found in planned.values() for config in found]
        log(f"[figures] {len(configs)} runs asked for by {sum(map(bool, planned.values()))} "
            f"pages ({profile})")
        started = time.time()
        count = schedule(configs, store(), load_settings().data_dir, workers_setting(),
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
    plans = checked_parameters(settings, profile, chosen_notebooks(settings, only), overrides)
    wanted = each_once(c for found in plan_runs(settings, plans).values() for c in found)
    rows = [{"dataset": c.dataset, "model": c.model, "runs": 1,
             "epochs": (c.levels + 1) * c.epochs} for c in wanted.values()]
    if not rows:
        return pd.DataFrame(columns=["dataset", "model", "runs", "epochs"])
    table = pd.DataFrame(rows).groupby(["dataset", "model"], as_index=False).sum()
    return table.sort_values("epochs", ascending=False, ignore_index=True)


def page_key(settings: ProjectSettings, name: str, parameters: dict, book_dir: Path) -> str:
    """What an executed page depends on, as one hash: its source, its parameters, the
    sddlib code, and the small input files pages read (published tables under
    ``data/reference``, the benchmark records). The landing page adds the other executed
    pages. The runs are not in it: a run's numbers follow from its config, which the
    parameters fix, and a finished run is never recomputed."""
    digest = hashlib.sha256()
    digest.update(json.dumps(parameters, sort_keys=True, default=str).encode())
    files = [settings.root / NOTEBOOK_DIR / f"{name}.py"]
    files += code_files()
    files += sorted((settings.root / "data" / "reference").glob("*"))
    files += [settings.root / "benchmarks" / "MEASUREMENTS.md",
              settings.root / "benchmarks" / "results" / "latest.md"]
    if name == LANDING:
        files += [book_dir / f"{other}.ipynb" for other in notebook_names(settings)
                  if other != LANDING]
    for path in files:
        digest.update(str(path.relative_to(PACKAGE.parent) if path.is_relative_to(PACKAGE)
                          else path.name).encode())
        digest.update(path.read_bytes() if path.is_file() else b"-")
    return digest.hexdigest()


PACKAGE = Path(__file__).resolve().parents[1]  # sddlib/


def code_files() -> list[Path]:
    """Every module of sddlib, in every package: the code a page's key depends on."""
    return sorted(PACKAGE.rglob("*.py"))


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
