"""Activation entropy (sddlib.engine.entropy) and the early stop over levels that reads it."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from sddlib.analysis import metrics
from sddlib.base.files import atomic_write_text
from sddlib.config.fields import ExperimentConfig
from sddlib.engine import entropy, experiment, train
from sddlib.models.architectures import MODELS, build_model
from sddlib.scheduling import sweep
from sddlib.storage.store import LEVEL_COLUMNS, RunStore

H_CLAMPED = float(entropy.binary_entropy(torch.tensor(0.0)))  # a unit always off (or on)


def signal_inputs(x: torch.Tensor) -> train.Inputs:
    """Training inputs taken as they are (mean 0, scale 1), for a hand-made network."""
    n = x.shape[0]
    labels = torch.zeros(n, dtype=torch.int64)
    return train.Inputs(x, labels, labels, torch.zeros(n, dtype=torch.bool), x[:1], labels[:1],
                        False, torch.zeros(1), torch.ones(1))


class Known(nn.Module):
    """Layer ``first`` has 3 units: always on, on for the positive half of x, never on;
    ``second`` (1 unit, applied twice) is on for the positive half."""

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.linear = nn.Linear(1, 3)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[0.0], [1.0], [0.0]]))
            self.linear.bias.copy_(torch.tensor([1.0, 0.0, -1.0]))
        self.first = nn.ReLU(inplace=inplace)
        self.second = nn.ReLU(inplace=inplace)

    def forward(self, x):
        self.first(self.linear(x))
        return self.second(self.second(x) - 0.0)


# ---------------------------------------------------------------------------- the measure
def test_binary_entropy_is_one_bit_at_a_half_and_clamped_at_the_ends():
    values = entropy.binary_entropy(torch.tensor([0.5, 0.0, 1.0, 0.25]))
    assert float(values[0]) == pytest.approx(1.0)
    p = entropy.CLAMP
    ends = -(p * math.log2(p) + (1 - p) * math.log2(1 - p))
    assert float(values[1]) == pytest.approx(ends) and float(values[2]) == pytest.approx(ends)
    assert float(values[3]) == pytest.approx(0.8112781, abs=1e-6)


@pytest.mark.parametrize("inplace", [False, True])
def test_layers_and_network_have_the_entropy_worked_out_by_hand(inplace):
    x = torch.linspace(-1, 1, 101).view(-1, 1)[torch.arange(101) != 50]  # 50 below 0, 50 above
    result = entropy.activation_entropy(Known(inplace), signal_inputs(x), samples=None,
                                        batch_size=7)
    layers = {layer.layer: layer for layer in result.layers}
    assert list(layers) == ["first", "second", "second#2"]  # one layer per application
    assert layers["first"].units == 3
    assert layers["first"].entropy == pytest.approx((2 * H_CLAMPED + 1.0) / 3)
    assert layers["second"].entropy == pytest.approx(1.0)
    assert layers["second#2"].entropy == pytest.approx(1.0)
    # weighted by unit-positions: 3 of the 5 units are in `first`
    assert result.network == pytest.approx((2 * H_CLAMPED + 1.0 + 1.0 + 1.0) / 5)
    assert result.samples == 100


def test_every_batch_counts_not_only_the_first():
    """DSD²'s code measured its first batch only; here the batches of a sorted input
    differ, so the first one alone would give another value."""
    x = torch.linspace(-1, 1, 100).view(-1, 1)
    whole = entropy.activation_entropy(Known(), signal_inputs(x), samples=None, batch_size=100)
    batched = entropy.activation_entropy(Known(), signal_inputs(x), samples=None, batch_size=8)
    first = entropy.activation_entropy(Known(), signal_inputs(x[:8]), samples=None)
    assert batched.network == pytest.approx(whole.network, abs=1e-12)
    assert abs(first.network - whole.network) > 0.1


def test_the_model_is_measured_in_eval_mode_and_given_back_as_it_was():
    model = nn.Sequential(nn.Linear(2, 4), nn.Dropout(0.9), nn.ReLU())
    model.train()
    x = torch.randn(64, 2)
    first = entropy.activation_entropy(model, signal_inputs(x))
    assert model.training
    assert entropy.activation_entropy(model, signal_inputs(x)).network == first.network
    assert all(not m._forward_hooks for m in model.modules())  # hooks removed


def test_the_samples_are_a_fixed_subset_or_all_of_them():
    chosen = entropy.sample_indices(5000, 2048)
    assert len(chosen) == 2048 == len(set(chosen.tolist()))
    assert torch.equal(chosen, chosen.sort().values)
    assert torch.equal(chosen, entropy.sample_indices(5000, 2048))
    assert chosen.max() > 4000  # spread over the set, not its first samples
    assert torch.equal(entropy.sample_indices(300, 2048), torch.arange(300))
    assert torch.equal(entropy.sample_indices(300, None), torch.arange(300))
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="samples"):
            entropy.sample_indices(300, bad)


class ReluCalls(TorchFunctionMode):
    """Counts every ReLU applied, as a module or as a function."""

    RELUS = (F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_)

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += func in self.RELUS
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_applies_each_relu_as_a_module(name):
    """The hooks see every ReLU a shipped model applies (none is a bare torch.relu)."""
    spec = MODELS[name]
    shape = (1, 40) if spec.reads == "signal" else (3, 16, 16)
    config = ExperimentConfig(model=name, widths=[8, 6], width=2 if "resnet" in name else 4,
                              depth=2, dataset="mnist1d" if spec.reads == "signal" else "cifar10")
    model = build_model(config, shape, 10)
    x = torch.randn(6, *shape)
    model.eval()
    with ReluCalls() as calls:
        model(x)
    inputs = train.Inputs(x, torch.zeros(6, dtype=torch.int64), torch.zeros(6, dtype=torch.int64),
                          torch.zeros(6, dtype=torch.bool), x, torch.zeros(6, dtype=torch.int64),
                          False, torch.zeros(1), torch.ones(1))
    result = entropy.activation_entropy(model, inputs, samples=None)
    assert calls.count > 0
    assert len(result.layers) == calls.count
    assert 0 <= result.network <= 1


def test_a_model_without_relu_modules_measures_nan():
    result = entropy.activation_entropy(nn.Linear(1, 2), signal_inputs(torch.randn(10, 1)))
    assert math.isnan(result.network) and result.layers == []


# ---------------------------------------------------------------------------- stored runs
@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """One tiny finished run (3 pruned levels), shared by the tests below that only read it."""
    root = tmp_path_factory.mktemp("entropy")
    data_dir = tmp_path_factory.getbasetemp() / "datasets"
    config = ExperimentConfig(model="mlp", widths=[32, 32], train_size=300, test_size=200,
                              epochs=1, levels=3, batch_size=64, device="cpu")
    store = RunStore(root / "runs")
    return config, store, experiment.run_experiment(config, store, progress=False,
                                                    data_dir=data_dir), data_dir


def test_a_run_stores_the_entropy_of_every_level_and_its_layers(stored):
    config, _, run, data_dir = stored
    table = run.levels()
    assert list(table.columns) == LEVEL_COLUMNS
    assert table.activation_entropy.between(0, 1).all()
    meta = run.meta()
    assert meta["activation_entropy_version"] == entropy.VERSION
    assert meta["activation_entropy_samples"] == entropy.SAMPLES
    for level, value in zip(table.level, table.activation_entropy):
        saved = json.loads((run.level_dir(level) / entropy.FILE).read_text())
        assert [layer["layer"] for layer in saved["layers"]] == ["hidden.2", "hidden.4"]
        assert saved["samples"] == 300  # fewer training samples than SAMPLES: all of them
        units = sum(layer["units"] for layer in saved["layers"])
        assert units == 64
        assert saved["network"] == pytest.approx(value, abs=1e-12)
        assert value == pytest.approx(sum(layer["units"] * layer["entropy"]
                                          for layer in saved["layers"]) / units)
    # read back per layer, and measured again from the weights on fewer samples
    per_layer = entropy.run_entropies(run, per_layer=True, data_dir=data_dir)
    assert len(per_layer) == 2 * len(table)
    again = entropy.run_entropies(run, data_dir=data_dir)
    assert again.entropy.to_numpy() == pytest.approx(table.activation_entropy.to_numpy(),
                                                      abs=1e-9)
    fewer = entropy.run_entropies(run, samples=50, data_dir=data_dir)
    assert not np.allclose(fewer.entropy, table.activation_entropy)
    assert list(fewer.units) == [64] * len(table)


def test_a_run_stored_before_the_measure_gets_it_from_its_weights(stored, tmp_path):
    import shutil

    config, _, original, data_dir = stored
    store = RunStore(tmp_path / "runs")
    shutil.copytree(original.path, store.path_for(config))
    run = store.find(config)
    right = run.levels()
    old = right.drop(columns="activation_entropy")
    atomic_write_text(run.file("levels.csv"), old.to_csv(index=False))
    for level in old.level:
        (run.level_dir(level) / entropy.FILE).unlink()
    meta = run.meta()
    del meta["activation_entropy_version"], meta["activation_entropy_samples"]
    atomic_write_text(run.file("meta.json"), json.dumps(meta))
    stamps = {p: p.stat().st_mtime_ns for p in run.path.rglob("*.pt")}

    frame = sweep.run_many([config], store, progress=False, data_dir=data_dir)
    assert frame.activation_entropy.to_numpy() == pytest.approx(
        right.activation_entropy.to_numpy(), abs=1e-9)
    assert list(run.levels().columns) == LEVEL_COLUMNS  # the column in its place
    pd.testing.assert_frame_equal(run.levels().drop(columns="activation_entropy"), old)
    assert all((run.level_dir(level) / entropy.FILE).exists() for level in old.level)
    assert run.meta()["activation_entropy_version"] == entropy.VERSION
    assert "activation_entropy_upgraded" in run.meta()
    assert {p: p.stat().st_mtime_ns for p in run.path.rglob("*.pt")} == stamps  # no retraining
    assert not entropy.upgrade_activation_entropy(run, data_dir)  # once only


def test_the_early_stop_report_on_a_real_run(stored):
    _, store, run, _ = stored
    frame = store.load()
    report = metrics.early_stop_report(frame)
    assert len(report) == 1
    row = report.iloc[0]
    assert row.run == run.name
    assert 0 <= row.keep_level <= row.stop_level <= 3
    table = run.levels().set_index("level")
    assert row.keep_test_acc == pytest.approx(table.test_acc[row.keep_level])
    assert row.best_test_acc == pytest.approx(table.test_acc.max())
    assert row.test_acc_lost >= 0
    assert row.levels_saved == pytest.approx((3 - row.stop_level) / 4)
    assert not row.validation


# ---------------------------------------------------------------------------- the early stop
def levels_frame(columns: dict, seeds=(0,)) -> pd.DataFrame:
    """A hand-made tidy frame: the same per-level values for every seed."""
    count = len(next(iter(columns.values())))
    return pd.DataFrame([{"seed": seed, "level": level, "sparsity": 1 - 0.8 ** level,
                          **{name: values[level] for name, values in columns.items()}}
                         for seed in seeds for level in range(count)])


# flat, a slow drift, then the steep fall from level 6 on: with patience 3 and drop 0.01
# (0.0091 a level here) the window 3..6 is the first of three falls averaging enough
ENTROPY = [0.90, 0.91, 0.905, 0.90, 0.895, 0.89, 0.85, 0.80, 0.75, 0.70, 0.65, 0.60, 0.55]
#          dip of sparse double descent ------------------> sweet spot at 8, then down
VAL = [0.80, 0.75, 0.70, 0.69, 0.70, 0.72, 0.78, 0.83, 0.85, 0.84, 0.82, 0.80, 0.78]


def test_without_validation_the_rule_stops_and_keeps_where_the_entropy_turns():
    frame = levels_frame({"activation_entropy": ENTROPY})
    assert metrics.entropy_early_stop(frame) == metrics.EarlyStop(6, 6, 6, False)
    # a larger drop needs steeper falls in the window: 0.0317 a level over 4..7 (> 0.0182),
    # 0.0467 over 5..8 (> 0.0455)
    assert metrics.entropy_early_stop(frame, drop=0.02) == metrics.EarlyStop(7, 7, 7, False)
    assert metrics.entropy_early_stop(frame, drop=0.05).turn_level == 8
    # a rise inside the window is no turn: patience 6 reaches back over the peak at 1
    assert metrics.entropy_early_stop(frame, patience=6).turn_level == 7


def test_with_validation_the_turn_opens_a_classic_early_stop():
    frame = levels_frame({"activation_entropy": ENTROPY, "val_acc": VAL})
    # best since the turn: 8; three levels without better (9, 10, 11): stop at 11
    assert metrics.entropy_early_stop(frame) == metrics.EarlyStop(6, 11, 8, True)
    # the dense level is not the best: a classic stop from level 0 would have kept it
    assert max(VAL[6:]) > VAL[0]
    # a curve that ends before the patience runs out trains every level
    assert metrics.entropy_early_stop(frame[frame.level <= 9]) == \
        metrics.EarlyStop(6, 9, 8, True)


def test_a_curve_that_never_turns_trains_every_level():
    flat = [0.9, 0.9, 0.91, 0.9, 0.89, 0.9, 0.89]
    frame = levels_frame({"activation_entropy": flat})
    assert metrics.entropy_early_stop(frame) == metrics.EarlyStop(-1, 6, 6, False)
    frame["val_acc"] = [0.7, 0.6, 0.8, 0.75, 0.7, 0.7, 0.7]
    assert metrics.entropy_early_stop(frame) == metrics.EarlyStop(-1, 6, 2, True)


def test_a_validation_column_with_gaps_is_not_used():
    frame = levels_frame({"activation_entropy": ENTROPY, "val_acc": VAL})
    frame.loc[frame.level == 2, "val_acc"] = float("nan")  # a run stored before the split
    assert metrics.entropy_early_stop(frame) == metrics.EarlyStop(6, 6, 6, False)


def test_the_rule_is_online_and_never_reads_test_accuracy():
    frame = levels_frame({"activation_entropy": ENTROPY, "val_acc": VAL,
                          "test_acc": np.linspace(0.5, 0.9, len(VAL))})
    rule = metrics.entropy_early_stop(frame)
    assert metrics.entropy_early_stop(frame[frame.level <= rule.stop_level]) == rule
    shuffled = frame.assign(test_acc=frame.test_acc.to_numpy()[::-1])
    assert metrics.entropy_early_stop(shuffled) == rule
    assert metrics.entropy_early_stop(frame.drop(columns="test_acc")) == rule


def test_the_report_puts_the_kept_level_beside_hindsight_per_curve():
    test = [0.80, 0.76, 0.72, 0.70, 0.71, 0.74, 0.79, 0.84, 0.86, 0.87, 0.83, 0.81, 0.80]
    seconds = [10.0] * 6 + [5.0] * 7
    a = levels_frame({"activation_entropy": ENTROPY, "test_acc": test, "seconds": seconds})
    b = a.assign(val_acc=VAL)
    frame = pd.concat([a.assign(run="entropy-only"), b.assign(run="with-validation")])
    report = metrics.early_stop_report(frame).set_index("run")
    only, val = report.loc["entropy-only"], report.loc["with-validation"]
    assert (only.turn_level, only.stop_level, only.keep_level) == (6, 6, 6)
    assert only.keep_test_acc == pytest.approx(0.79)
    assert (only.best_level, only.best_test_acc) == (9, pytest.approx(0.87))
    assert only.test_acc_lost == pytest.approx(0.08)
    assert (only.levels_trained, only.levels) == (7, 13)
    assert only.levels_saved == pytest.approx(6 / 13)
    assert only.seconds_saved == pytest.approx(30 / 95)
    assert (val.stop_level, val.keep_level, val.keep_test_acc) == (11, 8, pytest.approx(0.86))
    assert val.levels_saved == pytest.approx(1 / 13) and val.validation
    assert val.keep_sparsity == pytest.approx(1 - 0.8 ** 8)


def test_seeds_are_averaged_when_curves_are_named_by_config():
    late = ENTROPY[:6] + [0.89, 0.885, 0.88, 0.80, 0.75, 0.70, 0.65]  # turns at 9
    frame = pd.concat([levels_frame({"activation_entropy": ENTROPY, "test_acc": VAL}, [0]),
                       levels_frame({"activation_entropy": late, "test_acc": VAL}, [1])])
    frame["dataset"] = "mnist1d"
    assert list(metrics.early_stop_report(frame, by="seed").turn_level) == [6, 9]
    report = metrics.early_stop_report(frame, by="dataset")
    assert list(report.dataset) == ["mnist1d"]
    mean = levels_frame({"activation_entropy": [(a + b) / 2 for a, b in zip(ENTROPY, late)]})
    assert report.turn_level.iloc[0] == metrics.entropy_early_stop(mean).turn_level


@pytest.mark.parametrize("options, key", [({"patience": 0}, "patience"),
                                          ({"patience": 1.5}, "patience"),
                                          ({"drop": -0.1}, "drop")])
def test_bad_rule_settings_name_the_key(options, key):
    frame = levels_frame({"activation_entropy": ENTROPY})
    with pytest.raises(ValueError, match=f"^{key}: "):
        metrics.entropy_early_stop(frame, **options)


def test_a_frame_without_the_entropy_column_says_how_to_get_it():
    with pytest.raises(ValueError, match="^activation_entropy: .*upgrade_activation_entropy"):
        metrics.entropy_early_stop(levels_frame({"test_acc": [0.5, 0.6]}))
