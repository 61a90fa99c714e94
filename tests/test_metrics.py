import math

import pandas as pd
import pytest

from sddlib import metrics


def levels_frame(columns: dict, seeds=(0,), sparsity=None) -> pd.DataFrame:
    """A hand-made tidy frame: the same per-level values for every seed."""
    count = len(next(iter(columns.values())))
    sparsity = sparsity or [1 - 0.8 ** level for level in range(count)]
    rows = [{"seed": seed, "level": level, "sparsity": sparsity[level],
             **{name: values[level] for name, values in columns.items()}}
            for seed in seeds for level in range(count)]
    return pd.DataFrame(rows)


def test_train_drop_sparsity_is_the_first_level_below_the_maximum_minus_threshold():
    frame = levels_frame({"train_acc": [0.97, 1.0, 0.99, 0.96, 0.90, 0.80]},
                         sparsity=[0.0, 0.2, 0.36, 0.488, 0.59, 0.672])
    assert metrics.train_drop_sparsity(frame) == pytest.approx(0.59)
    assert metrics.train_drop_sparsity(frame, threshold=0.02) == pytest.approx(0.488)


def test_train_drop_sparsity_ignores_levels_before_the_maximum():
    # the dense level is far below the maximum, but a drop comes after the maximum only
    frame = levels_frame({"train_acc": [0.5, 0.99, 1.0, 0.98, 0.9]})
    assert metrics.train_drop_sparsity(frame) == pytest.approx(1 - 0.8 ** 4)


def test_train_drop_sparsity_averages_seeds_and_is_nan_without_a_drop():
    frame = pd.concat([levels_frame({"train_acc": [1.0, 1.0, 0.92]}, seeds=[0]),
                       levels_frame({"train_acc": [1.0, 1.0, 0.98]}, seeds=[1])])
    assert math.isnan(metrics.train_drop_sparsity(frame))  # mean 0.95 is not below 0.95
    frame.loc[frame.train_acc == 0.98, "train_acc"] = 0.96
    assert metrics.train_drop_sparsity(frame) == pytest.approx(0.36)


def test_distance_accuracy_correlation_uses_levels_up_to_the_accuracy_peak():
    # accuracy falls then rises to its peak at level 4 while distance rises then falls:
    # a perfect negative rank correlation there; the levels after the peak are left out
    frame = levels_frame({"test_acc": [0.80, 0.75, 0.70, 0.78, 0.90, 0.60, 0.40],
                          "learning_distance": [10, 12, 14, 11, 9, 1, 0.5]}, seeds=[0, 1])
    correlation = metrics.distance_accuracy_correlation(frame)
    assert correlation.levels == 5
    assert correlation.rho == pytest.approx(-1.0)


def test_distance_accuracy_correlation_is_nan_when_too_few_levels():
    frame = levels_frame({"test_acc": [0.8, 0.9, 0.5], "learning_distance": [3.0, 2.0, 1.0]})
    correlation = metrics.distance_accuracy_correlation(frame)
    assert correlation.levels == 2
    assert math.isnan(correlation.rho)


def test_paired_difference_pairs_seed_and_level():
    lottery = levels_frame({"test_acc": [0.8, 0.9, 0.7]}, seeds=[0, 1]).assign(retrain="lottery")
    reinit = levels_frame({"test_acc": [0.8, 0.85, 0.75]}, seeds=[0, 1]).assign(retrain="reinit")
    reinit.loc[(reinit.seed == 1) & (reinit.level == 1), "test_acc"] = 0.95
    difference = metrics.paired_difference(pd.concat([reinit, lottery]), "retrain",
                                           "lottery", "reinit")
    assert list(difference.level) == [0, 1, 2, 0, 1, 2]
    assert list(difference.difference) == pytest.approx([0.0, 0.05, -0.05, 0.0, -0.05, -0.05])
    mean = metrics.mean_curve(difference, "difference")
    assert list(mean["mean"]) == pytest.approx([0.0, 0.0, -0.05])


def test_learning_distances_from_checkpoints_match_the_stored_column(tmp_path):
    from sddlib import experiment
    from sddlib.config import ExperimentConfig
    from sddlib.store import RunStore

    config = ExperimentConfig(model="mlp", widths=[32, 32], train_size=500, test_size=200,
                              epochs=2, levels=2, batch_size=64, device="cpu")
    run = experiment.run_experiment(config, RunStore(tmp_path / "runs"), progress=False,
                                    data_dir=tmp_path / "datasets")
    whole = metrics.learning_distances(run)
    assert list(whole.level) == [0, 1, 2] and set(whole.layer) == {"all"}
    assert whole.distance.to_numpy() == pytest.approx(
        run.levels().learning_distance.to_numpy(), rel=1e-6)
    layers = metrics.learning_distances(run, origin="rewind", per_layer=True)
    assert set(layers.layer) == {"hidden.1", "hidden.3", "output"}
    summed = layers.assign(square=layers.distance ** 2).groupby("level").square.sum() ** 0.5
    assert summed.to_numpy() == pytest.approx(whole.distance.to_numpy(), rel=1e-6)
