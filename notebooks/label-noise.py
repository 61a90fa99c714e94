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
# # Label noise
#
# **The paper's claim** (He et al. 2022): label noise makes sparse double descent visible.
# More label noise moves the start of the training-accuracy drop to lower sparsity and
# needs more pruning to escape overfitting. The paper's noise rates are
# 20%, 40% and 80% "random labels" (a fraction of the training samples gets a label drawn
# uniformly from all classes), beside runs without noise; asymmetric noise flips chosen
# classes into similar ones.
#
# **Our reproduction** runs the same pruning once per noise setting and plots mean ± one
# standard deviation over seeds. The training-accuracy drop starts at the first level,
# after training accuracy peaks, where it falls a fixed margin below that peak
# (`metrics.train_drop_sparsity`); "escaping overfitting" is read as reaching the sweet
# spot, the best test accuracy.

# %% tags=["parameters"]
profile = "quick"
experiment = {"train_size": 4000, "test_size": 1000, "levels": 20}
seeds = [0]
noises = {"clean": {"noise": 0.0}, "random 20%": {"noise": 0.2},
          "random 40%": {"noise": 0.4}, "random 80%": {"noise": 0.8},
          "asymmetric 20%": {"noise": 0.2, "noise_kind": "asymmetric"}}
compute_missing = True

# %% tags=["hide-input"]
import pandas as pd

from sddlib import figures, metrics, plots

drop_threshold = 0.05
variants = figures.configs(experiment, seeds, noises)
frame = figures.gather(variants, compute_missing, label="label noise")
table = metrics.summaries(frame, "label noise").set_index("label noise")
groups = dict(iter(frame.groupby("label noise", sort=False)))
table["train_drop_sparsity"] = [metrics.train_drop_sparsity(groups[label], drop_threshold)
                                for label in table.index]
table = table.join(frame.groupby("label noise")[["noise", "noise_kind"]].first())
random_labels = table[table.noise_kind == "random"].sort_values("noise")


def trend(values, decreasing):
    """Whether a landmark moves the claimed way as the random-label rate grows."""
    if len(values) < 2 or values.isna().any():
        return "cannot be judged here"
    moves = values.is_monotonic_decreasing if decreasing else values.is_monotonic_increasing
    return "holds" if moves else "does not hold here"


figures.glue("drop_threshold", drop_threshold)
figures.glue("seed_count", len(seeds))
figures.glue("drop_by_noise", ", ".join(
    f"{label} {sparsity:.1%}" if pd.notna(sparsity) else f"{label} none"
    for label, sparsity in table.train_drop_sparsity.items()))
figures.glue("best_by_noise", ", ".join(
    f"{label} {sparsity:.1%}" for label, sparsity in table.best_sparsity.items()))
figures.glue("drop_verdict", trend(random_labels.train_drop_sparsity, decreasing=True))
figures.glue("best_verdict", trend(random_labels.best_sparsity, decreasing=False))

figures.glue("fig_noise", plots.train_test_figure(frame, "label noise"))
shown = table.reset_index()[["label noise", "train_drop_sparsity", "dense_acc", "worst_acc",
                             "worst_sparsity", "best_acc", "best_sparsity", "last_acc"]]
figures.glue("noise_table", shown.style.format(
    {c: "{:.1%}" for c in shown.columns[1:]}, na_rep="-").hide(axis="index"))

# %% [markdown]
# ```{glue:figure} fig_noise
# :name: fig-label-noise
#
# Training accuracy on the (noisy) training labels (left) and test accuracy (right) against
# the share of weights left, one curve per noise setting, mean ± std over the profile's
# seeds. The claim is about where the left curves start to fall and where the right ones
# peak.
# ```
#
# **Measured.** Training accuracy first falls more than {glue:text}`drop_threshold:.2f`
# below its peak at sparsity {glue:text}`drop_by_noise` (means over seeds,
# {glue:text}`seed_count` in this profile; "none" where it never falls that far). Over the
# random-label settings, ordered by noise rate, the claim that more noise starts the drop at lower (or
# equal) sparsity {glue:text}`drop_verdict`. The best test accuracy is reached at sparsity
# {glue:text}`best_by_noise`; the claim that more noise needs more (or equal) pruning to
# reach it {glue:text}`best_verdict`. The landmarks of every setting:
#
# ```{glue:} noise_table
# ```

# %% [markdown]
# ## Rerun this figure
#
# ```bash
# sddlib figures --only label-noise -p seeds=[0,1,2] \
#     -p 'noises.pairflip 20%={noise: 0.2, noise_kind: pairflip}'
# jupyter-book build book/
# ```
#
# A dotted `-p noises.LABEL=...` adds a noise setting to the profile's (or changes one).
# Finished runs are reused from the run store; only new configurations are trained.
