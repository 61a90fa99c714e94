"""Numbers read off sparse double descent curves.

A *curve* is the per-level table of one configuration, possibly over several seeds (the
tidy frame of ``RunStore.load``). Seeds are averaged level by level first; the landmarks
are then taken on the mean curve:

- ``dense``: level 0;
- ``best``: the highest mean test accuracy among the pruned levels (the sweet spot);
- ``worst``: the lowest mean test accuracy among the pruned levels *before* ``best`` (the
  critical point where the sparse model still memorises the noise);
- ``last``: the sparsest level.

He et al.'s three phases (fall, rise, fall) are there when the worst point is at least
``dip`` below dense, the best at least ``rise`` above the worst, and the last at least
``fall`` below the best (:meth:`CurveSummary.three_phases`). Quétu & Tartaglione's four
named phases (light, critical, sweet spot, collapsed) are placed at the same landmarks by
:func:`phases`, the one definition the figures and the book use.

Beyond the landmarks: where training accuracy starts to drop (the end of interpolation),
where the network stops memorising the noisy labels and where test accuracy recovers, the
rank correlation of learning distance and test accuracy, and the level-by-level
difference of two variants run with the same seeds, and an early stop over levels read
from the activation entropy (:func:`entropy_early_stop`). The claims these numbers judge are
worded by :func:`verdict`, the one place the book's "holds" / "does not hold here" /
"cannot be judged here" is written.

A claim is a statement about a distribution over seeds, not about one curve: it names one
number per seed (each seed's dip, rise and fall at landmarks the other seeds place,
:func:`phase_statistics`, or the difference of two variants paired by seed) and is judged
on the Student t interval of their mean at :data:`CONFIDENCE` (:func:`judge`): *holds*
when the interval lies on the claimed side, *does not hold here* when it lies on the
other, *inconclusive here* when it straddles, with the seeds a decision would need at the
spread observed (:func:`seeds_needed`). A claim about an antidote is judged only where its
control shows the effect the antidote is meant to remove (:func:`control_shows_effect`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd


@dataclass
class CurveSummary:
    dense_acc: float
    worst_acc: float
    worst_sparsity: float
    worst_level: int
    best_acc: float
    best_sparsity: float
    best_level: int
    last_acc: float
    last_sparsity: float
    last_level: int
    seeds: int

    def three_phases(self, dip: float = 0.01, rise: float = 0.03, fall: float = 0.03) -> bool:
        """He et al.'s fall, rise and fall: dense - worst >= ``dip``, best - worst >=
        ``rise`` and best - last >= ``fall``; False without a worst point."""
        if np.isnan(self.worst_acc):
            return False
        return (self.dense_acc - self.worst_acc >= dip and self.best_acc - self.worst_acc >= rise
                and self.best_acc - self.last_acc >= fall)

    def as_dict(self) -> dict:
        return asdict(self)


def mean_curve(frame: pd.DataFrame, value: str = "test_acc") -> pd.DataFrame:
    """Mean and standard deviation over seeds, per level, with the mean sparsity."""
    grouped = frame.groupby("level")
    table = pd.DataFrame({
        "sparsity": grouped["sparsity"].mean(),
        "mean": grouped[value].mean(),
        "std": grouped[value].std(ddof=1).fillna(0.0),  # one seed: no spread
        "seeds": grouped[value].count(),
    }).reset_index()
    return table.sort_values("level", ignore_index=True)


def curve_summary(frame: pd.DataFrame, value: str = "test_acc") -> CurveSummary:
    """The landmarks of one configuration's curve (seeds averaged)."""
    curve = mean_curve(frame, value)
    if curve.empty:
        raise ValueError("curve_summary: no levels to summarise")
    pruned = curve[curve.level > 0]
    dense = curve.iloc[0]
    last = curve.iloc[-1]
    if pruned.empty:
        best = worst = dense
    else:
        best = pruned.loc[pruned["mean"].idxmax()]
        before = pruned[pruned.level < best.level]
        worst = before.loc[before["mean"].idxmin()] if not before.empty else None
    nan = float("nan")
    return CurveSummary(
        dense_acc=float(dense["mean"]),
        worst_acc=float(worst["mean"]) if worst is not None else nan,
        worst_sparsity=float(worst["sparsity"]) if worst is not None else nan,
        worst_level=int(worst["level"]) if worst is not None else -1,
        best_acc=float(best["mean"]), best_sparsity=float(best["sparsity"]),
        best_level=int(best["level"]),
        last_acc=float(last["mean"]), last_sparsity=float(last["sparsity"]),
        last_level=int(last["level"]),
        seeds=int(curve["seeds"].max()),
    )


def dip_depth(frame: pd.DataFrame, value: str = "test_acc") -> float:
    """How deep a curve dips before its best pruned level (seeds averaged): the dense
    accuracy minus the lowest accuracy between dense and the best level, 0 when nothing
    before the best is below dense (no dip). The quantity DSD² and the antidote paper say
    their remedies remove."""
    summary = curve_summary(frame, value)
    if np.isnan(summary.worst_acc):
        return 0.0
    return max(0.0, summary.dense_acc - summary.worst_acc)


def dip_depths(frame: pd.DataFrame, by: str, value: str = "test_acc") -> pd.DataFrame:
    """:func:`dip_depth` per group of ``by`` and per seed: columns ``by``, ``dip`` (of the
    seed-averaged curve), ``dip_mean`` and ``dip_std`` over the seeds' own curves,
    ``seed_dips`` (each seed's, in seed order) and ``seeds``."""
    rows = []
    for key, group in frame.groupby(by, sort=False):
        per_seed = [dip_depth(seed_frame, value)
                    for _, seed_frame in sorted(group.groupby("seed"), key=lambda kv: kv[0])]
        rows.append({by: key, "dip": dip_depth(group, value),
                     "dip_mean": float(np.mean(per_seed)),
                     "dip_std": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0,
                     "seed_dips": per_seed, "seeds": len(per_seed)})
    return pd.DataFrame(rows)


def summaries(frame: pd.DataFrame, by: str | list[str], value: str = "test_acc") -> pd.DataFrame:
    """One summary row per group (for example per dataset or per criterion)."""
    rows = []
    for key, group in frame.groupby(by, sort=False):
        summary = curve_summary(group, value)
        row = summary.as_dict()
        keys = key if isinstance(key, tuple) else (key,)
        row.update(dict(zip([by] if isinstance(by, str) else by, keys)))
        row["three_phases"] = summary.three_phases()
        rows.append(row)
    return pd.DataFrame(rows)


def train_drop_sparsity(frame: pd.DataFrame, threshold: float = 0.05,
                        value: str = "train_acc") -> float:
    """Sparsity at which training accuracy first drops ``threshold`` below its maximum.

    Seeds are averaged level by level; the maximum is taken over all levels, and the drop
    is the first level after it whose mean falls below ``maximum - threshold``. This marks
    where the pruned network stops interpolating the (noisy) training set. NaN when the
    curve never drops that far.
    """
    curve = mean_curve(frame, value)
    if curve.empty:
        raise ValueError("train_drop_sparsity: no levels to read")
    peak = curve["mean"].idxmax()
    after = curve.loc[peak:]
    below = after[after["mean"] < curve.loc[peak, "mean"] - threshold]
    return float(below.iloc[0]["sparsity"]) if not below.empty else float("nan")


def train_drop_level(frame: pd.DataFrame, threshold: float = 0.05,
                     value: str = "train_acc") -> float:
    """The level of :func:`train_drop_sparsity` (NaN when the curve never drops): a
    number per seed that differences of two curves can be taken of."""
    sparsity = train_drop_sparsity(frame, threshold, value)
    if math.isnan(sparsity):
        return sparsity
    curve = mean_curve(frame, value)
    return float(curve.loc[curve.sparsity == sparsity, "level"].iloc[0])


def memorisation_drop_sparsity(frame: pd.DataFrame, fraction: float = 0.5,
                               value: str = "train_acc_corrupted") -> float:
    """Sparsity at which the pruned network stops memorising the noisy labels.

    ``value`` is the agreement with the noisy label on the training samples whose label
    was changed: near 1 while the network memorises them, near 0 once it predicts their
    true class instead. Seeds are averaged level by level; the drop is the first pruned
    level whose mean falls below ``fraction`` of the dense (level 0) mean. NaN when it
    never falls that far, or when no label was changed (the column is NaN).
    """
    curve = mean_curve(frame, value)
    if curve.empty:
        raise ValueError("memorisation_drop_sparsity: no levels to read")
    dense = curve["mean"].iloc[0]
    below = curve[(curve.level > 0) & (curve["mean"] < fraction * dense)]
    if np.isnan(dense) or below.empty:
        return float("nan")
    return float(below.iloc[0]["sparsity"])


def recovery_sparsity(frame: pd.DataFrame, fraction: float = 0.5,
                      value: str = "test_acc") -> float:
    """Sparsity at which test accuracy has climbed ``fraction`` of the way out of the dip.

    Seeds are averaged level by level; with the worst and best points of
    :func:`curve_summary`, this is the first level after the worst whose mean reaches
    ``worst + fraction * (best - worst)`` (the best level always does). NaN without a
    worst point, where there is no dip to recover from.
    """
    summary = curve_summary(frame, value)
    if summary.worst_level < 0:
        return float("nan")
    curve = mean_curve(frame, value)
    target = summary.worst_acc + fraction * (summary.best_acc - summary.worst_acc)
    climbed = curve[(curve.level > summary.worst_level) & (curve["mean"] >= target)]
    return float(climbed.iloc[0]["sparsity"])


PHASES = ("light", "critical", "sweet spot", "collapsed")


class Phase(NamedTuple):
    name: str     # one of PHASES
    start: float  # sparsity where the phase starts
    end: float    # sparsity where it ends and the next one starts


def phases(summary: CurveSummary, rate: float = 0.2) -> list[Phase]:
    """The named phases of one curve, as sparsity intervals that tile [0, 1] in order.

    The names are Quétu & Tartaglione's (DSD², AAAI 2024), who mark the phases by eye;
    here they start and end at the landmarks of :func:`curve_summary`:

    - *light*: from dense (sparsity 0) to the worst point; pruning changes little or makes
      test accuracy worse, the network still memorises the noisy labels;
    - *critical*: from the worst point to the start of the sweet spot; test accuracy
      climbs out of the dip;
    - *sweet spot*: the best level, half a pruning level either side of it: the remaining
      share ``1 - best_sparsity`` divided (start) and multiplied (end) by
      ``sqrt(1 - rate)``, ``rate`` being the share of weights each level prunes;
    - *collapsed*: from the end of the sweet spot to sparsity 1; too few weights are left
      and test accuracy falls again.

    Without a worst point (no dip before the best level) there is no critical phase and
    the light phase runs to the sweet spot. Empty phases (a sweet spot at the dense or
    sparsest end) are left out.
    """
    half_step = np.sqrt(1.0 - rate)
    best_remaining = 1.0 - summary.best_sparsity
    sweet_start = max(0.0, 1.0 - best_remaining / half_step)
    sweet_end = min(1.0, 1.0 - best_remaining * half_step)
    if np.isnan(summary.worst_sparsity):
        edges = [("light", 0.0, sweet_start)]
    else:
        worst = min(summary.worst_sparsity, sweet_start)
        edges = [("light", 0.0, worst), ("critical", worst, sweet_start)]
    edges += [("sweet spot", sweet_start, sweet_end), ("collapsed", sweet_end, 1.0)]
    return [Phase(name, float(start), float(end)) for name, start, end in edges if end > start]


class Correlation(NamedTuple):
    rho: float
    levels: int


def distance_accuracy_correlation(frame: pd.DataFrame, distance: str = "learning_distance",
                                  value: str = "test_acc") -> Correlation:
    """Spearman correlation of learning distance and test accuracy up to the accuracy peak.

    Both are averaged over seeds level by level; the levels used run from dense (level 0)
    to the best pruned level of :func:`curve_summary` (the sweet spot), the stretch where
    the paper says the distance rises while accuracy falls and falls while it rises, so a
    negative ``rho`` supports it. ``rho`` is NaN with fewer than three levels or a constant
    curve, where a rank correlation says nothing.
    """
    from scipy.stats import spearmanr

    best_level = curve_summary(frame, value).best_level
    distances = mean_curve(frame, distance)
    accuracies = mean_curve(frame, value)
    distances = distances[distances.level <= best_level]["mean"].to_numpy()
    accuracies = accuracies[accuracies.level <= best_level]["mean"].to_numpy()
    levels = len(accuracies)
    if levels < 3 or np.ptp(distances) == 0 or np.ptp(accuracies) == 0:
        return Correlation(float("nan"), levels)
    return Correlation(float(spearmanr(distances, accuracies).statistic), levels)


class DistancePeak(NamedTuple):
    level: int             # where the seed-averaged learning distance is highest
    sparsity: float
    distance: float
    last_distance: float   # at the sparsest level
    worst_level: int       # test accuracy's worst level before its best (curve_summary)
    worst_sparsity: float
    last_level: int

    @property
    def interior(self) -> bool:
        """The peak is neither the dense level nor the sparsest one."""
        return 0 < self.level < self.last_level


def distance_peak(frame: pd.DataFrame, distance: str = "learning_distance",
                  value: str = "test_acc") -> DistancePeak:
    """Where the learning distance peaks, beside where test accuracy is worst.

    He et al.'s claim puts the distance's highest point at the lowest test accuracy, and
    has it fall as accuracy recovers, ending low once too few weights are left to move.
    Seeds are averaged level by level first.
    """
    curve = mean_curve(frame, distance)
    if curve.empty:
        raise ValueError("distance_peak: no levels to read")
    peak = curve.loc[curve["mean"].idxmax()]
    summary = curve_summary(frame, value)
    return DistancePeak(int(peak["level"]), float(peak["sparsity"]), float(peak["mean"]),
                        float(curve["mean"].iloc[-1]), summary.worst_level,
                        summary.worst_sparsity, int(curve["level"].iloc[-1]))


def paired_difference(frame: pd.DataFrame, by: str, minuend: str, subtrahend: str,
                      value: str = "test_acc") -> pd.DataFrame:
    """``value`` of one variant minus another's, paired by seed and level.

    ``frame`` holds both variants, named in its column ``by``. Returns one row per (seed,
    level) present in both, with the mean ``sparsity`` of the pair and the ``difference``;
    :func:`mean_curve` of it (value ``"difference"``) is the mean difference over seeds.
    """
    keys = ["seed", "level"]
    first = frame[frame[by] == minuend][keys + ["sparsity", value]]
    second = frame[frame[by] == subtrahend][keys + ["sparsity", value]]
    pairs = first.merge(second, on=keys, suffixes=("_a", "_b"))
    return pd.DataFrame({
        "seed": pairs["seed"], "level": pairs["level"],
        "sparsity": (pairs["sparsity_a"] + pairs["sparsity_b"]) / 2,
        "difference": pairs[f"{value}_a"] - pairs[f"{value}_b"],
    }).sort_values(keys, ignore_index=True)


LANDMARKS = ["dense_acc", "worst_acc", "worst_sparsity", "best_acc", "best_sparsity",
             "last_acc", "last_sparsity"]


def compare_with_reference(ours: pd.DataFrame, reference: pd.DataFrame,
                           key: str = "dataset", carry: tuple[str, ...] = ()) -> pd.DataFrame:
    """Our landmarks beside a paper's, one row per (``key``, ``who``), with the curve's
    shape: ``dip`` (dense - worst) and ``rise`` (best - worst). ``source`` says whether the
    ``key`` was measured by both, by the paper only or by us only. ``carry``: further
    columns kept from either table where it has them (what the data was, its size).
    """
    frames = []
    for who, table in (("ours", ours), ("paper", reference)):
        part = table[[key] + [c for c in (*carry, *LANDMARKS) if c in table]].copy()
        part["who"] = who
        frames.append(part)
    long = pd.concat(frames, ignore_index=True)
    long["dip"] = long["dense_acc"] - long["worst_acc"]
    long["rise"] = long["best_acc"] - long["worst_acc"]
    present = long.groupby(key)["who"].agg(set)
    long["source"] = long[key].map(lambda k: "both" if len(present[k]) == 2
                                   else f"{next(iter(present[k]))} only")
    return long


class SharpnessTrend(NamedTuple):
    rho_sparsity: float  # Spearman of sharpness and sparsity over every level measured
    rho_rise: float      # Spearman of sharpness and test accuracy, worst to best level
    rise_levels: int


def sharpness_trend(frame: pd.DataFrame, sharpness: pd.DataFrame,
                    measure: str = "top_eigenvalue", value: str = "test_acc") -> SharpnessTrend:
    """Does sharpness follow sparsity, and does it fall where test accuracy rises?

    ``sharpness`` has one row per level (``level``, ``sparsity``, ``measure``, as
    ``landscape.sharpness_by_level`` gives); ``frame`` is the run's tidy levels. If
    flatness explained the rise of the curve, the minima would get flatter from the worst
    level to the best (``rho_rise`` < 0); He et al. found them getting sharper with
    sparsity throughout (``rho_sparsity`` > 0). A ``rho`` is NaN over fewer than three
    levels or a constant series.
    """
    from scipy.stats import spearmanr

    def rho(a, b) -> float:
        if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
            return float("nan")
        return float(spearmanr(a, b).statistic)

    summary = curve_summary(frame, value)
    accuracy = mean_curve(frame, value).set_index("level")["mean"]
    table = sharpness.sort_values("level")
    rise = table[(table.level >= summary.worst_level) & (table.level <= summary.best_level)]
    if summary.worst_level < 0:
        rise = rise.iloc[:0]
    return SharpnessTrend(
        rho(table[measure].to_numpy(), table["sparsity"].to_numpy()),
        rho(rise[measure].to_numpy(), accuracy.loc[rise.level].to_numpy()),
        len(rise))


# ---------------------------------------------------------------------------- early stop
class EarlyStop(NamedTuple):
    turn_level: int   # where the entropy's steep fall was seen (-1: never)
    stop_level: int   # the last level the rule lets train
    keep_level: int   # the level whose network the rule keeps
    validation: bool  # whether a validation accuracy chose ``keep_level``


def entropy_early_stop(frame: pd.DataFrame, patience: int = 3, drop: float = 0.01, *,
                       entropy: str = "activation_entropy",
                       validation: str = "val_acc") -> EarlyStop:
    """Where to stop pruning, read from the activation entropy (and a validation accuracy
    when the curve has one), never from test accuracy.

    DSD² (Quétu & Tartaglione) say the entropy's changes track the phases and make a
    classic early stop usable, but publish no rule; this one is ours, designed on the
    entropy curves of stored runs (MNIST-1D 1-D CNN, MNIST LeNet-300-100). Along the
    levels the network's entropy (seeds averaged) first rises a little or stays flat
    (light phase), drifts down slowly, then falls steeply, level after level, about
    where memorisation of the noisy labels ends. That steep fall is the phase change:

    1. **Turn.** The first level ``t`` whose last ``patience`` level-to-level changes are
       all falls, averaging at least ``drop`` times the highest entropy so far (with the
       defaults: three falls in a row, of 1% of the peak a level on average).
    2. **Without a validation accuracy** (no ``validation`` column, or a NaN in it) the
       rule stops at ``t`` and keeps ``t``. On the MNIST-1D curves that is at or next to
       the best level; on the LeNet ones the turn comes while test accuracy is still
       climbing out of the dip, several levels early.
    3. **With one**, the turn only opens the classic early stop, which the dip of sparse
       double descent would otherwise end too soon (the paper's point): from ``t`` on,
       training continues until ``patience`` levels in a row bring no validation
       accuracy above the best since ``t``, and the best of those levels is kept.

    No turn: the rule never stops (``stop_level`` is the last level, ``turn_level`` -1)
    and keeps the best validation level, or the last level without one. The rule is
    online: what it says about a level depends on the levels up to ``stop_level`` only,
    so cutting the curve there changes nothing. :func:`early_stop_report` puts its
    choice beside the best level in hindsight.
    """
    if isinstance(patience, bool) or not isinstance(patience, (int, np.integer)) \
            or patience < 1:
        raise ValueError(f"patience: must be an integer >= 1, got {patience!r}")
    if not isinstance(drop, (int, float)) or isinstance(drop, bool) or not drop >= 0:
        raise ValueError(f"drop: must be a number >= 0, got {drop!r}")
    if entropy not in frame:
        raise ValueError(f"{entropy}: the frame has no such column; runs stored before it "
                         "was measured get it when they are next found "
                         "(sddlib.engine.entropy.upgrade_activation_entropy)")
    curve = mean_curve(frame, entropy)
    if curve.empty:
        raise ValueError("entropy_early_stop: no levels to read")
    levels = [int(level) for level in curve["level"]]
    scores = mean_curve(frame, validation)["mean"].to_numpy() if validation in frame else None
    if scores is not None and np.isnan(scores).any():
        scores = None
    last = len(levels) - 1
    turn = _entropy_turn(curve["mean"].to_numpy(), patience, drop)
    if turn is None:
        keep = int(np.argmax(scores)) if scores is not None else last
        return EarlyStop(-1, levels[last], levels[keep], scores is not None)
    if scores is None:
        return EarlyStop(levels[turn], levels[turn], levels[turn], False)
    best = turn
    for index in range(turn + 1, last + 1):
        if index > best + patience:
            break
        if scores[index] > scores[best]:
            best = index
    return EarlyStop(levels[turn], levels[min(best + patience, last)], levels[best], True)


def _entropy_turn(values: np.ndarray, patience: int, drop: float) -> int | None:
    """The index of the first level ending ``patience`` falls of mean >= ``drop`` x peak."""
    for index in range(patience, len(values)):
        window = values[index - patience:index + 1]
        if np.isnan(window).any():
            continue
        falls = window[:-1] - window[1:]
        if (falls > 0).all() and falls.mean() >= drop * np.nanmax(values[:index + 1]):
            return index
    return None


def early_stop_report(frame: pd.DataFrame, by: str | list[str] | None = "run",
                      patience: int = 3, drop: float = 0.01) -> pd.DataFrame:
    """:func:`entropy_early_stop` on every curve of ``frame``, beside hindsight.

    A curve is a group of ``by`` (default: each run; config columns such as
    ``["dataset", "noise"]`` average seeds first; None, or a frame without the ``run``
    column, makes the frame one curve). The rule is given the curve without its
    ``test_acc`` column, so it cannot read it. One row per curve: the ``by`` values,
    ``turn_level``, ``stop_level``, ``keep_level`` and ``keep_sparsity``;
    ``keep_test_acc``, the kept level's test accuracy; ``best_level``, ``best_sparsity``
    and ``best_test_acc``, the best level in hindsight (highest mean test accuracy over
    every level, dense included); ``test_acc_lost`` (best minus kept); ``levels_trained``
    (levels 0 to ``stop_level``) of ``levels``; ``levels_saved``, the share of levels
    the rule does not train, which is also the share of epochs (every level trains the
    config's epochs); ``seconds_saved``, the share of the stored ``seconds`` those levels
    took (NaN without the column); ``validation``, whether ``val_acc`` took part.
    """
    if by is None or (by == "run" and "run" not in frame):
        groups = [((), frame)]
        keys: list[str] = []
    else:
        keys = [by] if isinstance(by, str) else list(by)
        groups = [(key if isinstance(key, tuple) else (key,), group)
                  for key, group in frame.groupby(by if isinstance(by, str) else keys,
                                                  sort=False)]
    rows = []
    for key, group in groups:
        rule = entropy_early_stop(group.drop(columns=["test_acc"], errors="ignore"),
                                  patience, drop)
        accuracy = mean_curve(group, "test_acc").set_index("level")
        best = int(accuracy["mean"].idxmax())
        last = int(accuracy.index.max())
        seconds = (mean_curve(group, "seconds").set_index("level")["mean"]
                   if "seconds" in group else None)
        rows.append({
            **dict(zip(keys, key)),
            "turn_level": rule.turn_level, "stop_level": rule.stop_level,
            "keep_level": rule.keep_level,
            "keep_sparsity": float(accuracy.loc[rule.keep_level, "sparsity"]),
            "keep_test_acc": float(accuracy.loc[rule.keep_level, "mean"]),
            "best_level": best, "best_sparsity": float(accuracy.loc[best, "sparsity"]),
            "best_test_acc": float(accuracy.loc[best, "mean"]),
            "test_acc_lost": float(accuracy.loc[best, "mean"]
                                   - accuracy.loc[rule.keep_level, "mean"]),
            "levels_trained": rule.stop_level + 1, "levels": last + 1,
            "levels_saved": (last - rule.stop_level) / (last + 1),
            "seconds_saved": float(seconds[seconds.index > rule.stop_level].sum()
                                   / seconds.sum()) if seconds is not None else float("nan"),
            "validation": rule.validation,
        })
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- verdicts
VERDICTS = {True: "holds", False: "does not hold here", None: "cannot be judged here"}


def verdict(holds: bool | None, why: str = "") -> str:
    """The words the book uses for a judged claim, the only place they are written.

    ``holds``: True ("holds"), False ("does not hold here") or None, a claim the data at
    hand cannot decide ("cannot be judged here"); NaN counts as None. ``why``, when given,
    follows the words: after a colon when the claim cannot be judged (what is missing), in
    brackets when it does not hold (how it fails), after a space when it holds (where:
    "for every setting where it can be judged").
    """
    if holds is None or (isinstance(holds, float) and math.isnan(holds)):
        holds = None
    else:
        holds = bool(holds)
    words = VERDICTS[holds]
    if not why:
        return words
    if holds is None:
        return f"{words}: {why}"
    return f"{words} ({why})" if holds is False else f"{words} {why}"


def verdict_of_cases(cases, unit: str = "setting", why_none: str = "") -> str:
    """One verdict over several cases (noise settings, datasets) judged one by one.

    ``cases``: True, False or None per case; None cases cannot be judged and are left
    out. "cannot be judged here" (with ``why_none``) when no case can be judged, "holds
    for every <unit> where it can be judged" when all the others hold, else "holds for k
    of the n <unit>s where it can be judged". One failing case does not make the claim
    fail: the count says how far it holds.
    """
    judged = [bool(case) for case in cases if case is not None
              and not (isinstance(case, float) and math.isnan(case))]
    if not judged:
        return verdict(None, why_none)
    if all(judged):
        return verdict(True, f"for every {unit} where it can be judged")
    if not any(judged):
        return verdict(False, f"for any of the {len(judged)} {unit}s where it can be judged"
                       if len(judged) > 1 else f"for the one {unit} where it can be judged")
    return verdict(True, f"for {sum(judged)} of the {len(judged)} {unit}s where it can be "
                         "judged")


def distance_claim(correlation: Correlation, peak: DistancePeak) -> bool | None:
    """He et al.'s learning-distance claim on one curve needs both: the distance peaks
    inside the curve (not at the dense or the sparsest level, ``peak.interior``) and it
    moves against test accuracy up to the sweet spot (``correlation.rho < 0``). None when
    ``rho`` is NaN (too few levels before the sweet spot, or a flat curve)."""
    if math.isnan(correlation.rho):
        return None
    return bool(correlation.rho < 0 and peak.interior)


def distance_claims(curves: dict[str, pd.DataFrame], distance: str = "learning_distance",
                    value: str = "test_acc") -> pd.DataFrame:
    """The learning-distance claim judged on several curves, one row per name of
    ``curves`` (name -> tidy levels of one configuration over its seeds).

    Columns: ``dataset`` (the name), ``peak_sparsity`` and ``worst_sparsity``
    (:func:`distance_peak`), ``levels_apart`` (levels between the distance peak and the
    test minimum, NaN without a minimum), ``peak_distance``, ``last_distance``,
    ``last_over_peak``, ``interior_peak``, ``rho`` and ``rho_levels``
    (:func:`distance_accuracy_correlation`) and ``verdict`` (:func:`distance_claim`).
    """
    rows = []
    for name, curve in curves.items():
        peak = distance_peak(curve, distance, value)
        correlation = distance_accuracy_correlation(curve, distance, value)
        rows.append({"dataset": name, "peak_sparsity": peak.sparsity,
                     "worst_sparsity": peak.worst_sparsity,
                     "levels_apart": abs(peak.level - peak.worst_level)
                     if peak.worst_level >= 0 else float("nan"),
                     "peak_distance": peak.distance, "last_distance": peak.last_distance,
                     "last_over_peak": peak.last_distance / peak.distance,
                     "interior_peak": peak.interior, "rho": correlation.rho,
                     "rho_levels": correlation.levels,
                     "verdict": verdict(distance_claim(correlation, peak))})
    return pd.DataFrame(rows)


def monotone(values: pd.Series, decreasing: bool) -> bool | None:
    """Does a landmark move one way along an ordered series (for example the sparsity of
    the training drop as the label-noise rate grows)? Ties count as moving. None with
    fewer than two values or a missing one."""
    if len(values) < 2 or values.isna().any():
        return None
    return bool(values.is_monotonic_decreasing if decreasing
                else values.is_monotonic_increasing)


def memorisation_judgement(frame: pd.DataFrame, fraction: float = 0.5,
                           value: str = "test_acc") -> Judgement:
    """Whether a network stops memorising its noisy labels on the climb out of the dip,
    judged over seeds (one setting's runs, ``frame``).

    Per seed: the level where memorisation stops (its own ``train_acc_corrupted`` first
    below ``fraction`` of its dense value) against the worst and best levels of the
    *other* seeds' mean ``value`` curve (:func:`phase_statistics`' leave-one-out). The
    number is how far inside the climb the drop lies, ``min(drop - worst, best - drop +
    1) - 0.5`` levels: above 0 exactly when the drop comes after the worst level and at
    or before the best, so the claim holds when the interval lies above 0. A seed whose
    memorisation never falls that far, or a curve without a worst point, gives no value.
    """
    seeds = sorted(frame["seed"].unique())
    values = []
    for seed in seeds:
        own = frame[frame.seed == seed].sort_values("level")
        others = frame[frame.seed != seed] if len(seeds) > 1 else own
        marks = curve_summary(others, value)
        memorised = own.set_index("level")["train_acc_corrupted"]
        dense = memorised.iloc[0]
        below = memorised[(memorised.index > memorised.index[0])
                          & (memorised < fraction * dense)]
        if np.isnan(dense) or below.empty or marks.worst_level < 0:
            values.append(float("nan"))
            continue
        drop = int(below.index[0])
        values.append(min(drop - marks.worst_level, marks.best_level - drop + 1) - 0.5)
    return judge(values, 0.0, above=True, unit="{:.1f} levels",
                 statistic="levels the memorisation drop lies inside the climb, worst to "
                           "best")


def interpolation_threshold_order(drops, later: str = "magnitude",
                                  earlier: str = "random") -> tuple[bool | None, str]:
    """He et al.'s criteria claim: the training accuracy of ``later`` pruning drops (its
    interpolation threshold) at higher sparsity than that of ``earlier`` pruning.

    ``drops``: criterion -> :func:`train_drop_sparsity` (NaN: never drops). Returns
    (holds, why) for :func:`verdict`; two drops within 1% of each other in remaining
    weights are the same level, which does not hold.
    """
    first, second = (float(drops.get(name, float("nan"))) for name in (later, earlier))
    if math.isnan(first) or math.isnan(second):
        return None, (f"it needs {later} and {earlier} curves whose training accuracy both "
                      "drop")
    if math.isclose(1 - first, 1 - second, rel_tol=0.01):
        return False, "both drop at the same level"
    if first > second:
        return True, ""
    return False, f"{earlier} pruning drops at higher sparsity"


# ---------------------------------------------------------------------------- uncertainty
# The one place the book's intervals are set: a two-sided Student t interval over seeds.
CONFIDENCE = 0.95
INCONCLUSIVE = "inconclusive here"
# Beyond this many seeds a power estimate says "more than" instead of a number.
MOST_SEEDS = 1000


@dataclass(frozen=True)
class Judgement:
    """A claim judged on one number per seed: the mean, its :data:`CONFIDENCE` Student t
    interval, and where the interval lies against ``margin``.

    ``holds``: True when the interval lies on the claimed side of ``margin`` (above it
    when ``above``), False when on the other side (or when every seed gives exactly the
    margin: no spread, and not on the claimed side), None when it straddles (inconclusive)
    or when fewer than two seeds give no interval at all (:attr:`judged` False).
    ``seeds_needed``: for an inconclusive one, the fewest seeds whose interval would
    clear ``margin`` if the mean and the spread stayed as observed (a simple power
    estimate); None when the mean sits on the margin (no number of seeds would decide).
    ``unit``: how :meth:`words` formats the numbers ("{:.1%}" for accuracies)."""
    values: tuple[float, ...]
    estimate: float
    low: float
    high: float
    margin: float = 0.0
    above: bool = True
    holds: bool | None = None
    seeds_needed: int | None = None
    statistic: str = ""
    unit: str = "{:.1%}"
    left_out: int = 0  # seeds whose number could not be read (NaN)

    @property
    def seeds(self) -> int:
        return len(self.values)

    @property
    def judged(self) -> bool:
        """Whether there was an interval to judge (two seeds or more)."""
        return self.seeds >= 2

    @property
    def inconclusive(self) -> bool:
        return self.judged and self.holds is None

    @property
    def state(self) -> str:
        """The verdict's first words: holds, does not hold here, inconclusive here or
        cannot be judged here."""
        return INCONCLUSIVE if self.inconclusive else VERDICTS[self.holds if self.judged
                                                               else None]

    def interval(self) -> str:
        """``"1.2% [0.4%, 2.0%]"``: the estimate and its interval, in :attr:`unit`."""
        number, _, suffix = self.unit.rpartition("}")  # "{:.1f} levels": the unit once
        number += "}"
        if not self.judged:
            return number.format(self.estimate) + suffix if self.seeds else "-"
        return (f"{number.format(self.estimate)} [{number.format(self.low)}, "
                f"{number.format(self.high)}]{suffix}")

    def words(self, why: str = "") -> str:
        """The verdict in the book's words (:func:`verdict`), an inconclusive one with the
        seeds a decision would need."""
        if not self.judged:
            missing = f", {self.left_out} more without a value" if self.left_out else ""
            return verdict(None, why or f"it needs a value from at least 2 seeds, "
                                        f"{self.seeds} here{missing}")
        if self.holds is None:
            if self.seeds_needed is None:
                need = "its mean sits on the margin, so more seeds would not decide it"
            elif self.seeds_needed > MOST_SEEDS:
                need = f"more than {MOST_SEEDS} seeds would be needed at this spread"
            else:
                need = f"about {self.seeds_needed} seeds would decide it at this spread"
            return f"{INCONCLUSIVE} ({need})"
        return verdict(self.holds, why)

    def record(self) -> dict:
        """What the landing table shows of it (JSON-ready)."""
        nan_free = (lambda x: None if x is None or (isinstance(x, float) and math.isnan(x))
                    else float(x))
        return {"statistic": self.statistic, "estimate": nan_free(self.estimate),
                "low": nan_free(self.low), "high": nan_free(self.high), "seeds": self.seeds,
                "interval": self.interval(), "seeds_needed": self.seeds_needed}


def judge(values, margin: float = 0.0, above: bool = True, statistic: str = "",
          unit: str = "{:.1%}", confidence: float = CONFIDENCE) -> Judgement:
    """:class:`Judgement` of ``values`` (one per seed; NaN ones are left out): does their
    mean lie above ``margin`` (below it when not ``above``), judged on a Student t
    interval at ``confidence``? A t interval rather than a bootstrap: with 3 to 5 seeds a
    bootstrap's percentiles cannot reach past the observed values, so it is too narrow."""
    from scipy import stats

    values = list(values)
    clean = tuple(float(v) for v in values if v is not None and not math.isnan(float(v)))
    n, left_out = len(clean), len(values) - len(clean)
    if n < 2:
        mean = float(np.mean(clean)) if clean else float("nan")
        return Judgement(clean, mean, float("nan"), float("nan"), margin, above, None, None,
                         statistic, unit, left_out)
    mean = float(np.mean(clean))
    sd = float(np.std(clean, ddof=1))
    quantile = float(stats.t.ppf((1 + confidence) / 2, n - 1))
    half = quantile * sd / math.sqrt(n)
    low, high = mean - half, mean + half
    if low > margin:
        holds = above
    elif high < margin:
        holds = not above
    elif sd == 0:  # every seed exactly on the margin: decided, and not on the claimed side
        holds = False
    else:
        holds = None
    needed = seeds_needed(mean - margin, sd, confidence) if holds is None else None
    return Judgement(clean, mean, low, high, margin, above, holds, needed, statistic, unit,
                     left_out)


def seeds_needed(gap: float, sd: float, confidence: float = CONFIDENCE) -> int | None:
    """The fewest seeds (at least 2) whose t interval, at spread ``sd``, would no longer
    reach across a mean ``gap`` away from the margin; None when ``gap`` is 0, more than
    :data:`MOST_SEEDS` as ``MOST_SEEDS + 1``."""
    from scipy import stats

    if gap == 0 or math.isnan(gap):
        return None
    if sd == 0:
        return 2
    for n in range(2, MOST_SEEDS + 1):
        if stats.t.ppf((1 + confidence) / 2, n - 1) * sd / math.sqrt(n) < abs(gap):
            return n
    return MOST_SEEDS + 1


def verdict_of_judgements(cases: dict, unit: str = "setting", why_none: str = "") -> str:
    """One verdict over several cases (datasets, modes), each a :class:`Judgement` judged
    on its own: like :func:`verdict_of_cases`, with the inconclusive ones counted apart.
    "inconclusive here" when none is decided either way."""
    judged = [j for j in cases.values() if j.judged]
    if not judged:
        return verdict(None, why_none or "no case has two seeds or more")
    held = sum(j.holds is True for j in judged)
    failed = sum(j.holds is False for j in judged)
    open_ = len(judged) - held - failed
    tail = f"; inconclusive for {open_}" if open_ and (held or failed) else ""
    if not held and not failed:
        return judged[0].words() if len(judged) == 1 else \
            f"{INCONCLUSIVE} (for each of the {len(judged)} {unit}s judged)"
    if held == len(judged):
        return verdict(True, f"for every {unit} where it can be judged")
    if not held:
        return verdict(False, f"for {failed} of the {len(judged)} {unit}s judged{tail}"
                       if open_ else f"for none of the {len(judged)} {unit}s judged")
    return verdict(True, f"for {held} of the {len(judged)} {unit}s judged{tail}")


def phase_statistics(frame: pd.DataFrame, value: str = "test_acc") -> pd.DataFrame:
    """Each seed's three phases, as differences of ``value`` between landmark levels:
    ``dip`` = dense - worst, ``rise`` = best - worst, ``fall`` = best - last, and
    ``smallest`` (the least of the three: above 0 for a fall, a rise and a fall).

    A seed's landmarks are the levels that the *other* seeds' mean curve puts them at
    (:func:`curve_summary`), so the noise of a seed never chooses where that seed is
    measured (picking the best and worst levels from the same numbers would show a dip
    in a flat curve); with one seed, its own. Without a worst point (the best is the first
    pruned level), the dip and the rise are 0: there is none. One row per seed:
    seed, dense_level, worst_level, best_level, last_level, dip, rise, fall, smallest."""
    seeds = sorted(frame["seed"].unique())
    rows = []
    for seed in seeds:
        own = frame[frame.seed == seed].set_index("level")[value]
        others = frame[frame.seed != seed] if len(seeds) > 1 else frame
        marks = curve_summary(others, value)
        at = lambda level: float(own.get(level, float("nan")))  # noqa: E731
        dense = at(int(others.level.min()))
        if marks.worst_level < 0:  # the best is the first pruned level: no dip, no rise
            dip = rise = 0.0
        else:
            dip = dense - at(marks.worst_level)
            rise = at(marks.best_level) - at(marks.worst_level)
        fall = at(marks.best_level) - at(marks.last_level)
        rows.append({"seed": seed, "worst_level": marks.worst_level,
                     "best_level": marks.best_level, "last_level": marks.last_level,
                     "dip": dip, "rise": rise, "fall": fall,
                     "smallest": float(np.min([dip, rise, fall]))})
    return pd.DataFrame(rows, columns=["seed", "worst_level", "best_level", "last_level",
                                       "dip", "rise", "fall", "smallest"])


def three_phases_judgement(frame: pd.DataFrame, value: str = "test_acc") -> Judgement:
    """He et al.'s fall, rise and fall over seeds: the smallest of each seed's dip, rise
    and fall (:func:`phase_statistics`) judged above 0."""
    return judge(phase_statistics(frame, value)["smallest"],
                 statistic="smallest of dip, rise and fall, per seed")


def three_phases_by(frame: pd.DataFrame, by: str, value: str = "test_acc") -> dict:
    """:func:`three_phases_judgement` of each group of ``by`` (a dataset, a mode), in the
    order the groups appear."""
    return {key: three_phases_judgement(group, value)
            for key, group in frame.groupby(by, sort=False)}


def best_level(frame: pd.DataFrame, value: str = "test_acc") -> float:
    """The pruned level of one seed's curve with the highest ``value`` (its own sweet
    spot); NaN without pruned levels."""
    pruned = frame[frame.level > 0]
    return float(pruned.loc[pruned[value].idxmax(), "level"]) if not pruned.empty \
        else float("nan")


def seed_statistic(frame: pd.DataFrame, statistic, value: str = "test_acc") -> pd.Series:
    """One number per seed of ``frame``, indexed by seed: ``statistic`` is a column of
    :func:`phase_statistics` (``dip``, ``rise``, ``fall``, ``smallest``), ``"last"``
    (``value`` at the sparsest level), ``"best_level"`` (:func:`best_level`) or a
    function of one seed's levels."""
    if statistic in ("dip", "rise", "fall", "smallest"):
        return phase_statistics(frame, value).set_index("seed")[statistic]
    if statistic == "last":
        return frame[frame.level == frame.level.max()].set_index("seed")[value]
    function = (lambda seed: best_level(seed, value)) if statistic == "best_level" \
        else statistic
    return pd.Series({seed: function(group) for seed, group in frame.groupby("seed")},
                     dtype=float)


STATISTIC_WORDS = {"last": "accuracy at the sparsest level", "best_level": "sweet-spot level",
                   "smallest": "smallest of dip, rise and fall"}


def paired_judgement(first: pd.DataFrame, second: pd.DataFrame, statistic,
                     above: bool = True, margin: float = 0.0, value: str = "test_acc",
                     unit: str = "", words: str = "") -> Judgement:
    """:func:`seed_statistic` of ``first`` minus that of ``second``, paired by seed
    (seeds run by one variant only are left out), judged above ``margin`` (below when
    not ``above``). ``words``: what the statistic is, for the table (default: its name);
    ``unit``: how it is printed (default: levels for ``best_level``, else percent)."""
    a, b = seed_statistic(first, statistic, value), seed_statistic(second, statistic, value)
    both = a.index.intersection(b.index)
    words = words or STATISTIC_WORDS.get(statistic, str(statistic))
    unit = unit or ("{:.1f} levels" if statistic == "best_level" else "{:.1%}")
    return judge((a[both] - b[both]).tolist(), margin, above, unit=unit,
                 statistic=f"{words}, difference paired by seed")


def control_shows_effect(control: Judgement, what: str = "the control") -> tuple[bool, str]:
    """Whether a claim about an antidote or a mode may be judged: only where its control
    (the vanilla run) shows the effect it is meant to remove, at the interval. Returns
    (may judge, the reason it may not)."""
    if control.holds is True:
        return True, ""
    state = ("has fewer than two seeds" if not control.judged else
             "shows it only inconclusively" if control.holds is None else "does not show it")
    return False, (f"{what} must show sparse double descent at the {CONFIDENCE:.0%} "
                   f"interval, and {state} ({control.interval()})")


def flatness_judgement(frame: pd.DataFrame, sharpness: dict, measure: str = "top_eigenvalue",
                       value: str = "test_acc") -> Judgement:
    """He et al.'s claim that flatness does not explain sparse double descent, judged over
    seeds: each seed's Spearman correlation between its minima's sharpness (``measure``)
    and its test accuracy over the rise of the curve, from the worst level to the best.

    ``frame``: the seeds' tidy levels; ``sharpness``: seed -> its table per level
    (``landscape.sharpness_by_level``). A seed's rise is read between the levels the
    *other* seeds' mean curve puts the worst and best points at, as
    :func:`phase_statistics` does, so its own noise does not choose where it is measured.
    If flatness explained the rise the minima would get flatter as accuracy rises (the
    correlation below 0); the claim holds when the interval lies above 0 (sharper, as
    the paper found), does not hold when it lies below, and a seed without a rise of
    three levels gives no value."""
    from scipy.stats import spearmanr

    seeds = sorted(sharpness)
    values = []
    for seed in seeds:
        own = frame[frame.seed == seed].set_index("level")[value]
        others = frame[frame.seed != seed] if len(seeds) > 1 else frame[frame.seed == seed]
        marks = curve_summary(others, value)
        table = sharpness[seed].sort_values("level")
        rise = table[(table.level >= marks.worst_level) & (table.level <= marks.best_level)]
        a, b = rise[measure].to_numpy(), own.reindex(rise.level).to_numpy()
        if marks.worst_level < 0 or len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
            values.append(float("nan"))
        else:
            values.append(float(spearmanr(a, b).statistic))
    return judge(values, 0.0, above=True, unit="{:.2f}",
                 statistic="Spearman of sharpness with test accuracy, worst to best level")
