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
# # Pruning criteria
#
# **The paper's claim** (He et al. {cite}`he2022sparse`): the interpolation threshold,
# the sparsity beyond which the pruned network can no longer fit (interpolate) its noisy
# training set, comes at *higher* sparsity for magnitude pruning ($|w|$) than for random
# pruning (seeded random scores). Gradient pruning ($|w \cdot \partial L/\partial w|$) is
# the third criterion the paper compares.
#
# **Our reproduction** runs the same iterative pruning with lottery rewinding once per
# criterion and plots mean ± one standard deviation over seeds. We measure the
# interpolation threshold on the *training* curve, as the label-noise page does: the first
# level, after training accuracy peaks, where it falls a fixed margin below that peak
# (`metrics.train_drop_sparsity`), and compare magnitude's with random's seed by seed: the
# claim holds when the interval over seeds of magnitude's drop level minus random's lies
# above 0 (`metrics.paired_judgement`). The worst point of the test curve is listed beside
# it.

# %% tags=["parameters", "remove-cell"]
profile = "quick"
experiment = {"train_size": 4000, "test_size": 1000, "levels": 20}
seeds = [0, 1, 2]
criteria = ["magnitude", "gradient", "random"]
compute_missing = True

# %% tags=["remove-input"]
from sddlib.book import figures

figures.use_profile("pruning-criteria", globals())

# %% tags=["hide-input"]
from sddlib.analysis import metrics
from sddlib.book import figures, pages, plots

drop_threshold = 0.05
variants = pages.page_runs("pruning-criteria", globals())  # its runs, as declared
frame = figures.gather(variants, compute_missing, label="criterion")
table = metrics.summaries(frame, "criterion")
groups = dict(iter(frame.groupby("criterion", sort=False)))
table["train_drop_sparsity"] = [metrics.train_drop_sparsity(groups[name], drop_threshold)
                                for name in table.criterion]
main = criteria[0]
headline = metrics.curve_summary(frame[frame.criterion == main])
figures.glue_summary(headline)
figures.glue("main_criterion", main)
figures.glue("seed_count", len(seeds))
figures.glue("drop_threshold", drop_threshold)
by_criterion = table.set_index("criterion")
figures.glue("drop_by_criterion", figures.sparsity_list(by_criterion.train_drop_sparsity))
figures.glue("worst_by_criterion", figures.sparsity_list(by_criterion.worst_sparsity))
# the claim: magnitude pruning's training accuracy drops at higher sparsity than random's
# judged over seeds: each seed's training-drop level, magnitude minus random, above 0
# (a seed whose curve never drops is left out)
if {"magnitude", "random"} <= set(criteria):
    later = metrics.paired_judgement(
        groups["magnitude"], groups["random"],
        lambda seed: metrics.train_drop_level(seed, drop_threshold), unit="{:.1f} levels",
        words="training-drop level")
    order = later.words()
else:
    later, order = None, metrics.verdict(None, "it needs magnitude and random curves")
figures.claim("verdict", "Magnitude pruning reaches its interpolation threshold (training "
              "accuracy drops) at higher sparsity than random pruning", order,
              {"magnitude − random": later} if later else None)

# %% tags=["hide-input"]
fig = plots.train_test_figure(frame, "criterion", headline)
plots.mark_sparsities(fig.axes[0], dict(zip(table.criterion, table.train_drop_sparsity)))
figures.glue("fig_criteria", fig)
headers = {"criterion": "criterion", "train_drop_sparsity": "training drop (sparsity)",
           "dense_acc": "dense", "worst_acc": "worst", "worst_sparsity": "worst (sparsity)",
           "best_acc": "best", "best_sparsity": "best (sparsity)", "last_acc": "last",
           "last_sparsity": "last (sparsity)", "seeds": "seeds"}
figures.glue("summary_table", figures.percent_table(table, headers,
                                                    plain=["criterion", "seeds"]))

# %% [markdown]
# ```{glue:figure} fig_criteria
# :name: fig-pruning-criteria
#
# Training accuracy on the noisy labels (left) and test accuracy (right) against the
# share of weights left, one curve per pruning criterion, mean ± std over the profile's
# seeds. Dashed lines (left) mark where each criterion's training accuracy drops: its
# interpolation threshold. The shading marks the phases of the first criterion's test
# curve (light, critical, sweet spot, collapsed; names from Quétu & Tartaglione
# {cite}`quetu2024dsd2`, boundaries from `metrics.phases`). The claim is about where the
# training curves start to fall: left (denser) or right (sparser).
# ```
#
# **Measured.** Training accuracy first falls more than {glue:text}`drop_threshold:.2f`
# below its peak at sparsity {glue:text}`drop_by_criterion` (means over seeds,
# {glue:text}`seed_count` in this profile; "none" where it never falls that far), so the
# claim that magnitude pruning reaches its interpolation threshold at higher sparsity than
# random pruning {glue:text}`verdict`. The test curves bottom out at sparsity
# {glue:text}`worst_by_criterion`. With {glue:text}`main_criterion` pruning the dense
# network reaches {glue:text}`dense_acc:.1%` test accuracy; pruning {glue:text}`path`, and
# the sparsest network ({glue:text}`last_sparsity:.2%` sparsity) ends at
# {glue:text}`last_acc:.1%`. The landmarks of every criterion (test accuracy unless the
# column says sparsity):
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
