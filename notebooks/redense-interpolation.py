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
# # From the sparse solution to its re-dense solution
#
# **The paper's analysis** (He et al. 2022): after a sparse level is trained, let the
# pruned weights grow back from zero and train on ("re-dense"), then walk the straight
# line from the sparse solution ($\alpha = 0$) to the re-dense one ($\alpha = 1$). The
# loss along that line shows whether re-dense training stays in the sparse solution's
# basin (no barrier) or leaves it, and whether giving the capacity back brings the
# overfitting of the dense network back with it.
#
# **Our reproduction** takes the seed-0 lottery run of the common experiment and, for a
# few pruned levels (by default the worst point, the sweet spot and the sparsest level of
# the test curve), trains a re-dense run: one level of the same recipe from that level's
# trained weights with every weight free, stored in the run store like any run
# (`redense_level` in the config). On the path every weight, bias and BatchNorm entry is
# interpolated; the barrier is the largest rise of the loss above the straight line
# between the two ends (`landscape.barrier_height`, read off every path by
# `landscape.barrier_table`).

# %% tags=["parameters", "remove-cell"]
profile = "quick"
experiment = {"train_size": 4000, "test_size": 1000, "levels": 20}
seed = 0
levels_shown = "auto"
alphas = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]
compute_missing = True

# %% tags=["remove-input"]
from sddlib.book import figures, profiles

figures.use_profile("redense-interpolation", globals())

# %% tags=["hide-input"]
from sddlib.analysis import landscape
from sddlib.book import figures, plots
from sddlib.config.project import load_settings

frame, run, summary = figures.lottery_run(experiment, seed, compute_missing)
if levels_shown == "auto":
    levels_shown = sorted({summary.worst_level, summary.best_level, summary.last_level}
                          - {-1, 0})
paths = landscape.redense_paths(run, profiles.store(), levels_shown, alphas,
                                data_dir=load_settings().data_dir)
barriers = landscape.barrier_table(paths)
test = barriers[barriers.split == "test"].set_index("level")
train = barriers[barriers.split == "train"].set_index("level")
sweet = summary.best_level if summary.best_level in test.index else test.index[0]
figures.glue_summary(summary)
figures.glue("levels_shown", ", ".join(str(level) for level in levels_shown))
figures.glue("sweet_level", int(sweet))
figures.glue("sweet_sparsity", float(test.sparsity[sweet]))
figures.glue("sweet_train_barrier", float(train.barrier[sweet]))
figures.glue("sweet_test_barrier", float(test.barrier[sweet]))
figures.glue("sweet_sparse_acc", float(test.sparse_acc[sweet]))
figures.glue("sweet_redense_acc", float(test.redense_acc[sweet]))
figures.glue("max_train_barrier", float(train.barrier.max()))
figures.glue("max_barrier_level", int(train.barrier.idxmax()))
figures.glue("mean_redense_gain", 100 * float((test.redense_acc - test.sparse_acc).mean()))

figures.glue("fig_redense", plots.redense_figure(paths))
figures.glue("barrier_table", figures.barrier_table(barriers))

# %% [markdown]
# ```{glue:figure} fig_redense
# :name: fig-redense-interpolation
#
# Loss on the noisy training labels (top left), test loss (top right) and test accuracy
# (bottom) on the straight line from each level's sparse solution (α = 0) to its re-dense solution
# (α = 1), one line per level, labelled by the share of weights the sparse end keeps.
# ```
#
# **Measured.** Levels shown: {glue:text}`levels_shown`. At the sweet spot (level
# {glue:text}`sweet_level`, {glue:text}`sweet_sparsity:.1%` sparsity) the training-loss
# barrier between the sparse and the re-dense solution is
# {glue:text}`sweet_train_barrier:.3f` and the test-loss barrier
# {glue:text}`sweet_test_barrier:.3f`; test accuracy goes from
# {glue:text}`sweet_sparse_acc:.1%` (sparse) to {glue:text}`sweet_redense_acc:.1%`
# (re-dense). The largest training-loss barrier, {glue:text}`max_train_barrier:.3f`, is at
# level {glue:text}`max_barrier_level`; on average over the levels shown re-dense training
# changes test accuracy by {glue:text}`mean_redense_gain:+.1f` percentage points. Per
# level:
#
# ```{glue:} barrier_table
# ```

# %% [markdown]
# ## Rerun this figure
#
# ```bash
# sddlib figures --only redense-interpolation -p levels_shown=[3,8,12]
# jupyter-book build book/
# ```
#
# Finished runs, the re-dense ones included, are reused from the run store; only new
# re-dense levels are trained.
