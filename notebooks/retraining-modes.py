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
# # Retraining modes
#
# **The paper's claim** (He et al. 2022): as sparsity grows under iterative pruning, test
# accuracy first falls (the sparse model still interpolates the noisy labels), then rises
# (it can no longer memorise the noise), then falls again (it forgets useful information).
# The paper checks this under the ways of retraining after each pruning step:
#
# - *lottery*: rewind the surviving weights to the rewind point and train the full schedule;
# - *finetune*: continue from the pruned trained weights at a small constant learning rate
#   (`finetune_lr`; by default a hundredth of the starting rate, the paper's 0.001 after
#   0.1);
# - *lr-rewind*: continue from the pruned trained weights with the full learning-rate
#   schedule;
# - *scratch*: a fresh random initialisation at every level, then the full schedule.
#
# **Our reproduction** runs the same pruning once per mode and plots mean ± one standard
# deviation over seeds; the table gives each curve's landmarks and whether it shows all
# three phases.

# %% tags=["parameters", "remove-cell"]
profile = "quick"
experiment = {"train_size": 4000, "test_size": 1000, "levels": 20}
seeds = [0, 1, 2]
modes = ["lottery", "finetune", "lr-rewind", "scratch"]
compute_missing = True

# %% tags=["remove-input"]
from sddlib.book import figures

figures.use_profile("retraining-modes", globals())

# %% tags=["hide-input"]
from sddlib.analysis import metrics
from sddlib.book import figures, pages, plots

# only lottery reads rewind_iteration; for the other modes it does nothing (and is not part
# of their runs' names)
variants = pages.page_runs("retraining-modes", globals())  # its runs, as declared
frame = figures.gather(variants, compute_missing, label="retrain")
table = metrics.summaries(frame, "retrain")
main = modes[0]
headline = metrics.curve_summary(frame[frame.retrain == main])
figures.glue_summary(headline)
figures.glue("main_mode", main)
figures.glue("seed_count", len(seeds))
figures.glue("mode_count", len(modes))
base = variants[main][0]
figures.glue("start_lr", f"{base.lr:g}")
figures.glue("finetune_rate", f"{base.replace(retrain='finetune').finetune_rate:g}")
figures.glue("schedule", base.schedule)
figures.glue("three_phase_count", int(table.three_phases.sum()))
# judged per mode over seeds: each seed's smallest phase above 0 (metrics.phase_statistics)
judgements = metrics.three_phases_by(frame, "retrain")
figures.claim("modes_claim", "Sparse double descent (fall, rise, fall) appears under each "
              "retraining mode", metrics.verdict_of_judgements(judgements, "mode"), judgements)
figures.glue("best_by_mode", ", ".join(
    f"{mode} {accuracy:.1%} at {sparsity:.1%}"
    for mode, accuracy, sparsity in zip(table.retrain, table.best_acc, table.best_sparsity)))

figures.glue("fig_modes", plots.train_test_figure(frame, "retrain", headline))
figures.glue("summary_table", figures.summary_table(table, "retrain", judgements))

# %% [markdown]
# ```{glue:figure} fig_modes
# :name: fig-retraining-modes
#
# Training (left) and test (right) accuracy against the share of weights left, one curve
# per retraining mode, mean ± std over the profile's seeds. The shading marks the phases
# of the first mode's test curve: light, critical, sweet spot, collapsed (names from
# Quétu & Tartaglione {cite}`quetu2024dsd2`, boundaries from `metrics.phases`).
# ```
#
# **Measured.** With {glue:text}`main_mode` retraining the dense network reaches
# {glue:text}`dense_acc:.1%` test accuracy. Pruning {glue:text}`path`, and the sparsest
# network ({glue:text}`last_sparsity:.2%` sparsity) ends at {glue:text}`last_acc:.1%` (means over
# seeds, {glue:text}`seed_count` in this profile). On this profile lottery, lr-rewind and
# scratch train every level from a learning rate of {glue:text}`start_lr`
# ({glue:text}`schedule` schedule), finetune its pruned levels at a constant
# {glue:text}`finetune_rate`.
# The best test accuracy of each mode (and the sparsity where it is reached):
# {glue:text}`best_by_mode`. {glue:text}`three_phase_count` of the
# {glue:text}`mode_count` modes show all three phases (fall, rise, fall) on their mean curve
# by the thresholds of `metrics.CurveSummary.three_phases`. The claim itself is judged per
# mode over seeds (*over seeds*): each seed's smallest phase, read at the landmarks the
# other seeds place (`metrics.phase_statistics`), must lie above 0 at the interval; it
# {glue:text}`modes_claim`.
#
# ```{glue:} summary_table
# ```

# %% [markdown]
# ## Rerun this figure
#
# ```bash
# sddlib figures --only retraining-modes -p seeds=[0,1,2] -p 'modes=[lottery,finetune]'
# jupyter-book build book/
# ```
#
# Finished runs are reused from the run store; only new configurations are trained.
