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
# # Sparse double descent across datasets
#
# **The paper's claim** (He et al. 2022, Fig. 1): with 20% of the training labels replaced
# by random ones, iterative magnitude pruning with lottery rewinding first *lowers* test
# accuracy (the sparse network still memorises the noisy labels, and overfits worse),
# then *raises* it (it can no longer memorise the noise), then lowers it again (it starts
# to forget what it learnt). Training accuracy falls steadily once the network can no
# longer interpolate the training set.
#
# **Our reproduction** runs the same procedure on every dataset of the profile and plots
# mean ± one standard deviation over seeds.

# %% tags=["parameters", "remove-cell"]
profile = "quick"
experiment = {"train_size": 4000, "test_size": 1000, "levels": 20}
seeds = [0, 1, 2, 3, 4]
datasets = {"mnist-5k": {"model": "mlp", "widths": [300, 100], "optimizer": "sgd", "lr": 0.1,
                         "momentum": 0.0, "epochs": 40, "levels": 35, "train_size": None,
                         "test_size": None},
            "mnist1d": {},
            "digits": {"model": "mlp", "epochs": 40, "levels": 25, "train_size": None,
                       "test_size": None}}
compute_missing = True

# %% tags=["remove-input"]
from sddlib.book import figures

figures.use_profile("sdd-datasets", globals())

# %% tags=["hide-input"]
from sddlib.analysis import metrics
from sddlib.book import figures, pages, plots

variants = pages.page_runs("sdd-datasets", globals())  # its runs, as declared
frame = figures.gather(variants, compute_missing, label="dataset_name")
table = metrics.summaries(frame, "dataset_name")
main = next(iter(datasets))
headline = metrics.curve_summary(frame[frame.dataset_name == main])
figures.glue_summary(headline)
figures.glue("main_dataset", main)
figures.glue("seed_count", len(seeds))
# the claim, per dataset: each seed's smallest phase (dip, rise, fall at the landmarks
# the other seeds place) above 0, on the interval over seeds
judgements = metrics.three_phases_by(frame, "dataset_name")
figures.claim("sdd_claim", "Test accuracy falls, rises and falls again as pruning proceeds "
              "(sparse double descent)", metrics.verdict_of_judgements(judgements, "dataset"),
              judgements)

figures.glue("fig_datasets", plots.train_test_figure(frame, "dataset_name", headline))
figures.glue("summary_table", figures.summary_table(table, "dataset_name", judgements))

# %% [markdown]
# ```{glue:figure} fig_datasets
# :name: fig-datasets
#
# Training (left) and test (right) accuracy against the share of weights left, per
# dataset, mean ± std over the profile's seeds. The shading marks the phases of the
# first dataset's test curve: light, critical, sweet spot, collapsed (names from Quétu &
# Tartaglione {cite}`quetu2024dsd2`, boundaries from `metrics.phases`).
# ```
#
# **Measured.** On {glue:text}`main_dataset` the dense network reaches
# {glue:text}`dense_acc:.1%` test accuracy. Pruning {glue:text}`path`, and the sparsest
# network ({glue:text}`last_sparsity:.2%` sparsity) ends at {glue:text}`last_acc:.1%` (means over
# {glue:text}`seed_count` seeds).
#
# **Judged over seeds.** The claim is judged per dataset on one number per seed: the
# smallest of its dip (dense − worst), rise (best − worst) and fall (best − last), each
# read at the levels where the *other* seeds' mean curve puts the worst, best and last
# points (so a seed's own noise does not pick where it is measured). Sparse double descent
# holds on a dataset when the interval of that number's mean lies above 0. The landmarks
# of every dataset (*three phases*: on the mean curve, a dip of at least 1 point and a rise
# and a fall of at least 3; *over seeds*: the verdict on the interval):
#
# ```{glue:} summary_table
# ```

# %% [markdown]
# ## Rerun this figure
#
# ```bash
# sddlib figures --only sdd-datasets -p seeds=[0,1,2] -p experiment.noise=0.4
# jupyter-book build book/
# ```
#
# Finished runs are reused from the run store; only new configurations are trained.
