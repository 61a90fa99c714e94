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
# # Winning tickets and random reinitialisation
#
# **The paper's claim** (He et al. 2022): training the lottery masks from a *new* random
# initialisation (reinit) instead of rewinding to the original one shifts the sparse
# double descent curve to lower sparsity (worse), but the winning ticket does not always
# win in the double-descent regime: at some sparsities the reinitialised network is as
# good or better.
#
# **Our reproduction** trains, per seed, the lottery run and a reinit run that borrows the
# lottery run's masks level by level, and plots training and test accuracy (mean ± one
# standard deviation over seeds), as the paper's figure does, together with the
# level-by-level difference lottery − reinit of both (paired by seed).

# %% tags=["parameters", "remove-cell"]
profile = "quick"
experiment = {"train_size": 4000, "test_size": 1000, "levels": 20}
seeds = [0, 1, 2]
compute_missing = True

# %% tags=["remove-input"]
from sddlib.book import figures

figures.use_profile("lottery-vs-reinit", globals())

# %% tags=["hide-input"]
from sddlib.analysis import metrics
from sddlib.book import figures, pages, plots

variants = pages.page_runs("lottery-vs-reinit", globals())  # lottery and reinit
frame = figures.gather(variants, compute_missing, label="retrain")
table = metrics.summaries(frame, "retrain")
lottery, reinit = (metrics.curve_summary(frame[frame.retrain == name])
                   for name in ("lottery", "reinit"))
figures.glue_summary(lottery, prefix="lottery_")
figures.glue_summary(reinit, prefix="reinit_")
figures.glue("seed_count", len(seeds))

difference = metrics.paired_difference(frame, "retrain", "lottery", "reinit")
train_difference = metrics.paired_difference(frame, "retrain", "lottery", "reinit",
                                             value="train_acc")
mean_difference = metrics.mean_curve(difference, "difference")
pruned = mean_difference[mean_difference.level > 0]
figures.glue("pruned_levels", len(pruned))
figures.glue("lottery_wins", int((pruned["mean"] > 0).sum()))
figures.glue("mean_difference_points", 100 * float(pruned["mean"].mean()))
# judged over seeds: each seed's sweet-spot level, lottery minus reinit, above 0; only
# where the lottery curve (the control) shows sparse double descent
control = metrics.three_phases_judgement(frame[frame.retrain == "lottery"])
shift = metrics.paired_judgement(frame[frame.retrain == "lottery"],
                                 frame[frame.retrain == "reinit"], "best_level")
judged, why = metrics.control_shows_effect(control, "the lottery curve")
figures.claim("shift_verdict", "Random reinitialisation moves the sweet spot to lower "
              "sparsity than lottery rewinding",
              shift.words() if judged else metrics.verdict(None, why),
              {"lottery (control): smallest phase": control, "lottery − reinit": shift})
drop_threshold = 0.05
train_drops = {name: metrics.train_drop_sparsity(frame[frame.retrain == name], drop_threshold)
               for name in ("lottery", "reinit")}
figures.glue("drop_threshold", drop_threshold)
figures.glue("train_drops", figures.sparsity_list(train_drops))

figures.glue("fig_reinit", plots.paired_figure(
    frame, "retrain", {"training": train_difference, "test": difference}, "lottery − reinit",
    drops=train_drops, phases=lottery, legend_title="retraining"))
figures.glue("summary_table", figures.summary_table(table, "retrain"))

# %% [markdown]
# ```{glue:figure} fig_reinit
# :name: fig-lottery-vs-reinit
#
# Top: training accuracy on the noisy labels (left) and test accuracy (right) of the
# lottery (rewound) and reinitialised networks against the share of weights left, mean ±
# std over the profile's seeds; dashed lines mark where each training curve drops, the
# shading the phases of the lottery test curve (light, critical, sweet spot, collapsed;
# names from Quétu & Tartaglione {cite}`quetu2024dsd2`, boundaries from `metrics.phases`).
# Bottom: lottery minus reinit training (left) and test (right) accuracy at each level,
# mean ± std over seeds; above zero the winning ticket is ahead.
# ```
#
# **Measured.** The lottery curve {glue:text}`lottery_shape`; the reinit curve
# {glue:text}`reinit_shape` (means over seeds, {glue:text}`seed_count` in this profile).
# Read at
# the sweet spot, the claim that reinit shifts the curve to lower sparsity
# {glue:text}`shift_verdict`. The lottery network is better at {glue:text}`lottery_wins`
# of the {glue:text}`pruned_levels` pruned levels, by {glue:text}`mean_difference_points:+.1f`
# percentage points on average over them. Training accuracy first falls more than
# {glue:text}`drop_threshold:.2f` below its peak (`metrics.train_drop_sparsity`), where the
# network stops fitting the noisy labels, at sparsity {glue:text}`train_drops` ("none"
# where it never falls that far). The landmarks of both curves:
#
# ```{glue:} summary_table
# ```

# %% [markdown]
# ## Rerun this figure
#
# ```bash
# sddlib figures --only lottery-vs-reinit -p seeds=[0,1,2] -p experiment.noise=0.4
# jupyter-book build book/
# ```
#
# Finished runs are reused from the run store; only new configurations are trained.
