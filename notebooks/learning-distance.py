# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Learning distance
#
# **The paper's claim** (He et al. 2022): the learning distance, how far training moves
# the weights a pruning level can train, rises while test accuracy falls (its highest
# point at the lowest accuracy) and falls while test accuracy rises; in the last phase
# "it is difficult for the learning distance to rise again due to too few trainable
# parameters".
#
# **The quantity.** For a level with mask $m$ whose training starts from $w_\text{start}$
# and ends at $w_\text{final}$, the distance is $\|m \odot (w_\text{final} -
# w_\text{start})\|_2$: $w_\text{start}$ is where the retraining mode starts the level
# (for lottery rewinding to iteration 0, the original init with the mask applied), and
# pruned weights, zero in both, add nothing (`sddlib.engine.distance`). It is taken over every
# conv and linear weight tensor; biases and BatchNorm parameters are left out (the paper
# does not say; they are never pruned). An earlier version of this page measured
# $\|w_\text{init} - w_\text{final}\|_2$ with pruned weights counted as zero: that tends to
# $\|w_\text{init}\|_2$ as sparsity grows, so it measured sparsity rather than learning.
#
# **Our reproduction** takes the lottery runs of each dataset of the profile, the first
# being the paper's own model where the profile has it (on the `quick` profile,
# LeNet-300-100 trained with SGD on `mnist-5k`, 4,000 real MNIST digits). We report where
# the seed-averaged distance peaks beside where test accuracy is lowest, how low it ends,
# and Spearman's rank correlation between distance and test accuracy over the levels from
# dense to the best pruned level (`metrics.distance_peak`,
# `metrics.distance_accuracy_correlation`; the claim judged by `metrics.distance_claims`).

# %% tags=["parameters", "remove-cell"]
profile = "quick"
experiment = {"train_size": 4000, "test_size": 1000, "levels": 20}
seeds = [0, 1, 2]
datasets = {"mnist-5k": {"model": "mlp", "widths": [300, 100], "optimizer": "sgd", "lr": 0.1,
                         "momentum": 0.0, "epochs": 40, "levels": 35, "train_size": None,
                         "test_size": None},
            "mnist1d": {}}
compute_missing = True

# %% tags=["remove-input"]
from sddlib.book import figures, profiles

figures.use_profile("learning-distance", globals())

# %% tags=["hide-input"]
import math

from sddlib.analysis import metrics
from sddlib.book import figures, pages, plots
from sddlib.engine import checkpoints

variants = pages.page_runs("learning-distance", globals())  # lottery runs per dataset
frame = figures.gather(variants, compute_missing, label="dataset_name")
# the claim needs both an interior peak and a distance moving against test accuracy
claims = metrics.distance_claims({name: frame[frame.dataset_name == name]
                                  for name in datasets})
claims.insert(1, "optimizer", [variants[name][0].optimizer for name in datasets])

main = next(iter(datasets))
headline = metrics.curve_summary(frame[frame.dataset_name == main])
first = claims.iloc[0]
figures.glue_summary(headline)
figures.glue("main_dataset", main)
figures.glue("seed_count", len(seeds))
for key in ("peak_sparsity", "peak_distance", "last_distance", "last_over_peak", "rho"):
    figures.glue(key, float(first[key]))
figures.glue("correlation_levels", int(first["rho_levels"]))
# judged over seeds: each seed's own correlation below 0 at the interval, and an interior
# peak of the seed-averaged distance (at an end of the curve the claim does not hold)
seed_rho = metrics.judge(
    metrics.seed_statistic(frame[frame.dataset_name == main],
                           lambda seed: metrics.distance_accuracy_correlation(seed).rho),
    above=False, unit="{:+.2f}", bounds=(-1.0, 1.0),
    statistic="rank correlation of distance and test accuracy up to the sweet spot, per seed")
figures.glue("seed_rho", seed_rho.interval())
figures.claim("verdict", f"The learning distance peaks at an interior level near the test "
              f"minimum and falls with test accuracy ({main})",
              seed_rho.words() if first["interior_peak"] else
              metrics.verdict(False, "the distance peaks at an end of the curve"),
              {f"{main}: correlation": seed_rho})
figures.glue("peak_where", "an interior level" if first["interior_peak"] else
             "an end of the curve")
figures.glue("levels_apart", "no dip to compare with" if math.isnan(first["levels_apart"])
             else f"{int(first['levels_apart'])} pruning level(s) from the test minimum")
figures.glue("claims_table", figures.distance_claims_table(claims))
figures.glue("fig_distance", plots.distance_figure(frame, datasets, by="dataset_name"))

# %% [markdown]
# ```{glue:figure} fig_distance
# :name: fig-learning-distance
#
# Learning distance (left) and test accuracy (right) of the lottery runs against the share
# of weights left, one row per dataset, mean ± std over the profile's seeds. Both panels
# carry the phases of that row's test curve (light, critical, sweet spot, collapsed; names
# from Quétu & Tartaglione {cite}`quetu2024dsd2`, boundaries from `metrics.phases`): the
# claim is that the left curve climbs where the right one falls, and drops where it
# recovers.
# ```
#
# **Measured.** On {glue:text}`main_dataset`, test accuracy is {glue:text}`dense_acc:.1%`
# dense, and pruning {glue:text}`path` (means over {glue:text}`seed_count` seeds). The
# learning distance peaks at {glue:text}`peak_where`, {glue:text}`peak_sparsity:.1%`
# sparsity ({glue:text}`levels_apart`), at {glue:text}`peak_distance:.2f`, and ends at
# {glue:text}`last_distance:.2f`, {glue:text}`last_over_peak:.0%` of its peak. Over the
# {glue:text}`correlation_levels` levels from dense to the sweet spot, Spearman's
# correlation between learning distance and test accuracy is {glue:text}`rho:.2f` on the
# seed-averaged curves; each seed's own, its mean and interval: {glue:text}`seed_rho`. The
# claim needs both an interior peak and a correlation below 0 at the interval over seeds:
# on {glue:text}`main_dataset` it {glue:text}`verdict`. Every dataset of the profile, with the
# optimiser it trained with:
#
# ```{glue:} claims_table
# ```

# %% [markdown]
# ## Layer by layer
#
# The same distance split by layer for the first seed's run on the first dataset, read
# back from its stored checkpoints (`checkpoints.level_distances`): from each level's
# start and, when the run rewinds to a later iteration than 0, from that rewind point too
# (dashed; a lottery run rewinding to iteration 0 starts every level at the init, so the
# two coincide and only one is drawn).

# %% tags=["hide-input"]
import pandas as pd
import seaborn as sns

run = profiles.store().find(variants[main][0])
origins = ["start", "rewind"] if run.file("checkpoints", "rewind.pt").exists() else ["start"]
layers = pd.concat([checkpoints.level_distances(run, origin=origin, per_layer=True)
                    .assign(origin=origin) for origin in origins], ignore_index=True)
from_start = layers[layers.origin == "start"].copy()
from_start["share"] = from_start.distance ** 2 / from_start.groupby("level").distance.transform(
    lambda d: (d ** 2).sum())
layer_level = headline.worst_level if headline.worst_level >= 0 else headline.best_level
at_level = from_start[from_start.level == layer_level].set_index("layer").share
figures.glue("layer_level", int(layer_level))
figures.glue("largest_layer", str(at_level.idxmax()))
figures.glue("largest_share", float(at_level.max()))
figures.glue("layer_count", int(from_start.layer.nunique()))

fig, axes = plots.figure(1, 2)
sns.lineplot(data=plots.with_remaining(layers), x="remaining", y="distance", hue="layer",
             style="origin" if len(origins) > 1 else None, marker="o", markersize=3,
             ax=axes[0, 0])
plots.sparsity_axis(axes[0, 0])
axes[0, 0].set(ylabel="learning distance", title="per layer")
sns.lineplot(data=plots.with_remaining(from_start), x="remaining", y="share", hue="layer",
             marker="o", markersize=3, ax=axes[0, 1])
plots.sparsity_axis(axes[0, 1])
axes[0, 1].set(ylabel="share of the squared distance", title="each layer's share")
for ax in axes.flat:
    ax.legend(fontsize=7)
fig.tight_layout()
figures.glue("fig_distance_layers", fig)

# %% [markdown]
# ```{glue:figure} fig_distance_layers
# :name: fig-learning-distance-layers
#
# Left: learning distance of each conv and linear layer of the first seed's lottery run
# against the share of weights left. Right: each layer's share of the squared total
# distance from the level's start.
# ```
#
# **Measured.** Of the {glue:text}`layer_count` layers, {glue:text}`largest_layer` moves
# the most at level {glue:text}`layer_level` (the worst point when there is one, else the
# sweet spot): {glue:text}`largest_share:.0%` of the squared distance.

# %% [markdown]
# ## Rerun this figure
#
# ```bash
# sddlib figures --only learning-distance -p seeds=[0,1,2] -p experiment.noise=0.4
# jupyter-book build book/
# ```
#
# Finished runs are reused from the run store; only new configurations are trained.
