"""The real on-disk formats of the file-based datasets, written small: MNIST's and
Fashion-MNIST's idx files, CIFAR-10/100's Python-2 pickles and Tiny ImageNet's folders of
JPEGs with ``wnids.txt`` and ``val/val_annotations.txt``, as the official archives unpack.

The loaders of :mod:`sddlib.data.datasets` read them as they read the real files: the data
tests use the writers, and the paper-profile rehearsal (:mod:`sddlib.book.rehearsal`) fills
its scratch dataset cache with :func:`write_datasets` (nothing can be downloaded there).
"""
from __future__ import annotations

import pickle
import struct
from pathlib import Path
from typing import Callable

import numpy as np

# samples each written dataset file holds: a bit more than a rehearsal's run takes, so the
# loaders' subset path runs
FILE_TRAIN, FILE_TEST = 60, 30


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
    torchvision (and so :mod:`sddlib.data.datasets`) reads them; ``folder``: ``MNIST`` or
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
                                   b"coarse_label_names": [f"super{i}".encode()
                                                           for i in range(20)]})
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
    labels = np.concatenate([np.arange(classes),
                             rng.integers(0, classes, size=FILE_TRAIN + FILE_TEST)])
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
        marker = Path(data_dir) / f".written-by-sddlib-{name}"
        if marker.exists():
            continue
        WRITERS[name](Path(data_dir), np.random.default_rng(index))
        marker.write_text("written by sddlib.data.formats\n")
        written.append(name)
    return written
