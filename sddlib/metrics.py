"""Numbers read off sparse double descent curves.

A *curve* is the per-level table of one configuration, possibly over several seeds (the
tidy frame of ``RunStore.load``). Seeds are averaged level by level first; the landmarks
are then taken on the mean curve:

- ``dense``: level 0;
- ``best``: the highest mean test accuracy among the pruned levels (the sweet spot);
- ``worst``: the lowest mean test accuracy among the pruned levels *before* ``best`` (the
  critical point where the sparse model still memorises the noise);
- ``last``: the sparsest level.

The three phases are there when the worst point is at least ``dip`` below dense, the best
at least ``rise`` above the worst, and the last at least ``fall`` below the best.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

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


def summaries(frame: pd.DataFrame, by: str | list[str], value: str = "test_acc") -> pd.DataFrame:
    """One summary row per group (for example per dataset or per criterion)."""
    rows = []
    for key, group in frame.groupby(by, sort=False):
        row = curve_summary(group, value).as_dict()
        keys = key if isinstance(key, tuple) else (key,)
        row.update(dict(zip([by] if isinstance(by, str) else by, keys)))
        row["three_phases"] = curve_summary(group, value).three_phases()
        rows.append(row)
    return pd.DataFrame(rows)
