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
   simulations small, at most 2 seeds, ``device: cpu``. The datasets, models, retraining
   modes, criteria, noise kinds, variants and page code stay exactly as they are: the
   shrinking is computed from the profile, never typed out a second time.
2. It writes each file-based dataset (:data:`WRITERS`) into the scratch dataset cache, a
   few dozen images in the real on-disk format (CIFAR's Python-2 pickles, MNIST's idx
   files under ``MNIST/raw``, Tiny ImageNet's folders with ``wnids.txt``,
   ``val/val_annotations.txt`` and JPEG images), which the real loaders of
   :mod:`sddlib.data` then read. The tests of :mod:`sddlib.data` use the same writers.
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
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import yaml

# How far the rehearsal shrinks an experiment (see shrink_profile).
TRAIN_SIZE, TEST_SIZE = 32, 16  # samples per run: a few dozen
VALIDATION_SIZE = 8  # held out of the training samples, where a run holds some out
BATCH_SIZE = 16  # several iterations an epoch, none of a single sample
EPOCHS, LEVELS, SEEDS = 1, 2, 2  # two seeds still give an interval
WIDTH_FACTOR = 1 / 16  # image models at 1/16 of their base width (ResNet 64 -> 4)
THEORY_FACTOR = 1 / 5  # the theory simulations' sizes (n, d, s, k)
THEORY_TRIALS = 5
HESSIAN_BATCHES, TRACE_QUERIES, PATIENCE = 1, 4, 1
# samples each dataset file holds (a bit more than a run takes, so the subset path runs)
FILE_TRAIN, FILE_TEST = 60, 30

# notebook parameters that are a base experiment, and those whose entries change one
BASE_KEYS = ("experiment", "width_experiment", "depth_experiment")
VARIANT_KEYS = {"datasets": "experiment", "noises": "experiment", "antidotes": "experiment",
                "width_sweep": "width_experiment", "depth_sweep": "depth_experiment"}
THEORY_KEYS = ("linear", "isotropic", "random_features")


# ---------------------------------------------------------------------------- the profile
def shrink_profile(profile: dict, declared: dict[str, dict]) -> dict:
    """The rehearsal's version of ``profile`` (a ``profiles.<name>`` section of
    ``_config.yml``): the same notebooks, datasets, models, modes, criteria, noise kinds
    and variants, each experiment shrunk to run in seconds on a CPU.

    ``declared``: each notebook's ``parameters`` cell (name -> its defaults); a parameter
    the profile leaves at the notebook's default is shrunk too where that matters (the
    minima page's Hessian queries, the antidotes' patience). Every experiment (the
    ``common`` one, a page's ``experiment``, ``width_experiment``, ``depth_experiment``,
    the theory page's ``network.experiment``) gets ``train_size``/``test_size``
    :data:`TRAIN_SIZE`/:data:`TEST_SIZE`, ``batch_size`` :data:`BATCH_SIZE`, ``device:
    cpu`` and ``threads: 1`` (a model this narrow gains nothing from a second torch
    thread, and on a busy machine several threads slow each other down tenfold); wherever an experiment or a variant sets them, ``epochs`` becomes at most
    :data:`EPOCHS`, ``levels`` at most :data:`LEVELS`, ``milestones`` are scaled by the
    same factor as the epochs (kept within them), a non-zero ``rewind_iteration`` becomes
    1 (the earliest rewind point), a non-zero ``validation_size`` :data:`VALIDATION_SIZE`,
    and an image model's base ``width`` (its default where unset) is scaled by
    :data:`WIDTH_FACTOR`. Seed lists keep their first :data:`SEEDS` seeds.
    """
    from .figures import merge

    common = copy.deepcopy(profile.get("common") or {})
    base = common.get("experiment")
    shrunk_common = {key: _shrink_parameter(key, value, {}) for key, value in common.items()}
    notebooks = {}
    for name, defaults in declared.items():
        specific = (profile.get("notebooks") or {}).get(name) or {}
        # the experiments the page's variants change, as the page gets them
        bases = {key: merge(base or {}, specific.get(key) or {}) if key == "experiment"
                 else specific.get(key, defaults.get(key)) for key in BASE_KEYS}
        bases = {key: value for key, value in bases.items() if isinstance(value, dict)}
        shrunk = {key: _shrink_parameter(key, value, bases) for key, value in specific.items()}
        for key, default in defaults.items():  # left at the page's default by the profile
            if key in specific or (key in common and key in defaults):
                continue
            smaller = _shrink_parameter(key, default, bases)
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


def _shrink_parameter(key: str, value, bases: dict):
    if key in BASE_KEYS and isinstance(value, dict):
        return shrink_experiment(value, base=True)
    if key in VARIANT_KEYS and isinstance(value, dict):
        parent = bases.get(VARIANT_KEYS[key]) or {}
        return {label: _shrink_variant(key, changes, parent)
                for label, changes in value.items()}
    if key == "seeds" and isinstance(value, list):
        return value[:SEEDS]
    if key in THEORY_KEYS and isinstance(value, dict):
        return _shrink_theory(value)
    if key == "network" and isinstance(value, dict):
        return _shrink_network(value)
    if key == "hessian_batches" and isinstance(value, int):
        return min(value, HESSIAN_BATCHES)
    if key == "trace_queries" and isinstance(value, int):
        return min(value, TRACE_QUERIES)
    if key == "patience" and isinstance(value, int):
        return min(value, PATIENCE)
    if key == "levels_shown" and isinstance(value, list):
        return sorted({min(level, LEVELS) for level in value})
    return copy.deepcopy(value)


def _shrink_variant(key: str, changes, parent: dict):
    if not isinstance(changes, dict):
        return copy.deepcopy(changes)
    shrunk = shrink_experiment({k: v for k, v in changes.items() if k != "seeds"},
                               base=False, parent=parent)
    if key == "antidotes" and isinstance(changes.get("seeds"), list):
        shrunk["seeds"] = changes["seeds"][:SEEDS]
    return shrunk


def shrink_experiment(experiment: dict, base: bool = True, parent: Optional[dict] = None,
                      width: bool = True) -> dict:
    """One experiment's keys shrunk as :func:`shrink_profile` says. ``base``: a whole
    experiment (the sizes, batch and device are set even where it leaves them out), not a
    variant's changes to one (``parent``, whose epochs and model the variant inherits).
    ``width``: narrow an image model (not where the caller sets the width itself)."""
    from .config import ExperimentConfig
    from .models import MODELS

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
        out["device"] = "cpu"
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


def _shrink_network(value: dict) -> dict:
    """The theory page's network check: its experiment shrunk (the width is the check's
    own), its widths scaled by one factor (the smallest kept >= 1), the target number of
    weights by that factor squared (a layer's weights grow with the square of its width),
    so the same widths stay below and above the target."""
    out = copy.deepcopy(value)
    if isinstance(value.get("experiment"), dict):
        out["experiment"] = shrink_experiment(value["experiment"], base=True, width=False)
    widths = value.get("widths")
    if isinstance(widths, list) and widths and all(isinstance(w, int) for w in widths):
        factor = max(WIDTH_FACTOR, 1 / min(widths))
        out["widths"] = sorted({max(1, round(w * factor)) for w in widths})
        if isinstance(value.get("target_weights"), int):
            out["target_weights"] = max(1, round(value["target_weights"] * factor ** 2))
    if isinstance(value.get("seeds"), list):
        out["seeds"] = value["seeds"][:SEEDS]
    return out


# ---------------------------------------------------------------------------- dataset files
def write_idx(path: Path, array: np.ndarray) -> None:
    """An idx file (MNIST's format): two zero bytes, the type code 0x08 (uint8), the number
    of dimensions, the sizes as big-endian 32-bit integers, then the bytes."""
    with open(path, "wb") as file:
        file.write(struct.pack(">I", 0x0800 | array.ndim))
        file.write(struct.pack(f">{array.ndim}I", *array.shape))
        file.write(np.asarray(array).astype(np.uint8).tobytes())


def write_mnist(data_dir: Path, folder: str, train_images, train_labels, test_images,
                test_labels) -> Path:
    """MNIST's four idx files (N x 28 x 28 images, labels) in ``data_dir/folder/raw``, where
    torchvision (and so :mod:`sddlib.data`) reads them; ``folder``: ``MNIST`` or
    ``FashionMNIST``. Returns the ``raw`` folder."""
    raw = Path(data_dir) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, images, labels in (("train", train_images, train_labels),
                                  ("t10k", test_images, test_labels)):
        write_idx(raw / f"{split}-images-idx3-ubyte", np.asarray(images))
        write_idx(raw / f"{split}-labels-idx1-ubyte", np.asarray(labels))
    return raw


def python2_pickle(path: Path, obj) -> None:
    """A pickle as the official CIFAR files are: protocol 2, from Python 2 (bytes keys)."""
    with open(path, "wb") as file:
        pickle.dump(obj, file, protocol=2)


def write_cifar10(data_dir: Path, train_x, train_y, test_x, test_y) -> Path:
    """``cifar-10-batches-py`` as the official archive unpacks: the training rows (N x 3072
    uint8, the red, green and blue planes row-major) in five ``data_batch_*`` pickles,
    ``test_batch``, ``batches.meta``. Returns the folder."""
    root = Path(data_dir) / "cifar-10-batches-py"
    root.mkdir(parents=True, exist_ok=True)
    train_x = np.asarray(train_x, dtype=np.uint8).reshape(len(train_y), 3072)
    for i, rows in enumerate(np.array_split(np.arange(len(train_y)), 5), start=1):
        python2_pickle(root / f"data_batch_{i}", {
            b"batch_label": f"training batch {i} of 5".encode(),
            b"labels": [int(train_y[r]) for r in rows], b"data": train_x[rows],
            b"filenames": [f"image_{r}.png".encode() for r in rows]})
    python2_pickle(root / "test_batch", {
        b"batch_label": b"testing batch 1 of 1", b"labels": [int(y) for y in test_y],
        b"data": np.asarray(test_x, dtype=np.uint8).reshape(len(test_y), 3072),
        b"filenames": [f"test_{i}.png".encode() for i in range(len(test_y))]})
    python2_pickle(root / "batches.meta", {
        b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog",
                         b"frog", b"horse", b"ship", b"truck"],
        b"num_cases_per_batch": 10000, b"num_vis": 3072})
    return root


def write_cifar100(data_dir: Path, train_x, train_fine, test_x, test_fine) -> Path:
    """``cifar-100-python`` as the official archive unpacks: ``train``, ``test`` (rows as
    CIFAR-10's, fine and coarse labels) and ``meta``. Returns the folder."""
    root = Path(data_dir) / "cifar-100-python"
    root.mkdir(parents=True, exist_ok=True)
    for split, x, fine in (("train", train_x, train_fine), ("test", test_x, test_fine)):
        fine = [int(label) for label in fine]
        python2_pickle(root / split, {
            b"filenames": [f"{split}_{i}.png".encode() for i in range(len(fine))],
            b"batch_label": f"{split}ing batch 1 of 1".encode(), b"fine_labels": fine,
            b"coarse_labels": [label // 5 for label in fine],
            b"data": np.asarray(x, dtype=np.uint8).reshape(len(fine), 3072)})
    python2_pickle(root / "meta", {b"fine_label_names": [f"class{i}".encode() for i in range(100)],
                                   b"coarse_label_names": [f"super{i}".encode() for i in range(20)]})
    return root


def write_tinyimagenet(data_dir: Path, wnids: list[str], train: dict, val: list) -> Path:
    """The ``tiny-imagenet-200`` folder as the official zip unpacks: ``wnids.txt`` (in the
    order given), ``train/WNID/images/WNID_I.JPEG`` with ``train/WNID/WNID_boxes.txt``,
    ``val/images/val_I.JPEG`` with ``val/val_annotations.txt`` (file, wnid and a box per
    line, tab-separated) and an empty ``test/images`` (the official test split has no
    labels). ``train``: wnid -> PIL images; ``val``: (PIL image, wnid) pairs. Returns the
    folder."""
    root = Path(data_dir) / "tiny-imagenet-200"
    root.mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for wnid, images in train.items():
        folder = root / "train" / wnid / "images"
        folder.mkdir(parents=True, exist_ok=True)
        boxes = []
        for i, image in enumerate(images):
            image.save(folder / f"{wnid}_{i}.JPEG")
            boxes.append(f"{wnid}_{i}.JPEG\t0\t0\t{image.width - 1}\t{image.height - 1}")
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("\n".join(boxes) + "\n")
    (root / "val" / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (image, wnid) in enumerate(val):
        image.save(root / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t{image.width - 1}\t{image.height - 1}")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    (root / "test" / "images").mkdir(parents=True, exist_ok=True)
    return root


def _images(rng, classes: int, labels, shape: tuple[int, ...]):
    """uint8 images of ``shape`` for ``labels`` (a count: that many drawn at random): each
    class a fixed random pattern with noise over it, so a network can learn something
    from a few dozen. Returns the images and their labels."""
    patterns = rng.integers(0, 256, size=(classes, *shape))
    if isinstance(labels, int):
        labels = rng.integers(0, classes, size=labels)
    noise = rng.integers(0, 256, size=(len(labels), *shape))
    return (0.7 * patterns[labels] + 0.3 * noise).astype(np.uint8), np.asarray(labels)


def _write_mnist_like(folder: str):
    def write(data_dir: Path, rng) -> None:
        x, y = _images(rng, 10, FILE_TRAIN + FILE_TEST, (28, 28))
        write_mnist(data_dir, folder, x[:FILE_TRAIN], y[:FILE_TRAIN], x[FILE_TRAIN:],
                    y[FILE_TRAIN:])
    return write


def _write_cifar(classes: int):
    def write(data_dir: Path, rng) -> None:
        x, y = _images(rng, classes, FILE_TRAIN + FILE_TEST, (3, 32, 32))
        writer = write_cifar10 if classes == 10 else write_cifar100
        writer(data_dir, x[:FILE_TRAIN], y[:FILE_TRAIN], x[FILE_TRAIN:], y[FILE_TRAIN:])
    return write


def _write_tiny(data_dir: Path, rng) -> None:
    from PIL import Image

    classes = 200
    wnids = [f"n{10000000 + 7919 * i:08d}" for i in range(classes)]  # every one of its classes
    # one training image a class (ImageFolder refuses a class folder without one) and
    # FILE_TRAIN more, at the native 64 x 64 (the loader resizes them to the run's size)
    labels = np.concatenate([np.arange(classes), rng.integers(0, classes, size=FILE_TRAIN + FILE_TEST)])
    x, y = _images(rng, classes, labels, (64, 64, 3))
    train = {wnid: [] for wnid in wnids}
    for image, label in zip(x[:-FILE_TEST], y[:-FILE_TEST]):
        train[wnids[label]].append(Image.fromarray(image))
    val = [(Image.fromarray(image), wnids[label])
           for image, label in zip(x[-FILE_TEST:], y[-FILE_TEST:])]
    write_tinyimagenet(data_dir, wnids, train, val)


# dataset -> writer(data_dir, rng): the datasets read from files, in their own format
WRITERS: dict[str, Callable] = {
    "mnist": _write_mnist_like("MNIST"),
    "fashion-mnist": _write_mnist_like("FashionMNIST"),
    "cifar10": _write_cifar(10),
    "cifar100": _write_cifar(100),
    "tinyimagenet": _write_tiny,
}


def write_datasets(data_dir: Path, names=None) -> list[str]:
    """Small files of every dataset of ``names`` (default: every one of :data:`WRITERS`)
    in ``data_dir``, each from a seeded generator of its own (the same bytes every time);
    a dataset whose files are there already is left as it is. Returns the names written."""
    written = []
    for index, name in enumerate(WRITERS):
        if names is not None and name not in names:
            continue
        marker = Path(data_dir) / f".rehearsal-{name}"
        if marker.exists():
            continue
        WRITERS[name](Path(data_dir), np.random.default_rng(index))
        marker.write_text("written by sddlib.rehearsal\n")
        written.append(name)
    return written


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


def prepare(into: Path, settings=None, profile: str = "paper") -> Path:
    """The scratch project of a rehearsal of ``profile`` in ``into`` (see the module's
    docstring); returns its root. A folder of an earlier rehearsal keeps its runs and
    dataset files (so a second rehearsal computes only what changed); its notebooks,
    book sources and ``_config.yml`` are copied anew, and its executed pages removed."""
    from .figures import NOTEBOOK_DIR, notebook_names, parameters_cell_defaults, \
        profile_section
    from .project import load_settings

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
    content["profiles"] = {profile: shrink_profile(chosen, declared)}
    header = (f"# The scratch project of `sddlib figures --profile {profile} --rehearse`:\n"
              f"# profiles.{profile} is {settings.config_path}'s, shrunk by "
              "sddlib.rehearsal.shrink_profile.\n")
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
    from .parallel import usable_cores

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


def rehearse(into: Optional[Path] = None, profile: str = "paper", ray: Optional[str] = None,
             compute_only: bool = False, settings=None, log=print,
             pages_at_once: Optional[int] = None) -> Rehearsal:
    """The whole rehearsal of ``profile`` (see the module's docstring) in ``into`` (a new
    temporary folder by default); returns its :class:`Rehearsal`, whose ``failed`` names
    each step or page that failed and why. ``compute_only``: prepare and compute the
    runs, execute no page. ``pages_at_once``: papermill processes at once (default: one
    per usable core, at most 2; see :func:`execute_pages`)."""
    from .figures import LANDING, notebook_names
    from .project import load_settings

    started = time.time()
    into = Path(into) if into is not None else Path(tempfile.mkdtemp(prefix="sddlib-rehearsal-"))
    project = prepare(into, settings, profile)
    result = Rehearsal(project, profile)
    result.seconds["prepare"] = time.time() - started
    log(f"[rehearse] scratch project {project} (profile {profile} shrunk, datasets written)")

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
