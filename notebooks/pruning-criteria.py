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
# # Pruning criteria
#
# **The paper's claim** (He et al. 2022): the interpolation threshold, the critical point
# where the sparse network can no longer memorise the noisy labels and test accuracy stops
# falling, comes at *higher* sparsity for magnitude pruning ($|w|$) than for random
# pruning (seeded random scores). Gradient pruning ($|w \cdot \partial L/\partial w|$) is
# the third criterion the paper compares.
#
# **Our reproduction** runs the same iterative pruning with lottery rewinding once per
# criterion and plots mean ± one standard deviation over seeds. We read the interpolation
# threshold off each test curve as its worst point before the sweet spot.

# %% tags=["parameters"]
profile = "quick"
experiment = {"train_size": 4000, "test_size": 1000, "levels": 20}
seeds = [0]
criteria = ["magnitude", "gradient", "random"]
compute_missing = True

# %% tags=["hide-input"]
from sddlib import figures, metrics, plots

variants = figures.configs(experiment, seeds, {name: {"criterion": name} for name in criteria})
frame = figures.gather(variants, compute_missing, label="criterion")
table = metrics.summaries(frame, "criterion")
main = criteria[0]
headline = metrics.curve_summary(frame[frame.criterion == main])
figures.glue_summary(headline)
figures.glue("main_criterion", main)
figures.glue("seed_count", len(seeds))
figures.glue("worst_by_criterion", ", ".join(
    f"{name} {sparsity:.1%}" for name, sparsity in zip(table.criterion, table.worst_sparsity)))

worst = table.set_index("criterion").worst_sparsity.reindex(["magnitude", "random"])
if worst.isna().any():
    verdict = ("cannot be judged here: it needs magnitude and random curves that both have "
               "a worst point before their sweet spot")
else:
    verdict = "holds" if worst["magnitude"] > worst["random"] else "does not hold here"
figures.glue("verdict", verdict)

figures.glue("fig_criteria", plots.train_test_figure(frame, "criterion", headline))
figures.glue("summary_table", figures.summary_table(table, "criterion"))

# %% [markdown]
# ```{glue:figure} fig_criteria
# :name: fig-pruning-criteria
#
# Training (left) and test (right) accuracy against the share of weights left, one curve
# per pruning criterion, mean ± std over the profile's seeds. The shading marks the phases
# of the first criterion's test curve: light, critical, sweet spot, collapse. The claim is
# about where each test curve bottoms out: left (denser) or right (sparser).
# ```
#
# **Measured.** With {glue:text}`main_criterion` pruning the dense network reaches
# {glue:text}`dense_acc:.1%` test accuracy. The worst pruned point before the sweet spot
# is {glue:text}`worst_acc:.1%` at {glue:text}`worst_sparsity:.1%` sparsity, the best
# {glue:text}`best_acc:.1%` at {glue:text}`best_sparsity:.1%`, and the sparsest network
# ({glue:text}`last_sparsity:.2%` sparsity) ends at {glue:text}`last_acc:.1%` (means over
# seeds, {glue:text}`seed_count` in this profile).
# The worst point of each criterion lies at sparsity {glue:text}`worst_by_criterion`, so
# the claim that magnitude pruning reaches its interpolation threshold at higher sparsity
# than random pruning {glue:text}`verdict`. The landmarks of every criterion:
#
# ```{glue:} summary_table
# ```

# %% [markdown]
# ## Rerun this figure
#
# ```bash
# sddlib figures --only pruning-criteria -p seeds=[0,1,2] -p 'criteria=[magnitude,random]'
# jupyter-book build book/
# ```
#
# Finished runs are reused from the run store; only new configurations are trained.
