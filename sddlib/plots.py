"""Figures of sparse double descent, drawn with seaborn from the run store's tidy frames.

The x axis is the share of weights that remain, on a log scale running from dense (left)
to sparse (right): iterative pruning removes 20% per level, so levels are evenly spaced on
it and the interesting, very sparse end is not squeezed into the last few millimetres.
Curves are the mean over seeds with a band of one standard deviation.
"""
from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

from .metrics import CurveSummary

PHASE_COLOURS = {"light": "#dbe9f6", "critical": "#f8d9d2", "sweet": "#dcefd9",
                 "collapsed": "#e8e8e8"}


def with_remaining(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["remaining"] = 100.0 * (1.0 - frame["sparsity"])
    return frame


def sparsity_axis(ax) -> None:
    """Remaining weights in %, log scale, dense on the left."""
    ax.set_xscale("log")
    ax.invert_xaxis()
    ticks = [100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("remaining weights (%, log scale)")


def curves(ax, frame: pd.DataFrame, y: str = "test_acc", hue: str | None = None,
           label: str | None = None, **kwargs):
    """Mean +- std over seeds of ``y`` against remaining weights, one line per ``hue``."""
    data = with_remaining(frame)
    if hue is None and label is not None:
        kwargs["label"] = label
    sns.lineplot(data=data, x="remaining", y=y, hue=hue, errorbar="sd", marker="o",
                 markersize=3, ax=ax, **kwargs)
    sparsity_axis(ax)
    ax.set_ylabel(y.replace("_", " "))
    return ax


def mark_phases(ax, summary: CurveSummary) -> None:
    """Shade the phases of one curve: light, critical, sweet spot and collapse.

    Boundaries are the landmarks of :func:`metrics.curve_summary`: the light phase ends at
    the worst point, the critical phase climbs to the best point, the sweet spot is the
    best level's neighbourhood and the collapse follows it.
    """
    def remaining(sparsity):
        return 100.0 * (1.0 - sparsity)

    left, right = ax.get_xlim()  # inverted: left is the dense end
    edges = [left]
    names = []
    if not np.isnan(summary.worst_sparsity):
        edges.append(remaining(summary.worst_sparsity))
        names.append("light")
    names.append("critical" if names else "light")
    best = remaining(summary.best_sparsity)
    edges += [best * 1.1, best / 1.1, right]
    names += ["sweet", "collapsed"]
    for (start, end), name in zip(zip(edges[:-1], edges[1:]), names):
        ax.axvspan(start, end, color=PHASE_COLOURS[name], alpha=0.6, lw=0, zorder=0)
        ax.text(np.sqrt(start * end), 0.02, name, transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=7, color="0.35", rotation=90)
    ax.set_xlim(left, right)


def train_test_figure(frame: pd.DataFrame, hue: str, phases: CurveSummary | None = None):
    """The standard two panels: training accuracy (noisy labels) and test accuracy against
    remaining weights, one line per ``hue``; the phases of ``phases`` shaded on the right."""
    fig, axes = figure(1, 2)
    curves(axes[0, 0], frame, "train_acc", hue=hue)
    axes[0, 0].set_title("training accuracy (noisy labels)")
    curves(axes[0, 1], frame, "test_acc", hue=hue)
    if phases is not None:
        mark_phases(axes[0, 1], phases)
    axes[0, 1].set_title("test accuracy")
    fig.tight_layout()
    return fig


def figure(rows: int = 1, cols: int = 2, width: float = 10.0, height: float = 3.6):
    matplotlib.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3})
    fig, axes = plt.subplots(rows, cols, figsize=(width, height * rows), squeeze=False)
    return fig, axes


def landmark_shapes(ax_shape, ax_where, comparison: pd.DataFrame) -> None:
    """Dip and rise (left) and where the worst and best points sit (right), per curve."""
    labels = comparison["dataset"] + " (" + comparison["who"] + ")"
    positions = np.arange(len(comparison))
    ax_shape.barh(positions - 0.2, 100 * comparison["dip"], height=0.4, label="dip")
    ax_shape.barh(positions + 0.2, 100 * comparison["rise"], height=0.4, label="rise")
    ax_shape.set(yticks=positions, yticklabels=labels, xlabel="test accuracy points")
    ax_shape.legend(fontsize=8)
    remaining_worst = 100 * (1 - comparison["worst_sparsity"])
    remaining_best = 100 * (1 - comparison["best_sparsity"])
    ax_where.scatter(remaining_worst, positions, marker="v", label="worst", color="C3")
    ax_where.scatter(remaining_best, positions, marker="^", label="best", color="C2")
    ax_where.set(yticks=positions, yticklabels=labels)
    sparsity_axis(ax_where)
    ax_where.legend(fontsize=8)
