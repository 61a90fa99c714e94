"""The GPU-box batch of the paper profile, rehearsed in miniature on the CPU.

The paper profile (``profiles.paper`` in the root ``_config.yml``) is meant for a GPU box:
CIFAR-10/100, Tiny ImageNet and MNIST, ResNet-18, ResNet-101 and the VGG-like model, 160
epochs a level, 30 levels. A crash in one of its pages would otherwise show after hours of
rented GPU time. ``sddlib figures --profile paper --rehearse`` (:func:`rehearse`) runs the
same batch in minutes on a laptop:

1. :func:`prepare` makes a scratch project (``--into DIR``, a temporary folder by default):
   a copy of the notebooks, the book's sources, the reference tables and the benchmark
   records, and a ``_config.yml`` whose run store and dataset cache lie inside the
   scratch project and whose ``paper`` profile is the real one shrunk
   (:func:`shrink_profile`): every experiment on a few dozen samples, 1 epoch, 2 levels,
   the milestones and the rewind point scaled to fit, the image models narrowed, the theory
   simulations small, at most 2 seeds, ``device: cpu`` (``--device cuda`` on a GPU box:
   the same miniature through the CUDA paths). The datasets, models, retraining
   modes, criteria, noise kinds, variants and page code stay exactly as they are: the
   shrinking is computed from the profile, never typed out a second time.
2. It writes each file-based dataset (:data:`sddlib.data.formats.WRITERS`) into the
   scratch dataset cache, a few dozen images in the real on-disk format (CIFAR's Python-2
   pickles, MNIST's idx files under ``MNIST/raw``, Tiny ImageNet's folders with
   ``wnids.txt``, ``val/val_annotations.txt`` and JPEG images), which the real loaders of
   :mod:`sddlib.data.datasets` then read. The tests of :mod:`sddlib.data.datasets` use the
   same writers.
3. It runs the batch of the README, from the scratch project, each step a process of its
   own as on the GPU box: ``sddlib figures --compute-only --profile paper`` (every page's
   runs in one schedule; ``--ray ADDRESS`` to run it on Ray), then ``papermill
   notebooks/PAGE.ipynb book/PAGE.ipynb -p profile paper`` for every page but the landing
   one, then ``SDDLIB_PROFILE=paper jupyter-book build book/``, which executes the landing
   page and renders the book. A page that fails is reported and the others still run.

The user's run store, dataset cache and ``book/`` are never touched.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import yaml

from sddlib.book import pages
from sddlib.config.fields import DEVICE_PATTERN, DEVICES_ALLOWED
from sddlib.data.formats import FILE_TRAIN, write_datasets

# How far the rehearsal shrinks an experiment (see shrink_profile).
TRAIN_SIZE, TEST_SIZE = 32, 16  # samples per run: a few dozen
assert TRAIN_SIZE < FILE_TRAIN  # a dataset file holds more, so the subset path runs
VALIDATION_SIZE = 8  # held out of the training samples, where a run holds some out
BATCH_SIZE = 16  # several iterations an epoch, none of a single sample
EPOCHS, LEVELS, SEEDS = 1, 2, 2  # two seeds still give an interval
WIDTH_FACTOR = 1 / 16  # image models at 1/16 of their base width (ResNet 64 -> 4)
THEORY_FACTOR = 1 / 5  # the theory simulations' sizes (n, d, s, k)
THEORY_TRIALS = 5
HESSIAN_BATCHES, TRACE_QUERIES, PATIENCE = 1, 4, 1

# page parameters that are a base experiment, those whose entries change one (-> the base
# they change) and the theory simulations' (sddlib.book.pages declares each kind)
BASE_KEYS = tuple(pages.keys_with_role("experiment"))
VARIANT_KEYS = {key: kind.base for key, kind in pages.keys_with_role("variants").items()}
THEORY_KEYS = tuple(pages.keys_with_role("theory"))


# ---------------------------------------------------------------------------- the profile
def shrink_profile(profile: dict, declared: dict[str, dict], device: str = "cpu") -> dict:
    """The rehearsal's version of ``profile`` (a ``profiles.<name>`` section of
    ``_config.yml``): the same notebooks, datasets, models, modes, criteria, noise kinds
    and variants, each experiment shrunk to run in seconds, on ``device`` (the CPU unless
    asked otherwise).

    ``declared``: each notebook's ``parameters`` cell (name -> its defaults); a parameter
    the profile leaves at the notebook's default is shrunk too where that matters (the
    minima page's Hessian queries, the antidotes' patience). Every experiment (the
    ``common`` one, a page's ``experiment``, ``width_experiment``, ``depth_experiment``,
    the theory page's ``network.experiment``) gets ``train_size``/``test_size``
    :data:`TRAIN_SIZE`/:data:`TEST_SIZE`, ``batch_size`` :data:`BATCH_SIZE`, ``device``
    (``cpu`` unless asked otherwise: ``cuda`` on a GPU box runs the same miniature
    through the CUDA paths, bf16 autocast, compiled steps, channels_last and stacked
    ensembles, in minutes) and ``threads: 1`` (a model this narrow gains nothing from a
    second torch thread, and on a busy machine several threads slow each other down
    tenfold); wherever an experiment or a variant sets them, ``epochs`` becomes at most
    :data:`EPOCHS`, ``levels`` at most :data:`LEVELS`, ``milestones`` are scaled by the
    same factor as the epochs (kept within them), a non-zero ``rewind_iteration`` becomes
    1 (the earliest rewind point), a non-zero ``validation_size`` :data:`VALIDATION_SIZE`,
    and an image model's base ``width`` (its default where unset) is scaled by
    :data:`WIDTH_FACTOR`. Seed lists keep their first :data:`SEEDS` seeds.
    """
    common = copy.deepcopy(profile.get("common") or {})
    base = common.get("experiment")
    shrunk_common = {key: _shrink_parameter(key, value, {}, device)
                     for key, value in common.items()}
    notebooks = {}
    for name, defaults in declared.items():
        specific = (profile.get("notebooks") or {}).get(name) or {}
        # the experiments the page's variants change, as the page gets them
        bases = {key: pages.merge(base or {}, specific.get(key) or {}) if key == "experiment"
                 else specific.get(key, defaults.get(key)) for key in BASE_KEYS}
        bases = {key: value for key, value in bases.items() if isinstance(value, dict)}
        shrunk = {key: _shrink_parameter(key, value, bases, device)
                  for key, value in specific.items()}
        for key, default in defaults.items():  # left at the page's default by the profile
            if key in specific or (key in common and key in defaults):
                continue
            smaller = _shrink_parameter(key, default, bases, device)
            if smaller != default:
                shrunk[key] = smaller
        if shrunk or name in (profile.get("notebooks") or {}):
            notebooks[name] = shrunk
    section = {}
    if shrunk_common:
        section["common"] = shrunk_common
    if notebooks:
        section["notebooks"] = notebooks
    return section


def _shrink_parameter(key: str, value, bases: dict, device: str = "cpu"):
    if key in BASE_KEYS and isinstance(value, dict):
        return shrink_experiment(value, base=True, device=device)
    if key in VARIANT_KEYS and isinstance(value, dict):
        parent = bases.get(VARIANT_KEYS[key]) or {}
        return {label: _shrink_variant(key, changes, parent, device)
                for label, changes in value.items()}
    if key == "seeds" and isinstance(value, list):
        return value[:SEEDS]
    if key in THEORY_KEYS and isinstance(value, dict):
        return _shrink_theory(value)
    if key == "network" and isinstance(value, dict):
        return _shrink_network(value, device)
    if key == "hessian_batches" and isinstance(value, int):
        return min(value, HESSIAN_BATCHES)
    if key == "trace_queries" and isinstance(value, int):
        return min(value, TRACE_QUERIES)
    if key == "patience" and isinstance(value, int):
        return min(value, PATIENCE)
    if key == "levels_shown" and isinstance(value, list):
        return sorted({min(level, LEVELS) for level in value})
    return copy.deepcopy(value)


def _shrink_variant(key: str, changes, parent: dict, device: str = "cpu"):
    if not isinstance(changes, dict):
        return copy.deepcopy(changes)
    shrunk = shrink_experiment({k: v for k, v in changes.items() if k != "seeds"},
                               base=False, parent=parent, device=device)
    if key == "antidotes" and isinstance(changes.get("seeds"), list):
        shrunk["seeds"] = changes["seeds"][:SEEDS]
    return shrunk


def shrink_experiment(experiment: dict, base: bool = True, parent: Optional[dict] = None,
                      width: bool = True, device: str = "cpu") -> dict:
    """One experiment's keys shrunk as :func:`shrink_profile` says, to train on
    ``device``. ``base``: a whole experiment (the sizes, batch and device are set even
    where it leaves them out), not a variant's changes to one (``parent``, whose epochs
    and model the variant inherits). ``width``: narrow an image model (not where the
    caller sets the width itself)."""
    from sddlib.config.fields import ExperimentConfig
    from sddlib.models.architectures import MODELS

    parent = parent or {}
    defaults = {f.name: f.default for f in dataclasses.fields(ExperimentConfig)}
    out = copy.deepcopy(experiment)
    old_epochs = experiment.get("epochs", parent.get("epochs", defaults["epochs"]))
    new_epochs = min(old_epochs, EPOCHS)
    if "epochs" in experiment:
        out["epochs"] = new_epochs
    if "levels" in experiment:
        out["levels"] = min(experiment["levels"], LEVELS)
    if experiment.get("milestones"):
        out["milestones"] = sorted({min(new_epochs, max(1, round(m * new_epochs / old_epochs)))
                                    for m in experiment["milestones"]})
    if experiment.get("rewind_iteration"):
        out["rewind_iteration"] = 1
    if experiment.get("validation_size"):
        out["validation_size"] = min(experiment["validation_size"], VALIDATION_SIZE)
    if "device" in experiment or base:
        out["device"] = device
    if "threads" in experiment or base:  # not part of a run's identity
        out["threads"] = 1
    for key, size in (("train_size", TRAIN_SIZE), ("test_size", TEST_SIZE),
                      ("batch_size", BATCH_SIZE)):
        if key in experiment or base:
            out[key] = size if experiment.get(key) is None else min(experiment[key], size)
    if width:
        model = MODELS.get(experiment.get("model", parent.get("model") if not base else None))
        if experiment.get("width") is not None:
            out["width"] = max(1, round(experiment["width"] * WIDTH_FACTOR))
        elif "model" in experiment and model is not None and model.default_width and \
                model.reads == "image":
            out["width"] = max(1, round(model.default_width * WIDTH_FACTOR))
    return out


def _shrink_theory(value: dict) -> dict:
    out = dict(value)
    for key in ("n", "d", "s", "k"):
        if isinstance(value.get(key), int):
            out[key] = max(2, round(value[key] * THEORY_FACTOR))
    if isinstance(value.get("trials"), int):
        out["trials"] = min(value["trials"], THEORY_TRIALS)
    return out


def _shrink_network(value: dict, device: str = "cpu") -> dict:
    """The theory page's network check: its experiment shrunk (the width is the check's
    own), its widths scaled by one factor (the smallest kept >= 1), the target number of
    weights by that factor squared (a layer's weights grow with the square of its width),
    so the same widths stay below and above the target."""
    out = copy.deepcopy(value)
    if isinstance(value.get("experiment"), dict):
        out["experiment"] = shrink_experiment(value["experiment"], base=True, width=False,
                                              device=device)
    widths = value.get("widths")
    if isinstance(widths, list) and widths and all(isinstance(w, int) for w in widths):
        factor = max(WIDTH_FACTOR, 1 / min(widths))
        out["widths"] = sorted({max(1, round(w * factor)) for w in widths})
        if isinstance(value.get("target_weights"), int):
            out["target_weights"] = max(1, round(value["target_weights"] * factor ** 2))
    if isinstance(value.get("seeds"), list):
        out["seeds"] = value["seeds"][:SEEDS]
    return out


# ---------------------------------------------------------------------------- the batch
@dataclasses.dataclass
class Rehearsal:
    """Where a rehearsal put things and how it went."""

    project: Path  # the scratch project: _config.yml, notebooks/, book/, data/
    profile: str
    seconds: dict = dataclasses.field(default_factory=dict)  # step -> wall seconds
    failed: dict = dataclasses.field(default_factory=dict)  # step or page -> why

    @property
    def book(self) -> Path:
        return self.project / "book"

    @property
    def runs_dir(self) -> Path:
        return self.project / "data" / "runs"

    @property
    def data_dir(self) -> Path:
        return self.project / "data" / "datasets"

    @property
    def ok(self) -> bool:
        return not self.failed

    def report(self) -> str:
        lines = [f"[rehearse] scratch project {self.project}",
                 f"[rehearse] run store {self.runs_dir}",
                 f"[rehearse] datasets {self.data_dir}",
                 f"[rehearse] book {self.book / '_build' / 'html' / 'index.html'}",
                 "[rehearse] wall time: " + ", ".join(
                     f"{step} {seconds:.0f} s" for step, seconds in self.seconds.items())]
        if self.failed:
            lines += [f"[rehearse] FAILED {where}: {why}" for where, why in self.failed.items()]
        elif "pages" in self.seconds:
            lines.append(f"[rehearse] every page of profile {self.profile} executed and the "
                         "book built")
        else:
            lines.append(f"[rehearse] every run of profile {self.profile} computed")
        return "\n".join(lines)


def check_scratch(into: Path, settings) -> None:
    """Refuse a scratch folder that is the project, holds it, or lies in its run store or
    its book: the rehearsal writes a project of its own there."""
    into = Path(into).resolve()
    root = settings.root.resolve()
    if into == root or into in root.parents:
        raise ValueError(f"--into: {into} holds the project itself; allowed: an empty or "
                         "earlier rehearsal folder outside it")
    for folder in (settings.runs_dir.resolve(), (root / "book").resolve(),
                   settings.data_dir.resolve()):
        if into == folder or folder in into.parents:
            raise ValueError(f"--into: {into} is inside the project's {folder.name}/; "
                             "allowed: a folder outside the run store, datasets and book")
    if into.exists() and not into.is_dir():
        raise ValueError(f"--into: {into} is not a folder")


def prepare(into: Path, settings=None, profile: str = "paper", device: str = "cpu") -> Path:
    """The scratch project of a rehearsal of ``profile`` on ``device`` in ``into`` (see
    the module's docstring); returns its root. A folder of an earlier rehearsal keeps its runs and
    dataset files (so a second rehearsal computes only what changed); its notebooks,
    book sources and ``_config.yml`` are copied anew, and its executed pages removed."""
    from sddlib.book.profiles import (NOTEBOOK_DIR, notebook_names, parameters_cell_defaults,
                                      profile_section)
    from sddlib.config.project import load_settings

    settings = settings or load_settings()
    if settings.config_path is None:
        raise FileNotFoundError("rehearse: no _config.yml with an sddlib section here or above")
    check_scratch(into, settings)
    chosen = profile_section(settings, profile)
    names = notebook_names(settings)
    declared = {name: parameters_cell_defaults(settings.root / NOTEBOOK_DIR / f"{name}.py")
                for name in names}
    project = Path(into).resolve()
    project.mkdir(parents=True, exist_ok=True)
    root = settings.root
    ignore = shutil.ignore_patterns("_build", "__pycache__", ".ipynb_checkpoints")
    for folder in ("notebooks", "benchmarks"):
        if (project / folder).exists():
            shutil.rmtree(project / folder)
        if (root / folder).is_dir():
            shutil.copytree(root / folder, project / folder, ignore=ignore)
    if (project / "book").exists():
        shutil.rmtree(project / "book")
    shutil.copytree(root / "book", project / "book",
                    ignore=shutil.ignore_patterns("_build", "*.ipynb", "figures",
                                                  ".ipynb_checkpoints"))
    if (root / "data" / "reference").is_dir():
        shutil.copytree(root / "data" / "reference", project / "data" / "reference",
                        dirs_exist_ok=True)
    content = yaml.safe_load(settings.config_path.read_text())
    content["sddlib"] = {"runs_dir": "data/runs", "data_dir": "data/datasets"}
    content["profiles"] = {profile: shrink_profile(chosen, declared, device)}
    header = (f"# The scratch project of `sddlib figures --profile {profile} --rehearse`:\n"
              f"# profiles.{profile} is {settings.config_path}'s, shrunk by "
              "sddlib.book.rehearsal.shrink_profile.\n")
    (project / "_config.yml").write_text(header + yaml.safe_dump(content, sort_keys=False))
    (project / "data" / "datasets").mkdir(parents=True, exist_ok=True)
    write_datasets(project / "data" / "datasets")
    return project


def _environment() -> dict:
    """The environment of the batch's processes: the user's, without the variables that
    would point them at the user's store, book or profile."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("SDDLIB_RUNS_DIR", "SDDLIB_BOOK_DIR", "SDDLIB_PROFILE")}
    return env


def _step(command: list[str], project: Path, env: Optional[dict] = None):
    return subprocess.run(command, cwd=project, capture_output=True, text=True,
                          env={**_environment(), **(env or {})})


def _tail(result, lines: int = 6) -> str:
    text = (result.stderr or "") + (result.stdout or "")
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def compute(project: Path, profile: str = "paper", ray: Optional[str] = None,
            only: Optional[list[str]] = None, env: Optional[dict] = None):
    """``sddlib figures --compute-only --profile PROFILE [--ray ADDRESS]`` in the scratch
    project: every run of every page (of ``only``, if given) in one schedule. Returns the
    finished process (its ``stderr`` has the schedule's log)."""
    command = [sys.executable, "-m", "sddlib", "figures", "--compute-only", "--profile",
               profile] + (["--ray", ray] if ray else [])
    for name in only or []:
        command += ["--only", name]
    return _step(command, project, env)


def execute_pages(project: Path, names: list[str], profile: str = "paper",
                  at_once: Optional[int] = None):
    """``papermill notebooks/PAGE.ipynb book/PAGE.ipynb -p profile PROFILE -k python3`` for
    each of ``names`` in the scratch project, ``at_once`` processes at a time (default:
    one per usable core, at most 2), started in book order; yields ``(name, finished
    process, seconds)`` as each ends. After the compute-only schedule the pages only read
    their runs (the one that computes more, the re-dense branches, computes runs no other
    page reads), so running two side by side changes nothing but the wall time: on 2
    cores, a page's seconds are mostly its kernel starting and importing. Each kernel
    gets its share of the cores as its torch threads (``OMP_NUM_THREADS``)."""
    from sddlib.engine.threads import usable_cores

    at_once = at_once or min(2, usable_cores())
    waiting, running = list(names), {}
    # the cores shared out: several torch threads a kernel, on cores another kernel keeps
    # busy, wait for each other and slow a page down tenfold
    threads = str(max(1, usable_cores() // at_once))
    env = {**_environment(), "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    while waiting or running:
        while waiting and len(running) < at_once:
            name = waiting.pop(0)
            command = [sys.executable, "-m", "papermill", f"notebooks/{name}.ipynb",
                       f"book/{name}.ipynb", "-p", "profile", profile, "-k", "python3",
                       "--no-progress-bar"]
            log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe that can fill
            running[name] = (subprocess.Popen(command, cwd=project, env=env, text=True,
                                              stdout=log, stderr=subprocess.STDOUT),
                             log, time.time())
        name = next((n for n, (process, _, _) in running.items()
                     if process.poll() is not None), None)
        if name is None:
            time.sleep(0.2)
            continue
        process, log, started = running.pop(name)
        log.seek(0)
        output = log.read()
        log.close()
        yield name, subprocess.CompletedProcess(process.args, process.returncode, "",
                                                output), time.time() - started


def check_device(device: str) -> str:
    """``device`` if a run can take it, else the one-line error naming ``--device``."""
    if not re.fullmatch(DEVICE_PATTERN, device):
        raise ValueError(f"--device: {device!r} is not allowed; allowed: {DEVICES_ALLOWED}")
    return device


def rehearse(into: Optional[Path] = None, profile: str = "paper", ray: Optional[str] = None,
             compute_only: bool = False, settings=None, log=print,
             pages_at_once: Optional[int] = None, device: str = "cpu") -> Rehearsal:
    """The whole rehearsal of ``profile`` (see the module's docstring) in ``into`` (a new
    temporary folder by default); returns its :class:`Rehearsal`, whose ``failed`` names
    each step or page that failed and why. ``compute_only``: prepare and compute the
    runs, execute no page. ``pages_at_once``: papermill processes at once (default: one
    per usable core, at most 2; see :func:`execute_pages`). ``device``: where every run
    trains (``cuda`` on a GPU box: the miniature then goes through the CUDA paths)."""
    from sddlib.book.profiles import LANDING, notebook_names
    from sddlib.config.project import load_settings

    started = time.time()
    into = Path(into) if into is not None else Path(tempfile.mkdtemp(prefix="sddlib-rehearsal-"))
    project = prepare(into, settings, profile, check_device(device))
    result = Rehearsal(project, profile)
    result.seconds["prepare"] = time.time() - started
    log(f"[rehearse] scratch project {project} (profile {profile} shrunk, on {device}, "
        "datasets written)")

    _timed(result, "compute-only", log, f"sddlib figures --compute-only --profile {profile}"
           f"{' --ray ' + ray if ray else ''}", lambda: compute(project, profile, ray))
    if compute_only or result.failed:
        result.seconds["total"] = time.time() - started
        return result

    names = [n for n in notebook_names(load_settings(project)) if n != LANDING]
    step = time.time()
    for name, ran, seconds in execute_pages(project, names, profile, pages_at_once):
        if ran.returncode != 0:
            result.failed[name] = _tail(ran)
        log(f"[rehearse] papermill {name}: {'FAILED' if ran.returncode else 'done'} in "
            f"{seconds:.0f} s")
    result.seconds["pages"] = time.time() - step

    _timed(result, "jupyter-book build", log,
           f"SDDLIB_PROFILE={profile} jupyter-book build book/",
           lambda: _step([str(Path(sys.executable).with_name("jupyter-book")), "build",
                          "book/"], project, {"SDDLIB_PROFILE": profile}))
    result.seconds["total"] = time.time() - started
    return result


def _timed(result: "Rehearsal", label: str, log, command: str, run) -> None:
    """Run one step of the batch (``run()`` gives its finished process): its seconds and,
    if it failed, the tail of its output go to ``result`` under ``label``; one log line."""
    started = time.time()
    done = run()
    result.seconds[label] = time.time() - started
    if done.returncode != 0:
        result.failed[label] = _tail(done)
    log(f"[rehearse] {command}: {'FAILED' if done.returncode else 'done'} in "
        f"{result.seconds[label]:.0f} s")
