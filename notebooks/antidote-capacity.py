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
# # Antidotes: width and depth
#
# **The paper's question** (DSD², Quétu & Tartaglione {cite}`quetu2024dsd2`): does
# distillation from a best-fit sparse teacher dodge sparse double descent whatever the
# model's width and depth? They sweep the width and the depth of a VGG-like network on
# CIFAR-10 with 10%, 20% and 50% of the training labels replaced by a different class.
#
# **Our reproduction** prunes each model size twice, as it is ("plain") and as a student
# of its own plain run's best-fit level (chosen on a validation split held out of the
# training set, as on the {doc}`antidotes` page), and compares the depth of the dip
# (`metrics.dip_depth`: dense accuracy minus the lowest accuracy before the best pruned
# level). The `paper` profile sweeps the VGG-like model's width and depth on CIFAR-10 at
# the three noise rates; the `quick` profile asks the same questions on a laptop: the
# width of the 1-D CNN on MNIST-1D and the depth of the MLP on `mnist-5k`.

# %% tags=["parameters", "remove-cell"]
profile = "quick"
width_experiment = {"dataset": "mnist1d", "model": "cnn1d", "train_size": 4000,
                    "test_size": 1000, "levels": 20, "validation_size": 500}
width_sweep = {"width 8": {"width": 8}, "width 32": {"width": 32}}
depth_experiment = {"dataset": "mnist-5k", "model": "mlp", "optimizer": "sgd", "lr": 0.1,
                    "momentum": 0.0, "epochs": 40, "levels": 35, "validation_size": 500}
depth_sweep = {"1 hidden layer (300)": {"widths": [300]},
               "2 hidden layers (300, 100)": {"widths": [300, 100]}}
noise_rates = [0.2]
seeds = [0, 1, 2]
distill_from = "best-fit"
compute_missing = True

# %% tags=["remove-input"]
from sddlib.book import figures

figures.use_profile("antidote-capacity", globals())

# %% tags=["hide-input"]
import pandas as pd

from sddlib.analysis import metrics
from sddlib.book import pages, plots

# label -> configs, and what each variant is, column by column
variants, described = pages.capacity_variants(globals())
frame = figures.gather(variants, compute_missing, label="variant")
for column in ("sweep", "size", "noise rate", "training", "model size"):
    frame[column] = frame.variant.map({label: d[column] for label, d in described.items()})

dips = metrics.dip_depths(frame, "variant").set_index("variant")
table = metrics.summaries(frame, "variant").set_index("variant").join(dips.drop(columns="seeds"))
table = table.join(pd.DataFrame.from_dict(described, orient="index"))
plain = table[table.training == "plain"].set_index(["sweep", "size", "noise rate"])
distilled = table[table.training == "distilled"].set_index(["sweep", "size", "noise rate"])
shallower = (distilled.dip < plain.dip.reindex(distilled.index))
figures.glue("size_count", len(shallower))
figures.glue("shallower_count", int(shallower.sum()))
# judged per model size over seeds: the plain run's dip minus the student's, paired by
# seed, only where the plain run (the control) shows sparse double descent
judgements, blocked = {}, []
for label in distilled.index:
    sweep, size, noise = label
    part = frame[(frame.sweep == sweep) & (frame["size"] == size) &
                 (frame["noise rate"] == noise)]
    control = metrics.three_phases_judgement(part[part.training == "plain"])
    if metrics.control_shows_effect(control)[0]:
        judgements[f"{sweep}, {size}, {noise}"] = metrics.paired_judgement(
            part[part.training == "plain"], part[part.training == "distilled"], "dip")
    else:
        blocked.append(f"{sweep}, {size}, {noise}")
figures.glue("blocked_sizes", ", ".join(blocked) or "none")
figures.claim("capacity_claim", "Distillation from the best-fit teacher leaves a shallower "
              "dip at every width and depth tried", metrics.verdict_of_judgements(
                  judgements, "model size", why_none="no plain run (the control) shows sparse "
                  "double descent at the interval"), judgements or None)

fig, axes = plots.figure(2, 2)
for row, sweep in enumerate(["width", "depth"]):
    for col, way in enumerate(["plain", "distilled"]):
        part = frame[(frame.sweep == sweep) & (frame.training == way)]
        plots.curves(axes[row, col], part, "test_acc", hue="model size")
        axes[row, col].set_title(f"{sweep} sweep, {way}")
fig.tight_layout()
figures.glue("fig_capacity", fig)
shown = table.reset_index()
figures.glue("capacity_table", figures.percent_table(shown, {
    "sweep": "sweep", "size": "model size", "noise rate": "noise", "training": "training",
    "dense_acc": "dense", "dip": "dip", "best_acc": "best", "best_sparsity":
    "best at sparsity", "last_acc": "last"}, plain=("sweep", "size", "noise rate", "training")))

# %% [markdown]
# ```{glue:figure} fig_capacity
# :name: fig-capacity
#
# Test accuracy against the share of weights left, one curve per model size: the width
# sweep (top) and the depth sweep (bottom), plain (left) and distilled from the best-fit
# teacher (right), mean ± std over the profile's seeds.
# ```
#
# **Measured.** The student's dip is shallower than the plain run's for
# {glue:text}`shallower_count` of the {glue:text}`size_count` model sizes on the
# seed-averaged curves. Judged over seeds, per model size (the plain run's dip minus the
# student's, paired by seed, where the plain run shows sparse double descent at the
# interval; model sizes whose plain run does not: {glue:text}`blocked_sizes`), the claim
# that distillation from the best-fit teacher dodges the dip at every width and depth tried
# {glue:text}`capacity_claim`. Every curve's landmarks:
#
# ```{glue:} capacity_table
# ```

# %% [markdown]
# ## Rerun this figure
#
# ```bash
# sddlib figures --only antidote-capacity -p seeds=[0,1] -p noise_rates=[0.1,0.5]
# jupyter-book build book/
# ```
