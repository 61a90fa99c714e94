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

from . import metrics
from .metrics import PHASES, CurveSummary

PHASE_COLOURS = dict(zip(PHASES, ["#dbe9f6", "#f8d9d2", "#dcefd9", "#e8e8e8"]))

# axis labels in words for the tidy frame's columns
LABELS = {"train_acc": "training accuracy", "test_acc": "test accuracy",
          "train_acc_clean": "training accuracy (true labels)",
          "train_acc_corrupted": "agreement with noisy labels",
          "learning_distance": "learning distance"}


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
    ax.set_ylabel(LABELS.get(y, y.replace("_", " ")))
    return ax


def mark_phases(ax, summary: CurveSummary, rate: float = 0.2) -> None:
    """Shade the phases of one curve (light, critical, sweet spot, collapsed), placed by
    :func:`metrics.phases`; the first and last run to the edges of the axis."""
    left, right = ax.get_xlim()  # inverted: left is the dense end
    for phase in metrics.phases(summary, rate):
        start = left if phase.start <= 0 else min(left, 100.0 * (1.0 - phase.start))
        end = right if phase.end >= 1 else max(right, 100.0 * (1.0 - phase.end))
        if start <= end:  # outside the axis
            continue
        ax.axvspan(start, end, color=PHASE_COLOURS[phase.name], alpha=0.6, lw=0, zorder=0)
        ax.text(np.sqrt(start * end), 0.02, phase.name, transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=8, color="0.3", rotation=90)
    ax.set_xlim(left, right)


def palette(labels) -> dict:
    """One colour per label, to keep a curve's colour the same across a page's figures."""
    return dict(zip(labels, sns.color_palette(n_colors=len(labels))))


def mark_sparsities(ax, sparsities: dict, linestyle: str = "--") -> None:
    """A vertical line at each curve's sparsity, in the colour of the curve its label
    names in the axis legend; NaN (never reached) draws nothing."""
    handles, labels = ax.get_legend_handles_labels()
    colours = {label: handle.get_color() for handle, label in zip(handles, labels)}
    for label, sparsity in sparsities.items():
        if not np.isnan(sparsity):
            ax.axvline(100.0 * (1.0 - sparsity), color=colours.get(label, "0.3"),
                       linestyle=linestyle, lw=1.2, zorder=1)


def train_test_figure(frame: pd.DataFrame, hue: str, phases: CurveSummary | None = None,
                      **kwargs):
    """The standard two panels: training accuracy (noisy labels) and test accuracy against
    remaining weights, one line per ``hue``; the phases of ``phases`` shaded on the right.
    ``kwargs`` go to :func:`curves` (``palette``, ``hue_order``)."""
    fig, axes = figure(1, 2)
    curves(axes[0, 0], frame, "train_acc", hue=hue, **kwargs)
    axes[0, 0].set_title("training accuracy (noisy labels)")
    curves(axes[0, 1], frame, "test_acc", hue=hue, **kwargs)
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
