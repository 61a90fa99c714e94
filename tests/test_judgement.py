"""Verdicts over seeds (metrics.judge and the per-seed statistics): synthetic per-seed
values with a known effect, none, and one the seeds cannot decide."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sddlib.analysis import metrics


def test_an_effect_well_above_the_noise_holds_and_its_interval_is_the_t_interval():
    values = [0.031, 0.028, 0.035, 0.030, 0.026]
    judgement = metrics.judge(values)
    mean, sd = np.mean(values), np.std(values, ddof=1)
    half = stats.t.ppf(0.975, 4) * sd / math.sqrt(5)
    assert judgement.estimate == pytest.approx(mean)
    assert (judgement.low, judgement.high) == pytest.approx((mean - half, mean + half))
    assert judgement.holds is True and judgement.state == "holds"
    assert judgement.words() == "holds" and judgement.seeds == 5
    assert judgement.seeds_needed is None
    assert metrics.CONFIDENCE == 0.95


def test_an_effect_on_the_other_side_does_not_hold_and_the_side_can_be_turned():
    values = [-0.02, -0.03, -0.025]
    assert metrics.judge(values).holds is False
    assert metrics.judge(values).words() == "does not hold here"
    assert metrics.judge(values, above=False).holds is True  # "below 0" is the claim
    # a margin moves the line the interval is read against
    assert metrics.judge([0.005, 0.006, 0.007], margin=0.01, above=False).holds is True
    assert metrics.judge([0.005, 0.006, 0.007], margin=0.001).holds is True


def test_no_effect_is_inconclusive_with_the_seeds_a_decision_would_need():
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 0.02, size=4)
    values = noise - noise.mean() + 0.005  # mean 0.005, sd about 0.02: straddles 0
    judgement = metrics.judge(values)
    assert judgement.holds is None and judgement.inconclusive
    assert judgement.low < 0 < judgement.high
    assert judgement.state == "inconclusive here"
    needed = judgement.seeds_needed
    sd = np.std(values, ddof=1)
    # the fewest n whose half-width falls below the mean's distance from 0
    assert stats.t.ppf(0.975, needed - 1) * sd / math.sqrt(needed) < 0.005
    assert stats.t.ppf(0.975, needed - 2) * sd / math.sqrt(needed - 1) >= 0.005
    assert needed > 4 and f"about {needed} seeds" in judgement.words()
    assert judgement.words().startswith("inconclusive here (")


def test_too_few_seeds_cannot_be_judged_and_nan_values_are_left_out():
    one = metrics.judge([0.03])
    assert not one.judged and one.holds is None and one.state == "cannot be judged here"
    assert one.words().startswith("cannot be judged here: it needs a value from at least 2")
    assert metrics.judge([0.03, float("nan"), 0.031, 0.029]).seeds == 3
    assert "1 here, 2 more without a value" in metrics.judge([0.03, None, float("nan")]).words()
    assert metrics.seeds_needed(0.0, 0.01) is None  # a mean on the margin: nothing decides
    # every seed exactly on the margin (no dip at all, say): decided, not on the claimed side
    assert metrics.judge([0.0, 0.0, 0.0]).holds is False
    assert metrics.judge([0.0, 0.0, 0.0], above=False).holds is False
    assert metrics.seeds_needed(0.01, 0.0) == 2
    assert metrics.seeds_needed(1e-6, 1.0) == metrics.MOST_SEEDS + 1


def dip_curves(seeds, dip, noise, seed=0, levels=8):
    """Per-seed test curves: dense 0.9, a dip of ``dip`` at level 2, best at level 5
    (0.93), a fall at the end, plus Gaussian noise of ``noise`` per point."""
    rng = np.random.default_rng(seed)
    shape = np.array([0.90, 0.90 - dip / 2, 0.90 - dip, 0.91, 0.92, 0.93, 0.90, 0.80][:levels])
    rows = [{"seed": s, "level": level, "sparsity": 1 - 0.8 ** level,
             "test_acc": float(shape[level] + rng.normal(0, noise))}
            for s in seeds for level in range(levels)]
    return pd.DataFrame(rows)


def test_three_phases_over_seeds_hold_for_a_real_dip_and_not_for_a_flat_curve():
    real = metrics.three_phases_judgement(dip_curves(range(5), dip=0.05, noise=0.003))
    assert real.holds is True
    # a curve that only rises and falls (no dip): the dip at the other seeds' worst level
    # is noise around 0, never a finding
    flat = dip_curves(range(5), dip=0.0, noise=0.003, seed=1)
    judgement = metrics.three_phases_judgement(flat)
    assert judgement.holds is not True


def test_landmarks_of_a_seed_come_from_the_other_seeds():
    frame = dip_curves(range(3), dip=0.05, noise=0.0)
    # seed 0 alone has its worst at level 1 (0.5), but the others put the worst at level
    # 2: seed 0 is read there
    frame.loc[(frame.seed == 0) & (frame.level == 1), "test_acc"] = 0.5
    table = metrics.phase_statistics(frame).set_index("seed")
    assert table.loc[0, "worst_level"] == 2
    assert table.loc[0, "dip"] == pytest.approx(0.05)
    assert table.loc[1, "worst_level"] in (1, 2)


def test_paired_judgement_pairs_seeds_and_reads_the_sparsest_level():
    vanilla = dip_curves(range(4), dip=0.05, noise=0.002)
    student = dip_curves(range(4), dip=0.0, noise=0.002, seed=3)
    shallower = metrics.paired_judgement(vanilla, student, "dip")
    assert shallower.holds is True and shallower.seeds == 4
    student.loc[student.level == 7, "test_acc"] -= 0.05
    cost = metrics.paired_judgement(vanilla, student, "last")
    assert cost.holds is True and cost.estimate == pytest.approx(0.05, abs=0.01)
    # seeds of one variant only are left out of the pairs
    assert metrics.paired_judgement(vanilla, student[student.seed < 2], "dip").seeds == 2


def test_a_claim_about_an_antidote_needs_its_control_to_show_the_effect():
    shows = metrics.judge([0.03, 0.031, 0.029])
    assert metrics.control_shows_effect(shows) == (True, "")
    judged, why = metrics.control_shows_effect(metrics.judge([0.03, -0.03, 0.01]),
                                               "the vanilla run")
    assert not judged and why.startswith("the vanilla run must show sparse double descent")
    assert "inconclusively" in why


def test_verdicts_of_several_cases_count_the_inconclusive_apart():
    yes, no = metrics.judge([0.03, 0.031, 0.029]), metrics.judge([-0.03, -0.031, -0.029])
    maybe = metrics.judge([0.03, -0.03, 0.01])
    assert metrics.verdict_of_judgements({"a": yes, "b": yes}, "dataset") == \
        "holds for every dataset where it can be judged"
    assert metrics.verdict_of_judgements({"a": yes, "b": no, "c": maybe}, "dataset") == \
        "holds for 1 of the 3 datasets judged; inconclusive for 1"
    assert metrics.verdict_of_judgements({"a": maybe, "b": maybe}, "mode") == \
        "inconclusive here (for each of the 2 modes judged)"
    assert metrics.verdict_of_judgements({"a": no}, "mode").startswith("does not hold here")
    assert metrics.verdict_of_judgements({"a": no, "b": maybe}, "mode") == \
        "does not hold here (for 1 of the 2 modes judged; inconclusive for 1)"
    assert metrics.verdict_of_judgements({"a": metrics.judge([0.1])}, "mode").startswith(
        "cannot be judged here")
