"""The book's figures: profiles, notebooks and the helpers their cells call.

Every figure family is one jupytext notebook in ``notebooks/`` with a cell tagged
``parameters``. The root ``_config.yml`` lists the notebooks in book order and, per
profile (``smoke`` for tests, ``quick`` for a laptop, ``paper`` for a GPU box), the
parameters each one gets::

    profiles:
      quick:
        common: {experiment: {...}, seeds: [0, 1]}     # every notebook
        notebooks:
          pruning-criteria: {criteria: [magnitude, gradient, random]}

``sddlib figures`` converts each source with jupytext and executes it with papermill, one
process per notebook, into ``book/<name>.ipynb``; ``jupyter-book build book/`` then renders
those executed copies without executing them again. The heavy compute lives in the run
store, not in the notebooks, so rerunning a figure with other parameters recomputes only
the runs that are new.
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml

from .config import ExperimentConfig
from .project import ProjectSettings, load_settings

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
    if profile not in settings.profiles:
        raise ValueError(f"profile: unknown {profile!r}; allowed: "
                         f"{', '.join(settings.profiles)}")
    declared = parameters_cell_defaults(settings.root / NOTEBOOK_DIR / f"{name}.py")
    chosen = settings.profiles[profile] or {}
    common = {k: v for k, v in (chosen.get("common") or {}).items() if k in declared}
    specific = merge((chosen.get("notebooks") or {}).get(name) or {}, overrides or {})
    unknown = sorted(set(specific) - set(declared))
    if unknown:
        raise ValueError(f"{unknown[0]}: not a parameter of notebook {name}; allowed: "
                         f"{', '.join(declared)}")
    return merge(merge({"profile": profile}, common), specific)


def merge(base: dict, changes: dict) -> dict:
    """``changes`` over ``base``; nested dicts are merged, everything else replaced."""
    result = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def parse_assignments(assignments: Iterable[str]) -> dict:
    """``key=value`` strings (values in YAML, e.g. ``seeds=[0,1,2]``) as a nested dict.

    A dotted key sets one entry of a dict parameter: ``experiment.noise=0.4``.
    """
    result: dict = {}
    for text in assignments:
        if "=" not in text:
            raise ValueError(f"-p: expected key=value, got {text!r}")
        key, raw = text.split("=", 1)
        value = yaml.safe_load(raw)
        target = result
        *path, leaf = key.strip().split(".")
        for part in path:
            target = target.setdefault(part, {})
        target[leaf] = value
    return result


def parameters_cell_defaults(source: Path) -> dict:
    """The values the ``parameters`` cell of a jupytext source assigns (for checks)."""
    import jupytext

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
                 log=print) -> list[Path]:
    """Execute the notebooks of ``profile`` into the book folder; returns their paths.

    ``runs_dir`` replaces the run store of ``_config.yml`` for these notebooks (it reaches
    their kernels as ``SDDLIB_RUNS_DIR``).
    """
    settings = settings or load_settings()
    if settings.config_path is None:
        raise FileNotFoundError("figures: no _config.yml with an sddlib section here or above")
    names = notebook_names(settings)
    if only:
        unknown = [n for n in only if n not in names]
        if unknown:
            raise ValueError(f"only: unknown notebook {unknown[0]!r}; allowed: "
                             f"{', '.join(names)}")
        names = [n for n in names if n in only]
    book_dir = Path(book_dir or settings.root / BOOK_DIR)
    written = []
    for name in names:
        parameters = notebook_parameters(settings, profile, name, overrides)
        started = time.time()
        log(f"[figures] {name} ({profile}) ...")
        written.append(execute_notebook(settings.root / NOTEBOOK_DIR / f"{name}.py",
                                        book_dir / f"{name}.ipynb", parameters,
                                        cwd=settings.root, runs_dir=runs_dir))
        log(f"[figures] {name} done in {time.time() - started:.0f} s")
    return written


def execute_notebook(source: Path, output: Path, parameters: dict, cwd: Path,
                     runs_dir: Optional[Path] = None) -> Path:
    """jupytext source -> executed notebook, in a papermill process of its own.

    The executed copy replaces ``output`` only when every cell ran; a failing notebook is
    kept beside it as ``<name>.failed.ipynb`` to read the error in.
    """
    import jupytext

    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        unexecuted = Path(scratch) / f"{source.stem}.ipynb"
        jupytext.write(jupytext.read(source), unexecuted, fmt="ipynb")
        executed = output.with_name(f".{output.stem}.executing.ipynb")
        command = [sys.executable, "-m", "papermill", str(unexecuted), str(executed),
                   "--cwd", str(cwd), "--kernel", "python3", "--no-progress-bar",
                   "-y", yaml.safe_dump(parameters, sort_keys=False)]
        env = {**os.environ, "SDDLIB_PROGRESS": "0"}
        if runs_dir is not None:
            env["SDDLIB_RUNS_DIR"] = str(Path(runs_dir).resolve())
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            failed = output.with_name(f"{output.stem}.failed.ipynb")
            if executed.exists():
                os.replace(executed, failed)
            tail = "\n".join(result.stderr.strip().splitlines()[-15:])
            raise RuntimeError(f"notebook {source.name} failed (see {failed}):\n{tail}")
        os.replace(executed, output)
    return output


# ---------------------------------------------------------------------------- notebook helpers
def store():
    from .store import RunStore

    return RunStore(load_settings().runs_dir)


def configs(experiment: dict, seeds: Iterable[int], variants: dict[str, dict]) \
        -> dict[str, list[ExperimentConfig]]:
    """One list of configs (one per seed) per named variant of the base ``experiment``."""
    return {label: [ExperimentConfig.from_dict(merge(experiment, {**changes, "seed": seed}))
                    for seed in seeds]
            for label, changes in variants.items()}


def gather(variants: dict[str, list[ExperimentConfig]], compute_missing: bool = True,
           label: str = "variant"):
    """The tidy levels of every variant's runs, with a ``label`` column naming the variant.

    The runs of all variants are computed in one :func:`experiment.run_many` call, so on
    CUDA runs that differ only in seed, label noise or pruning criterion train together as
    stacked ensembles, across variants (see :func:`experiment.stack_groups`; on the CPU
    stacking does not pay, see :func:`experiment.stacking_pays`). ``SDDLIB_STACK=1`` in the
    environment stacks on any device, ``SDDLIB_STACK=0`` never (``sddlib figures`` passes
    the environment on to the notebooks). The runs (or stacked groups) train in parallel
    processes, one per core on the CPU (see :mod:`sddlib.parallel`); ``SDDLIB_WORKERS=N``
    sets how many (``auto`` by default, ``1``: one after another). A run in two variants
    is computed once (at the most ``levels`` asked for) and its rows appear under both
    labels, each cut at that variant's ``levels``. With ``compute_missing=False`` nothing is
    computed and each variant shows its finished runs, as :func:`experiment.run_many` says.
    """
    import pandas as pd

    from .experiment import run_many

    settings = load_settings()
    progress = os.environ.get("SDDLIB_PROGRESS", "1") != "0"
    if compute_missing:
        wanted: dict[str, ExperimentConfig] = {}  # each run once, at the most levels asked for
        for group in variants.values():
            for config in group:
                known = wanted.get(config.run_name())
                if known is None or config.levels > known.levels:
                    wanted[config.run_name()] = config
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


def _stack_setting():
    value = os.environ.get("SDDLIB_STACK", "auto")
    allowed = {"auto": "auto", "1": True, "0": False}
    if value not in allowed:
        raise ValueError(f"SDDLIB_STACK: {value!r} is not allowed; allowed: auto, 1, 0")
    return allowed[value]


def _workers_setting():
    from .parallel import parse_workers

    return parse_workers(os.environ.get("SDDLIB_WORKERS", "auto"), "SDDLIB_WORKERS")


def lottery_run(experiment: dict, seed: int, compute_missing: bool = True):
    """The profile's lottery run for one seed: its levels, the run itself and its landmarks
    (for the pages that analyse one run's checkpoints)."""
    from .metrics import curve_summary

    variants = configs(experiment, [seed], {"lottery": {"retrain": "lottery"}})
    frame = gather(variants, compute_missing)
    return frame, store().find(variants["lottery"][0]), curve_summary(frame)


def glue(name: str, value: Any, display: bool = False) -> None:
    """myst-nb's glue, silent by default: the page shows the value where the text cites it."""
    from myst_nb import glue as myst_glue

    myst_glue(name, value, display=display)
    if type(value).__name__ == "Figure":  # shown where glued, not again below the cell
        import matplotlib.pyplot as plt

        plt.close(value)


def glue_summary(summary, prefix: str = "") -> None:
    """Glue a curve's landmarks (accuracies and sparsities) for the page's text."""
    for key, value in summary.as_dict().items():
        glue(f"{prefix}{key}", value)


def summary_table(table, label: str):
    """The landmarks of several curves as a readable table (percentages)."""
    shown = table[[label, "dense_acc", "worst_acc", "worst_sparsity", "best_acc",
                   "best_sparsity", "last_acc", "last_sparsity", "seeds", "three_phases"]]
    percent = {c: "{:.1%}" for c in shown.columns if c.endswith(("_acc", "_sparsity"))}
    return shown.style.format(percent, na_rep="-").hide(axis="index")


def reference_path(name: str) -> Path:
    """A table of published numbers under ``data/reference/``."""
    return load_settings().root / "data" / "reference" / name


def comparison_table(comparison):
    """Ours beside the paper's, per dataset, as a readable table."""
    columns = ["dataset", "who", "source", "dense_acc", "worst_acc", "worst_sparsity",
               "best_acc", "best_sparsity", "last_acc", "dip", "rise"]
    shown = comparison[columns].sort_values(["dataset", "who"])
    percent = {c: "{:.1%}" for c in columns if c.endswith(("_acc", "_sparsity")) or
               c in ("dip", "rise")}
    return shown.style.format(percent, na_rep="-").hide(axis="index")


def rerun_command(name: str, example: str = "") -> str:
    return f"sddlib figures --only {name}" + (f" {example}" if example else "")
