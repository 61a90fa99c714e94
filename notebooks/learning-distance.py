# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Learning distance
#
# **The paper's claim** (He et al. 2022): the learning distance $\|w_\text{init} -
# w_\text{final}\|_2$, how far training moves the weights from the original dense
# initialisation (pruned weights counted as 0), rises while test accuracy falls and falls
# while test accuracy rises. Up to the sweet spot, distance and accuracy should therefore
# be negatively correlated.
#
# **Our reproduction** takes the lottery runs of the common experiment. The distance is
# taken over every conv and linear weight tensor; biases and BatchNorm parameters are left
# out (the paper does not say; they are never pruned). We report Spearman's rank
# correlation between the seed-averaged distance and test accuracy over the levels from
# dense to the best pruned level (`metrics.distance_accuracy_correlation`).

# %% tags=["parameters"]
profile = "quick"
experiment = {"train_size": 4000, "test_size": 1000, "levels": 20}
seeds = [0, 1]
compute_missing = True

# %% tags=["hide-input"]
import math

from sddlib import figures, metrics, plots

variants = figures.configs(experiment, seeds, {"lottery": {"retrain": "lottery"}})
frame = figures.gather(variants, compute_missing)
headline = metrics.curve_summary(frame)
correlation = metrics.distance_accuracy_correlation(frame)
figures.glue_summary(headline)
figures.glue("seed_count", len(seeds))
figures.glue("rho", correlation.rho)
figures.glue("correlation_levels", correlation.levels)
if math.isnan(correlation.rho):  # too few levels before the peak, or a flat curve
    verdict = "cannot be judged here"
else:
    verdict = "holds" if correlation.rho < 0 else "does not hold here"
figures.glue("verdict", verdict)

fig, axes = plots.figure(1, 2)
plots.curves(axes[0, 0], frame, "learning_distance")
plots.mark_phases(axes[0, 0], headline)
axes[0, 0].set_ylabel("learning distance")
axes[0, 0].set_title("learning distance from the dense init")
plots.curves(axes[0, 1], frame, "test_acc")
plots.mark_phases(axes[0, 1], headline)
axes[0, 1].set_title("test accuracy")
fig.tight_layout()
figures.glue("fig_distance", fig)

# %% [markdown]
# ```{glue:figure} fig_distance
# :name: fig-learning-distance
#
# Learning distance (left) and test accuracy (right) of the lottery runs against the share
# of weights left, mean ± std over the profile's seeds. Both panels carry the phases of
# the test curve (light, critical, sweet spot, collapse): the claim is that the left curve
# climbs where the right one falls, and drops where it recovers.
# ```
#
# **Measured.** Test accuracy is {glue:text}`dense_acc:.1%` dense,
# {glue:text}`worst_acc:.1%` at its worst pruned point before the sweet spot
# ({glue:text}`worst_sparsity:.1%` sparsity) and {glue:text}`best_acc:.1%` at the sweet
# spot ({glue:text}`best_sparsity:.1%`; means over seeds, {glue:text}`seed_count` in this
# profile). Over the {glue:text}`correlation_levels` levels from dense to the sweet spot,
# Spearman's correlation between learning distance and test
# accuracy is {glue:text}`rho:.2f`, so the expected negative correlation
# {glue:text}`verdict`.

# %% [markdown]
# ## Layer by layer
#
# The same distance split by layer for the first seed's run, read back from its stored
# checkpoints (`metrics.learning_distances`): from the original dense init and, when the
# run rewinds to a later iteration than 0, from that rewind point too (dashed; with
# rewinding to iteration 0 the two coincide and only the init is drawn).

# %% tags=["hide-input"]
import pandas as pd
import seaborn as sns

run = figures.store().find(variants["lottery"][0])
origins = ["init", "rewind"] if run.file("checkpoints", "rewind.pt").exists() else ["init"]
layers = pd.concat([metrics.learning_distances(run, origin=origin, per_layer=True)
                    .assign(origin=origin) for origin in origins], ignore_index=True)
from_init = layers[layers.origin == "init"].copy()
from_init["share"] = from_init.distance ** 2 / from_init.groupby("level").distance.transform(
    lambda d: (d ** 2).sum())
layer_level = headline.worst_level if headline.worst_level >= 0 else headline.best_level
at_level = from_init[from_init.level == layer_level].set_index("layer").share
figures.glue("layer_level", int(layer_level))
figures.glue("largest_layer", str(at_level.idxmax()))
figures.glue("largest_share", float(at_level.max()))
figures.glue("layer_count", int(from_init.layer.nunique()))

fig, axes = plots.figure(1, 2)
sns.lineplot(data=plots.with_remaining(layers), x="remaining", y="distance", hue="layer",
             style="origin" if len(origins) > 1 else None, marker="o", markersize=3,
             ax=axes[0, 0])
plots.sparsity_axis(axes[0, 0])
axes[0, 0].set(ylabel="learning distance", title="per layer")
sns.lineplot(data=plots.with_remaining(from_init), x="remaining", y="share", hue="layer",
             marker="o", markersize=3, ax=axes[0, 1])
plots.sparsity_axis(axes[0, 1])
axes[0, 1].set(ylabel="share of the squared distance", title="each layer's share (from init)")
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
# distance from the init.
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
