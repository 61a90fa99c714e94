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
# # Reproduction status
#
# This page sets our measured landmarks beside the paper's. The paper's numbers are read
# off its Fig. 1 (20% random-label noise, magnitude pruning, lottery rewinding) and kept in
# `data/reference/he2022_fig1.csv`; ours come from the same runs as
# {doc}`sdd-datasets`. A dataset that stands in for one of the paper's (`mnist-5k`, 4,000
# of the real MNIST digits, trained with the paper's LeNet-300-100 recipe) is compared
# with that row of the paper; where the profile runs a dataset the paper did not (the
# `quick` profile's MNIST-1D on a laptop CPU), the absolute numbers cannot be compared, and
# we compare the *shape* of the curve instead: how deep the dip below the dense model is,
# how far the sweet spot climbs above the dip, and where.

# %% tags=["parameters", "remove-cell"]
profile = "quick"
experiment = {"train_size": 4000, "test_size": 1000, "levels": 20}
seeds = [0, 1, 2]
datasets = {"mnist-5k": {"model": "mlp", "widths": [300, 100], "optimizer": "sgd", "lr": 0.1,
                         "momentum": 0.0, "epochs": 40, "levels": 35, "train_size": None,
                         "test_size": None},
            "mnist1d": {},
            "digits": {"model": "mlp", "epochs": 40, "levels": 25, "train_size": None,
                       "test_size": None}}
compute_missing = True

# %% tags=["remove-input"]
from sddlib.book import figures, profiles

figures.use_profile("reproduction-status", globals())

# %% tags=["hide-input"]
import pandas as pd

from sddlib.analysis import metrics
from sddlib.book import figures, pages, plots
from sddlib.data import datasets as data

paper = pd.read_csv(figures.reference_path("he2022_fig1.csv"), comment="#")
paper["data"] = paper["dataset"]
variants = pages.page_runs("reproduction-status", globals())  # its runs, as declared
frame = figures.gather(variants, compute_missing, label="data")
ours = metrics.summaries(frame, "data")
store = profiles.store()
ours["training images"] = ours["data"].map(
    {name: store.find(runs[0]).meta()["data"]["train_size"] for name, runs in variants.items()})
ours["dataset"] = ours["data"].map(lambda name: data.STANDS_IN_FOR.get(name, name))
comparison = metrics.compare_with_reference(ours, paper, key="dataset",
                                            carry=("data", "training images"))

shared = comparison[comparison.source.eq("both")]
figures.glue("shared_count", len(shared))
figures.glue("paper_count", len(paper))
figures.glue("ours_three_phases", int(ours.three_phases.sum()))
figures.glue("ours_count", len(ours))
figures.glue("comparison_table", figures.comparison_table(comparison))
figures.glue("stand_in_text", figures.stand_in_text(comparison))

fig, axes = plots.figure(1, 2)
plots.landmark_shapes(axes[0, 0], axes[0, 1], comparison)
fig.tight_layout()
figures.glue("fig_status", fig)

# %% [markdown]
# **Measured.** Of the paper's {glue:text}`paper_count` Fig. 1 settings, this profile ran
# {glue:text}`shared_count` on the same dataset; {glue:text}`ours_three_phases` of our
# {glue:text}`ours_count` curves show all three phases (a dip of at least 1 point below the
# dense model, a rise of at least 3 points above the dip, a fall of at least 3 points after
# the sweet spot).
#
# ```{glue:} comparison_table
# ```
#
# ```{glue:figure} fig_status
# :name: fig-status
#
# The shape of each curve, ours and the paper's: the dip (dense minus worst test accuracy)
# and the rise (best minus worst), left; the sparsity of the worst and best points, right.
# ```
#
# **Where we differ, and why.** {glue:text}`stand_in_text`. The model, recipe and noise
# are the paper's; the training set is not. With fewer samples (and so fewer noisy labels)
# to memorise, a network needs fewer weights to interpolate them, which moves the
# landmarks to other sparsities, and fewer clean samples mean lower accuracies overall;
# the paper's 200 epochs a level are 40 here. MNIST-1D is a harder, smaller problem than
# MNIST (1-D signals of 40 values, a few thousand samples) and its networks are small and
# trained for minutes, not hours: its absolute accuracies are not comparable with the
# paper's at all, only its shape. The `paper` profile runs the paper's datasets and
# recipes on a GPU and fills the rows above from its own runs.

# %% [markdown]
# ## Rerun this page
#
# ```bash
# sddlib figures --only reproduction-status --only sdd-datasets -p seeds=[0,1,2]
# jupyter-book build book/
# ```
