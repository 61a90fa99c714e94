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

# %%

# %% [markdown]
# # Minima flatness
#
# **The paper's claim** (He et al. 2022): flatness does not explain sparse double descent.
# Drawn along a filter-normalised random direction (Li et al. 2018), the minima found at
# higher sparsity are *sharper*, also where test accuracy recovers, so "sparser means
# flatter means better" is not what happens.
#
# **Our reproduction** takes the first seed's lottery run of the common experiment and, for a
# few levels (by default dense, the worst point, the sweet spot and the sparsest level,
# read off the test curve), plots the loss on the noisy training labels and on the test
# set along one filter-normalised direction around the solution; the direction is zero on
# pruned weights, biases and BatchNorm (`landscape.filter_normalised_direction`). The
# paper drew no Hessian; we add two numbers per level that need no picture: the top
# eigenvalue of the training-loss Hessian (Lanczos) and its trace (Hutch++), both over the
# weights left after pruning and on a few seeded training batches
# (`landscape.sharpness_by_level`; Hessian-vector products by finite differences of
# gradients, see `landscape.restricted_hessian`). The claim is judged over seeds
# (`metrics.flatness_judgement`): each seed's correlation between the top eigenvalue and
# test accuracy over the rise of its curve, from the worst level to the best (placed by
# the other seeds' mean curve), on a 95% t interval. Flatness explaining the rise would
# make it negative (flatter minima where accuracy rises); the claim holds when the
# interval lies above 0.

# %% tags=["parameters", "remove-cell"]
profile = "quick"
experiment = {"train_size": 4000, "test_size": 1000, "levels": 20}
seeds = [0, 1, 2]
levels_shown = "auto"
alphas = [-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0]
hessian_batches = 2
trace_queries = 30
hessian_method = "finite_difference"
compute_missing = True

# %% tags=["remove-input"]
from sddlib.book import figures

figures.use_profile("minima-flatness", globals())

# %% tags=["hide-input"]
import math

from sddlib.analysis import landscape, metrics
from sddlib.book import figures, plots
from sddlib.config.project import load_settings

every_seed, runs = figures.lottery_runs(experiment, seeds, compute_missing)
seed = seeds[0]  # the figure: the first seed's run
run, frame = runs[seed], every_seed[every_seed.seed == seed]
summary = metrics.curve_summary(frame)
if levels_shown == "auto":
    levels_shown = sorted({0, summary.worst_level, summary.best_level, summary.last_level}
                          - {-1})
data_dir = load_settings().data_dir
curves = landscape.direction_curves(run, levels_shown, alphas, seed=seed, data_dir=data_dir)
by_seed = {s: landscape.sharpness_by_level(runs[s], hessian_batches=hessian_batches,
                                           trace_queries=trace_queries, seed=s,
                                           method=hessian_method, data_dir=data_dir)
           for s in seeds}
sharpness = by_seed[seed]
trend = metrics.sharpness_trend(frame, sharpness)
flatness = metrics.flatness_judgement(every_seed, by_seed)
by_level = sharpness.set_index("level")
figures.glue_summary(summary)
figures.glue("levels_shown", ", ".join(str(level) for level in levels_shown))
figures.glue("hessian_levels", len(sharpness))
figures.glue("dense_eigenvalue", float(by_level.top_eigenvalue[0]))
figures.glue("best_eigenvalue", float(by_level.top_eigenvalue[summary.best_level]))
figures.glue("last_eigenvalue", float(by_level.top_eigenvalue[summary.last_level]))
figures.glue("rho_sparsity", "not defined (fewer than three levels)"
             if math.isnan(trend.rho_sparsity) else f"{trend.rho_sparsity:.2f}")
figures.glue("rho_rise", "not defined (no dip before the sweet spot, or fewer than three "
             "levels over the rise)" if math.isnan(trend.rho_rise) else f"{trend.rho_rise:.2f}")
figures.glue("rise_levels", trend.rise_levels)
figures.glue("seed_shown", seed)
figures.glue("seed_count", len(seeds))
figures.glue("rho_rise_interval", flatness.interval())
figures.claim("flatness_claim", "Flatness does not explain sparse double descent: minima do "
              "not get flatter where test accuracy recovers", flatness.words(),
              {"sharpness ~ test accuracy over the rise": flatness})

figures.glue("fig_flatness", plots.flatness_figure(curves, frame, sharpness, summary))

# %% [markdown]
# ```{glue:figure} fig_flatness
# :name: fig-minima-flatness
#
# Top row: loss on the noisy training labels (left) and on the test set (right) along one
# filter-normalised random direction around the solutions of the levels shown (step 0 is
# the trained network). Middle row: the run's test accuracy against the share of weights
# left, with the phases of the curve (left), and test accuracy along the same direction
# (right). Bottom row: the top eigenvalue (left) and trace (right) of the training-loss
# Hessian over the weights left, per level (log scale when all are positive).
# ```
#
# **Measured.** Levels shown: {glue:text}`levels_shown`. The top Hessian eigenvalue is
# {glue:text}`dense_eigenvalue:.3g` dense, {glue:text}`best_eigenvalue:.3g` at the sweet
# spot ({glue:text}`best_sparsity:.1%` sparsity, test accuracy {glue:text}`best_acc:.1%`)
# and {glue:text}`last_eigenvalue:.3g` at the sparsest level. Over the
# {glue:text}`hessian_levels` levels, Spearman's correlation of the top eigenvalue with
# sparsity is {glue:text}`rho_sparsity` (positive: sharper minima as sparsity grows).
# Over the {glue:text}`rise_levels` levels from the worst point to the sweet spot, where
# test accuracy rises, its correlation with test accuracy is {glue:text}`rho_rise`
# (seed {glue:text}`seed_shown`). Over {glue:text}`seed_count` seeds, each read over its
# own rise, the correlation is {glue:text}`rho_rise_interval` (95% interval): the claim
# that flatness does not explain sparse double descent {glue:text}`flatness_claim`.

# %% [markdown]
# ## Rerun this figure
#
# ```bash
# sddlib figures --only minima-flatness -p levels_shown=[0,5,10] -p trace_queries=60
# jupyter-book build book/
# ```
#
# Finished runs are reused from the run store; the landscape around them is measured
# again.
