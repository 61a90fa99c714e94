import math

import numpy as np
import pandas as pd
import pytest

from sddlib.analysis import metrics
from sddlib.engine import checkpoints


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
    from sddlib.config.fields import ExperimentConfig
    from sddlib.engine import experiment
    from sddlib.storage.store import RunStore

    config = ExperimentConfig(model="mlp", widths=[32, 32], train_size=500, test_size=200,
                              epochs=2, levels=2, batch_size=64, device="cpu")
    run = experiment.run_experiment(config, RunStore(tmp_path / "runs"), progress=False,
                                    data_dir=tmp_path / "datasets")
    whole = checkpoints.level_distances(run)
    assert list(whole.level) == [0, 1, 2] and set(whole.layer) == {"all"}
    assert whole.distance.to_numpy() == pytest.approx(
        run.levels().learning_distance.to_numpy(), rel=1e-6)
    layers = checkpoints.level_distances(run, origin="rewind", per_layer=True)
    assert set(layers.layer) == {"hidden.1", "hidden.3", "output"}
    summed = layers.assign(square=layers.distance ** 2).groupby("level").square.sum() ** 0.5
    assert summed.to_numpy() == pytest.approx(whole.distance.to_numpy(), rel=1e-6)


# ---------------------------------------------------------------------------- landmarks
# A curve with a known shape: dense 0.80, a dip to 0.70 at level 2, the best 0.90 at
# level 4, a collapse to 0.40 at level 6 (means over the seeds below).
SHAPE = [0.80, 0.75, 0.70, 0.78, 0.90, 0.60, 0.40]


def two_seeds(means, spread):
    """Seeds 0 and 1 at ``means`` +- ``spread`` (per level), so their mean is ``means``."""
    first = levels_frame({"test_acc": [m + s for m, s in zip(means, spread)]}, seeds=[0])
    second = levels_frame({"test_acc": [m - s for m, s in zip(means, spread)]}, seeds=[1])
    return pd.concat([first, second], ignore_index=True)


def test_curve_summary_takes_the_landmarks_of_the_mean_over_seeds():
    # alone, seed 0 would peak at level 3 (0.78 + 0.15 > 0.90 + 0.01): the mean peaks at 4
    frame = two_seeds(SHAPE, [0.0, 0.0, 0.0, 0.15, 0.01, 0.0, 0.0])
    summary = metrics.curve_summary(frame)
    assert summary.dense_acc == pytest.approx(0.80)
    assert (summary.worst_level, summary.best_level, summary.last_level) == (2, 4, 6)
    assert summary.worst_acc == pytest.approx(0.70)
    assert summary.best_acc == pytest.approx(0.90)
    assert summary.last_acc == pytest.approx(0.40)
    assert summary.worst_sparsity == pytest.approx(0.36)
    assert summary.best_sparsity == pytest.approx(1 - 0.8 ** 4)
    assert summary.last_sparsity == pytest.approx(1 - 0.8 ** 6)
    assert summary.seeds == 2


def test_curve_summary_worst_is_a_pruned_level_before_the_best():
    # the dense level is the lowest and level 5 lower than level 2, yet neither is the worst
    frame = levels_frame({"test_acc": [0.50, 0.70, 0.60, 0.90, 0.80, 0.55]})
    summary = metrics.curve_summary(frame)
    assert (summary.worst_level, summary.worst_acc) == (2, pytest.approx(0.60))
    assert summary.best_level == 3


def test_curve_summary_has_no_worst_point_when_the_first_pruned_level_is_best():
    summary = metrics.curve_summary(levels_frame({"test_acc": [0.80, 0.90, 0.85, 0.70]}))
    assert summary.best_level == 1 and summary.worst_level == -1
    assert math.isnan(summary.worst_acc) and math.isnan(summary.worst_sparsity)
    assert not summary.three_phases()


def test_three_phases_needs_the_dip_the_rise_and_the_fall():
    from dataclasses import replace

    shape = metrics.curve_summary(levels_frame({"test_acc": SHAPE}))
    assert shape.three_phases()  # dip 0.10, rise 0.20, fall 0.50
    assert not replace(shape, worst_acc=0.795).three_phases()           # dip 0.005 < 0.01
    assert not replace(shape, best_acc=0.72, last_acc=0.60).three_phases()  # rise 0.02
    assert not replace(shape, last_acc=0.88).three_phases()             # fall 0.02 < 0.03
    assert replace(shape, last_acc=0.88).three_phases(fall=0.02)        # thresholds are knobs
    assert not replace(shape, worst_acc=float("nan")).three_phases()


# ---------------------------------------------------------------------------- sharpness
def sharpness_table(values):
    return pd.DataFrame({"level": range(len(values)),
                         "sparsity": [1 - 0.8 ** level for level in range(len(values))],
                         "top_eigenvalue": values})


def test_sharpness_trend_rising_with_sparsity_and_over_the_rise():
    frame = levels_frame({"test_acc": SHAPE}, seeds=[0, 1])
    trend = metrics.sharpness_trend(frame, sharpness_table([1, 2, 3, 4, 5, 6, 7]))
    assert trend.rho_sparsity == pytest.approx(1.0)
    assert trend.rise_levels == 3  # levels 2, 3, 4: worst to best
    assert trend.rho_rise == pytest.approx(1.0)  # sharper while accuracy rises


def test_sharpness_trend_rise_window_is_worst_to_best_only():
    # flatter (lower) from level 2 to 4 while accuracy rises; sharp elsewhere
    frame = levels_frame({"test_acc": SHAPE})
    trend = metrics.sharpness_trend(frame, sharpness_table([1, 2, 9, 5, 3, 10, 11]))
    assert trend.rise_levels == 3
    assert trend.rho_rise == pytest.approx(-1.0)
    # ranks 1,2,5,4,3,6,7 against 1..7: 1 - 6 * (2² + 2²) / (7 * (7² - 1)) = 6/7
    assert trend.rho_sparsity == pytest.approx(6 / 7)


def test_sharpness_trend_without_a_worst_point_has_no_rise():
    frame = levels_frame({"test_acc": [0.80, 0.90, 0.85, 0.70]})
    trend = metrics.sharpness_trend(frame, sharpness_table([1, 2, 3, 4]))
    assert trend.rise_levels == 0 and math.isnan(trend.rho_rise)
    assert trend.rho_sparsity == pytest.approx(1.0)


# ---------------------------------------------------------------------------- training drop
def test_train_drop_sparsity_crosses_at_a_known_level_and_is_strict():
    frame = levels_frame({"train_acc": [1.0, 1.0, 0.97, 0.95, 0.94, 0.5]})
    assert metrics.train_drop_sparsity(frame) == pytest.approx(1 - 0.8 ** 4)  # 0.94 < 0.95
    assert metrics.train_drop_sparsity(frame, threshold=0.02) == pytest.approx(0.36)
    assert math.isnan(metrics.train_drop_sparsity(
        levels_frame({"train_acc": [0.90, 0.95, 0.97, 1.0]})))  # never drops


# ---------------------------------------------------------------------------- memorisation
def test_memorisation_drop_sparsity_is_the_first_level_below_half_the_dense_value():
    frame = levels_frame({"train_acc_corrupted": [0.90, 0.95, 0.60, 0.44, 0.10, 0.02]})
    assert metrics.memorisation_drop_sparsity(frame) == pytest.approx(1 - 0.8 ** 3)  # < 0.45
    assert metrics.memorisation_drop_sparsity(frame, fraction=0.7) == pytest.approx(0.36)
    assert metrics.memorisation_drop_sparsity(frame, fraction=0.05) == pytest.approx(
        1 - 0.8 ** 5)


def test_memorisation_drop_sparsity_averages_seeds_and_is_nan_without_a_drop_or_noise():
    frame = pd.concat([levels_frame({"train_acc_corrupted": [1.0, 0.9, 0.2]}, seeds=[0]),
                       levels_frame({"train_acc_corrupted": [0.8, 0.3, 0.6]}, seeds=[1])])
    # means 0.9, 0.6, 0.4: below 0.45 only at level 2 (seed 1 alone would drop at level 1)
    assert metrics.memorisation_drop_sparsity(frame) == pytest.approx(0.36)
    assert math.isnan(metrics.memorisation_drop_sparsity(
        levels_frame({"train_acc_corrupted": [1.0, 0.9, 0.8]})))
    clean = levels_frame({"train_acc_corrupted": [float("nan")] * 3})  # no label changed
    assert math.isnan(metrics.memorisation_drop_sparsity(clean))


def test_recovery_sparsity_is_half_way_from_the_worst_back_to_the_best():
    frame = levels_frame({"test_acc": SHAPE})  # worst 0.70, best 0.90: half way is 0.80
    assert metrics.recovery_sparsity(frame) == pytest.approx(1 - 0.8 ** 4)  # 0.78 < 0.80
    assert metrics.recovery_sparsity(frame, fraction=0.4) == pytest.approx(1 - 0.8 ** 3)
    assert math.isnan(metrics.recovery_sparsity(
        levels_frame({"test_acc": [0.80, 0.90, 0.85, 0.70]})))  # no dip to recover from


# ---------------------------------------------------------------------------- phases
def test_phases_tile_the_sparsity_axis_at_the_landmarks():
    summary = metrics.curve_summary(levels_frame({"test_acc": SHAPE}))
    phases = metrics.phases(summary)
    assert [phase.name for phase in phases] == list(metrics.PHASES)
    assert phases[0].start == 0.0 and phases[-1].end == 1.0
    assert all(a.end == b.start for a, b in zip(phases, phases[1:]))
    assert phases[0].end == pytest.approx(summary.worst_sparsity)
    # the sweet spot spans half a pruning level (20%) either side of the best level
    sweet = phases[2]
    assert 1 - sweet.start == pytest.approx(0.8 ** 4 / 0.8 ** 0.5)
    assert 1 - sweet.end == pytest.approx(0.8 ** 4 * 0.8 ** 0.5)
    assert sweet.start < summary.best_sparsity < sweet.end


def test_phases_without_a_dip_have_no_critical_phase():
    summary = metrics.curve_summary(levels_frame({"test_acc": [0.80, 0.90, 0.85, 0.70]}))
    phases = metrics.phases(summary)
    assert [phase.name for phase in phases] == ["light", "sweet spot", "collapsed"]
    assert 1 - phases[0].end == pytest.approx(0.8 / 0.8 ** 0.5)
    dense_only = metrics.curve_summary(levels_frame({"test_acc": [0.80]}))
    assert [phase.name for phase in metrics.phases(dense_only)] == ["sweet spot", "collapsed"]


# ---------------------------------------------------------------------------- verdicts
def test_verdict_words_and_reasons():
    assert metrics.verdict(True) == "holds"
    assert metrics.verdict(False) == "does not hold here"
    assert metrics.verdict(None) == "cannot be judged here"
    assert metrics.verdict(float("nan")) == "cannot be judged here"
    assert metrics.verdict(np.bool_(False)) == "does not hold here"
    assert metrics.verdict(None, "it needs two curves") == \
        "cannot be judged here: it needs two curves"
    assert metrics.verdict(False, "both drop together") == "does not hold here (both drop together)"
    assert metrics.verdict(True, "for every setting") == "holds for every setting"


def test_verdict_of_cases_counts_the_cases_that_can_be_judged():
    assert metrics.verdict_of_cases([True, None, True]) == \
        "holds for every setting where it can be judged"
    assert metrics.verdict_of_cases(pd.Series([True, False, True]), "dataset") == \
        "holds for 2 of the 3 datasets where it can be judged"
    assert metrics.verdict_of_cases([None], why_none="no dip") == "cannot be judged here: no dip"
    # none of the cases holds: the claim does not hold, not "holds for 0 of ..."
    assert metrics.verdict_of_cases([False, None, False], "mode").startswith(
        metrics.VERDICTS[False])
    assert metrics.verdict_of_cases([]) == "cannot be judged here"


def test_distance_claims_judge_each_curve():
    rises_then_falls = levels_frame({"test_acc": [0.80, 0.75, 0.70, 0.78, 0.90, 0.60, 0.40],
                                     "learning_distance": [10, 12, 14, 11, 9, 1, 0.5]})
    # the distance peaks at dense: an end of the curve, so the claim fails despite rho < 0
    peak_at_dense = levels_frame({"test_acc": [0.80, 0.75, 0.70, 0.78, 0.90],
                                  "learning_distance": [20, 12, 14, 11, 9]})
    too_short = levels_frame({"test_acc": [0.8, 0.9, 0.5], "learning_distance": [3.0, 2.0, 1.0]})
    claims = metrics.distance_claims({"a": rises_then_falls, "b": peak_at_dense,
                                      "c": too_short}).set_index("dataset")
    assert list(claims.verdict) == ["holds", "does not hold here", "cannot be judged here"]
    assert claims.loc["a", "peak_sparsity"] == pytest.approx(1 - 0.8 ** 2)
    assert claims.loc["a", "levels_apart"] == 0  # the peak is at the test minimum
    assert claims.loc["a", "last_over_peak"] == pytest.approx(0.5 / 14)
    assert claims.loc["a", "rho"] == pytest.approx(-1.0) and claims.loc["a", "rho_levels"] == 5
    assert not claims.loc["b", "interior_peak"]
    peak = metrics.distance_peak(rises_then_falls)
    nan_rho = metrics.Correlation(float("nan"), 2)
    assert metrics.distance_claim(nan_rho, peak) is None
    assert metrics.distance_claim(metrics.Correlation(0.3, 5), peak) is False


def test_monotone_reads_the_direction_and_needs_two_values():
    assert metrics.monotone(pd.Series([0.5, 0.4, 0.4]), decreasing=True) is True
    assert metrics.monotone(pd.Series([0.5, 0.6]), decreasing=True) is False
    assert metrics.monotone(pd.Series([0.5, 0.6]), decreasing=False) is True
    assert metrics.monotone(pd.Series([0.5]), decreasing=True) is None
    assert metrics.monotone(pd.Series([0.5, float("nan")]), decreasing=True) is None


def test_memorisation_is_judged_against_the_other_seeds_climb():
    test = [0.80, 0.75, 0.70, 0.78, 0.85, 0.80]  # worst at level 2, best at level 4

    def frame(memorised):
        return levels_frame({"test_acc": test, "train_acc_corrupted": memorised},
                            seeds=[0, 1, 2])
    on = metrics.memorisation_judgement(frame([0.9, 0.9, 0.8, 0.3, 0.1, 0.1]))  # drop at 3
    assert on.holds is True and on.estimate == pytest.approx(0.5) and on.seeds == 3
    before = metrics.memorisation_judgement(frame([0.9, 0.3, 0.1, 0.1, 0.1, 0.1]))  # at 1
    assert before.holds is False and before.estimate == pytest.approx(-1.5)
    after = metrics.memorisation_judgement(frame([0.9, 0.9, 0.9, 0.9, 0.9, 0.3]))  # at 5
    assert after.holds is False
    at_best = metrics.memorisation_judgement(frame([0.9, 0.9, 0.9, 0.9, 0.3, 0.1]))  # at 4
    assert at_best.holds is True
    never = metrics.memorisation_judgement(frame([0.9] * 6))
    assert not never.judged and never.left_out == 3


def test_interpolation_threshold_order():
    assert metrics.interpolation_threshold_order({"magnitude": 0.8, "random": 0.5}) == (True, "")
    assert metrics.interpolation_threshold_order({"magnitude": 0.5, "random": 0.8}) == \
        (False, "random pruning drops at higher sparsity")
    # 1% apart in remaining weights: the same level
    assert metrics.interpolation_threshold_order({"magnitude": 0.800, "random": 0.801}) == \
        (False, "both drop at the same level")
    holds, why = metrics.interpolation_threshold_order({"magnitude": 0.8})
    assert holds is None and "magnitude and random" in why
    assert metrics.verdict(*metrics.interpolation_threshold_order(
        pd.Series({"magnitude": float("nan"), "random": 0.5}))).startswith("cannot be judged here:")


def test_flatness_is_judged_seed_by_seed_over_the_rise():
    frame = levels_frame({"test_acc": SHAPE}, seeds=[0, 1, 2])
    rng = np.random.default_rng(0)
    sharper = {seed: sharpness_table(np.arange(1, 8) + 0.1 * rng.random(7)) for seed in range(3)}
    judged = metrics.flatness_judgement(frame, sharper)
    assert judged.seeds == 3 and judged.estimate == pytest.approx(1.0) and judged.holds
    flatter = {seed: sharpness_table([1, 2, 9, 5, 3, 10, 11]) for seed in range(3)}
    judged = metrics.flatness_judgement(frame, flatter)
    assert judged.estimate == pytest.approx(-1.0) and judged.holds is False
    # no worst point before the best: no rise, no value, cannot be judged
    flat = levels_frame({"test_acc": [0.80, 0.90, 0.85, 0.70]}, seeds=[0, 1])
    judged = metrics.flatness_judgement(flat, {s: sharpness_table([1, 2, 3, 4]) for s in (0, 1)})
    assert not judged.judged and judged.left_out == 2


def test_a_curve_shape_in_words_never_shows_nan():
    from sddlib.book import figures
    dipped = metrics.curve_summary(levels_frame({"test_acc": SHAPE}))
    assert figures.shape_words(dipped).startswith("bottoms out at ")
    undipped = metrics.curve_summary(levels_frame({"test_acc": [0.80, 0.90, 0.85, 0.70]}))
    words = figures.shape_words(undipped)
    assert words == "has no dip before its peak at 20.0% sparsity (90.0%)"
    assert "nan" not in words
    assert figures.path_words(undipped) == "finds no dip before its best, 90.0% at 20.0% sparsity"
    path = figures.path_words(dipped)
    assert path.startswith("lowers it to ") and ", then raises it to " in path
    assert "nan" not in path


def test_a_correlations_interval_is_shown_within_minus_one_and_one():
    """Judged as computed (the verdict is the same), shown cut to what a correlation can be."""
    values = [-0.2, -1.0, -0.9]
    free, bounded = metrics.judge(values, above=True), metrics.judge(values, above=True,
                                                                      bounds=(-1.0, 1.0))
    assert free.low < -1.0 and bounded.low == -1.0 and bounded.high == free.high
    assert bounded.holds == free.holds and bounded.estimate == free.estimate
