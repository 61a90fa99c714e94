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

from sddlib.analysis import metrics
from sddlib.analysis.metrics import PHASES, CurveSummary

PHASE_COLOURS = dict(zip(PHASES, ["#dbe9f6", "#f8d9d2", "#dcefd9", "#e8e8e8"]))

# axis labels in words for the tidy frame's columns
LABELS = {"train_acc": "training accuracy", "test_acc": "test accuracy",
          "train_acc_clean": "training accuracy (true labels)",
          "train_acc_corrupted": "agreement with noisy labels",
          "learning_distance": "learning distance"}


# legend titles in words for the columns the curves are split by
LEGEND_TITLES = {"dataset_name": "dataset", "retrain": "retraining mode",
                 "criterion": "pruning criterion", "noise": "label noise",
                 "weight_decay": "weight decay (L2)", "distill_from": "teacher",
                 "model_width": "width", "depth": "depth"}


def legend_title(column: str) -> str:
    """The words a legend shows for the column its lines are split by."""
    return LEGEND_TITLES.get(column, column.replace("_", " "))


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
    if hue is not None and ax.get_legend() is not None:
        ax.get_legend().set_title(legend_title(hue))
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


def entropy_figure(frame: pd.DataFrame, hue: str, labels, summaries: dict,
                   stops: dict | None = None):
    """Per label (one panel each, two a row): test accuracy (left axis) and the network's
    activation entropy (right axis, dashed) against the weights left, the phases of the
    test curve shaded (``summaries``: label -> :class:`CurveSummary`), and where the
    early-stop rule keeps a level (``stops``: label -> sparsity; a dotted line)."""
    labels = list(labels)
    rows = (len(labels) + 1) // 2
    fig, axes = figure(rows, 2)
    for ax, label in zip(axes.flat, labels):
        part = frame[frame[hue] == label]
        curves(ax, part, "test_acc", label="test accuracy", color="C0")
        mark_phases(ax, summaries[label])
        twin = ax.twinx()
        data = with_remaining(part)
        sns.lineplot(data=data, x="remaining", y="activation_entropy", errorbar="sd",
                     ax=twin, color="C3", linestyle="--", label="activation entropy")
        twin.set_ylabel("activation entropy (bits)")  # shares ax's (inverted, log) x axis
        if stops and not np.isnan(stops.get(label, np.nan)):
            ax.axvline(100.0 * (1.0 - stops[label]), color="0.2", linestyle=":", lw=1.5,
                       label="early stop keeps")
        handles = ax.get_legend_handles_labels()
        twin_handles = twin.get_legend_handles_labels()
        if twin.get_legend() is not None:
            twin.get_legend().remove()
        ax.legend(handles[0] + twin_handles[0], handles[1] + twin_handles[1], fontsize=8,
                  loc="lower left")
        ax.set_title(label)
    for ax in list(axes.flat)[len(labels):]:
        ax.set_visible(False)
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


def paired_figure(frame: pd.DataFrame, hue: str, differences: dict[str, pd.DataFrame],
                  label: str, drops: dict | None = None, phases: CurveSummary | None = None,
                  legend_title: str | None = None):
    """Two variants side by side and their paired difference.

    Top: training accuracy (noisy labels; a dashed line at each variant's ``drops``
    sparsity) and test accuracy (the phases of ``phases`` shaded), one line per ``hue``.
    Bottom: one panel per entry of ``differences`` (``"training"`` or ``"test"`` ->
    :func:`metrics.paired_difference` frame), mean +- std over seeds, named ``label``
    (e.g. "lottery − reinit"), with a line at zero.
    """
    fig, axes = figure(2, 2)
    curves(axes[0, 0], frame, "train_acc", hue=hue)
    if drops:
        mark_sparsities(axes[0, 0], drops)
    axes[0, 0].set_title("training accuracy (noisy labels)")
    curves(axes[0, 1], frame, "test_acc", hue=hue)
    if legend_title:  # else curves' title for the column, in words
        for ax in axes[0]:
            ax.get_legend().set_title(legend_title)
    if phases is not None:
        mark_phases(axes[0, 1], phases)
    axes[0, 1].set_title("test accuracy")
    for ax, (what, difference) in zip(axes[1], differences.items()):
        curves(ax, difference, "difference", label=label)
        ax.axhline(0.0, color="0.3", lw=0.8)
        ax.set_ylabel(f"{what} accuracy difference")
        ax.set_title(f"{what} accuracy, {label}, paired by seed")
    fig.tight_layout()
    return fig


def distance_figure(frame: pd.DataFrame, names, by: str = "dataset_name"):
    """Learning distance (left) and test accuracy (right) against remaining weights, one
    row per name of ``names`` (values of column ``by``), both panels shaded with the
    phases of that row's test curve."""
    names = list(names)
    fig, axes = figure(len(names), 2, width=11.0, height=3.8)
    for row, name in enumerate(names):
        curve = frame[frame[by] == name]
        summary = metrics.curve_summary(curve)
        for ax, y in zip(axes[row], ("learning_distance", "test_acc")):
            curves(ax, curve, y)
            mark_phases(ax, summary)
            ax.set(ylabel=LABELS[y], title=f"{name}: {LABELS[y]}")
    fig.tight_layout()
    return fig


def lines_by_level(ax, table: pd.DataFrame, split: str, y: str, title: str, xlabel: str):
    """``y`` along a path in weight space (column ``alpha``), one line per level of a
    :func:`landscape.direction_curves` or :func:`landscape.redense_paths` table (rows of
    ``split`` only), each labelled by the share of weights its level keeps."""
    data = table[table.split == split].copy()
    data["remaining"] = [f"{100 * (1 - s):.3g}% left" for s in data.sparsity]
    sns.lineplot(data=data, x="alpha", y=y, hue="remaining", marker="o", markersize=3, ax=ax)
    ax.set(title=title, xlabel=xlabel)
    ax.legend(fontsize=8, title="level (weights left)", title_fontsize=8)
    return ax


def flatness_figure(directions: pd.DataFrame, frame: pd.DataFrame, sharpness: pd.DataFrame,
                    summary: CurveSummary):
    """The minima-flatness page's six panels, two a row. Top: training and test loss along
    a filter-normalised direction (``directions``, :func:`landscape.direction_curves`).
    Middle: the run's test accuracy (``frame``) with its phases, and test accuracy along
    the direction. Bottom: the top Hessian eigenvalue and trace per level (``sharpness``,
    :func:`landscape.sharpness_by_level`; log scale when all are positive)."""
    # two panels a row: a book page is about 7 inches wide, and three across shrink the
    # labels below what can be read at 100%
    fig, axes = figure(3, 2, width=10.0, height=3.4)
    xlabel = "step along the filter-normalised direction"
    for ax, (split, y, title) in ((axes[0, 0], ("train", "loss", "training loss (noisy labels)")),
                                  (axes[0, 1], ("test", "loss", "test loss")),
                                  (axes[1, 1], ("test", "accuracy",
                                                "test accuracy along the direction"))):
        lines_by_level(ax, directions, split, y, title, xlabel)
    curves(axes[1, 0], frame, "test_acc")
    mark_phases(axes[1, 0], summary)
    axes[1, 0].set_title("test accuracy of the run")
    for ax, column, title in ((axes[2, 0], "top_eigenvalue", "top Hessian eigenvalue"),
                              (axes[2, 1], "trace", "Hessian trace (Hutch++)")):
        curves(ax, sharpness, column)
        mark_phases(ax, summary)
        if (sharpness[column] > 0).all():
            ax.set_yscale("log")
        ax.set_title(title)
    fig.tight_layout()
    return fig


def redense_figure(paths: pd.DataFrame):
    """Training loss, test loss and test accuracy on the straight line from each level's
    sparse solution (alpha 0) to its re-dense one (alpha 1), one line per level
    (``paths``: :func:`landscape.redense_paths`)."""
    fig, axes = figure(2, 2, width=10.0, height=3.4)  # two a row, as flatness_figure
    xlabel = "α (0: sparse solution, 1: re-dense solution)"
    for ax, (split, y, title) in zip(axes.flat, [("train", "loss", "training loss (noisy labels)"),
                                                 ("test", "loss", "test loss"),
                                                 ("test", "accuracy", "test accuracy")]):
        lines_by_level(ax, paths, split, y, title, xlabel)
    fig.delaxes(axes[1, 1])
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------- theory
# colour and line style of each least-squares model (sddlib.analysis.theory's methods)
METHOD_STYLE = {"dense": ("0.2", "-"), "magnitude": ("C0", "-"), "magnitude+refit": ("C0", "--"),
                "random": ("C3", "-"), "random+refit": ("C3", "--"), "oracle": ("C2", ":"),
                "small": ("C2", ":")}
STRUCTURE_NAMES = {"equicorrelated": "equicorrelated", "ar1": "AR(1)"}


def risk_panel(ax, frame: pd.DataFrame, title: str, analytic: pd.DataFrame | None = None,
               mark: float | None = None):
    """Test risk against p/n (log-log), one line per method of a ``theory.simulate_*``
    frame with a band of ±2 standard errors; ``analytic`` curves
    (``theory.predict_linear_isotropic``) as circles; a grey line at the interpolation
    threshold p = n and, at ``mark`` (e.g. s/n, where the oracle lives), a dotted green one.
    """
    for method, group in frame.groupby("method", sort=False):
        colour, style = METHOD_STYLE[method]
        ax.plot(group.p_over_n, group.risk_mean, style, color=colour, label=method)
        sem = group.risk_std / np.sqrt(group.trials)
        ax.fill_between(group.p_over_n, group.risk_mean - 2 * sem, group.risk_mean + 2 * sem,
                        color=colour, alpha=0.15, lw=0)
    if analytic is not None:
        for method, group in analytic.groupby("method", sort=False):
            ax.plot(group.p_over_n, group.risk, "o", ms=3, mfc="none",
                    color=METHOD_STYLE[method][0], label=f"{method} (analytic)")
    ax.axvline(1.0, color="0.6", lw=0.8)
    if mark is not None:
        ax.axvline(mark, color="C2", lw=0.8, ls=":")
    ax.set(xscale="log", yscale="log", xlabel="p / n (model size over samples)",
           ylabel="test risk", title=title)
    ax.legend(fontsize=8, ncol=2)
    return ax


def risk_figure(*panels: dict, width: float = 10.0, height: float = 4.2):
    """One :func:`risk_panel` per entry of ``panels`` (its keyword arguments: ``frame``,
    ``title``, optionally ``analytic`` and ``mark``), two a row, left to right."""
    rows = (len(panels) + 1) // 2
    fig, axes = figure(rows, 2 if len(panels) > 1 else 1, width=width, height=height)
    for ax, panel in zip(axes.flat, panels):
        risk_panel(ax, **panel)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def refit_benefit_figure(benefit: pd.DataFrame, structures):
    """The benefit of refitting against the feature correlation, one panel per structure
    and one line per p/n, with bars of ±2 standard errors (``benefit``:
    ``theory.mean_refit_benefit``); above the grey line at 0 refitting helps."""
    structures = list(structures)
    fig, axes = figure(1, len(structures), width=11, height=4)
    for ax, structure in zip(axes[0], structures):
        for index, (ratio, group) in enumerate(
                benefit[benefit.structure == structure].groupby("p_over_n")):
            ax.errorbar(group.correlation, group.benefit, yerr=2 * group.benefit_se,
                        marker="o", ms=4, capsize=3, color=f"C{index}", label=f"p/n = {ratio:g}")
        ax.axhline(0.0, color="0.6", lw=0.8)
        ax.set(xlabel="feature correlation rho", ylabel="risk without refit - risk with refit",
               title=f"{STRUCTURE_NAMES.get(structure, structure)} features")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
