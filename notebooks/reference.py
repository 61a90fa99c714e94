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
# # Reference
#
# Every key of an experiment's config, what a run stores, what training costs and why,
# and the latest benchmark numbers. The tables on this page are computed when the page is
# built, from the library itself and from `benchmarks/results/latest.md`, so they cannot
# drift from the code.

# %% tags=["parameters", "remove-cell"]
profile = "quick"

# %% tags=["remove-input"]
from sddlib.book import figures

figures.use_profile("reference", globals())

# %% tags=["hide-input"]
import pandas as pd
from IPython.display import Markdown, display

from sddlib.book import figures
from sddlib.config import fields as config
from sddlib.config.project import load_settings
from sddlib.engine import entropy
from sddlib.storage import store as run_store


def table(frame: pd.DataFrame):
    """A left-aligned table without the index, its text escaped (values hold "<")."""
    return (frame.style.format(escape="html").hide(axis="index")
            .set_properties(**{"text-align": "left", "vertical-align": "top"})
            .set_table_styles([{"selector": "th", "props": [("text-align", "left")]}]))


rows = []
for key, default, text in config.help_table():
    meaning, allowed = text, ""
    if text.endswith("]") and " [" in text:  # help_table puts the allowed values last
        meaning, allowed = text[:-1].rsplit(" [", 1)
    rows.append({"key": key, "default": default or "(empty)", "allowed values": allowed,
                 "meaning": meaning})
keys = pd.DataFrame(rows)
figures.glue("key_count", len(keys))

# %% [markdown]
# ## Configuration keys
#
# An experiment is one `ExperimentConfig`: these {glue:text}`key_count` keys, with their
# defaults (together, the embedded default experiment that `sddlib run` trains with no
# arguments) and the values each accepts. Set them on the command line
# (`sddlib run --set noise=0.4 --set seed=1`), in a YAML file (`sddlib run my-experiment.yml`), for
# a figure (`sddlib figures --only label-noise -p experiment.epochs=40`) or from Python.
# `sddlib keys` prints the same table. Bad input stops before any work with one line naming the key
# and the allowed values. `none` in a key that takes a number means "the dataset's or model's own
# choice", as its meaning says; lists (`widths`, `milestones`) are written `300,100` on
# the command line and `[300, 100]` in YAML.

# %% tags=["hide-input"]
table(keys)

# %% [markdown]
# The paper's recipes (He et al., appendix) as commands, with 20% label noise; the
# `paper` profile in the root `_config.yml` runs them for the book:
#
# ```bash
# # LeNet-300-100 on MNIST
# sddlib run --download --set dataset=mnist --set model=mlp --set widths=300,100 \
#     --set optimizer=sgd --set momentum=0 --set lr=0.1 --set epochs=200 \
#     --set train_size=none --set test_size=none --set levels=30
# # ResNet-18 on CIFAR-10, rewinding to iteration 1000
# sddlib run --download --set dataset=cifar10 --set model=resnet18 --set optimizer=sgd \
#     --set lr=0.1 --set schedule=multistep --set milestones=80,120 --set weight_decay=1e-4 \
#     --set epochs=160 --set rewind_iteration=1000 --set train_size=none --set test_size=none \
#     --set levels=30
# ```

# %% [markdown]
# ## What a run stores
#
# One folder per run, `data/runs/<readable name>-<hash of the config>/` (set `runs_dir`
# in the root `_config.yml` or pass `--runs-dir` for another store). The readable name is
# for people, the hash of the config's identity for the machine: a finished run is found
# again by its config and reused, never recomputed, and asking for more `levels` extends
# it. The folder holds (from `sddlib.storage.store`):

# %% tags=["hide-input"]
marker = "A run folder holds::"
if marker not in run_store.__doc__:
    raise RuntimeError(f"sddlib.storage.store's docstring no longer has {marker!r}: "
                       "update this page")
layout = []
for line in run_store.__doc__.split(marker, 1)[1].splitlines()[1:]:
    if line.strip() and not line.startswith("    "):
        break
    layout.append(line[4:])
display(Markdown("```text\n" + "\n".join(layout).strip("\n") + "\n```"))

# %% [markdown]
# `meta.json` records the package versions, the git revision, the device, the host, the
# torch threads the run trained with, the process that trained it (and, for a stacked
# ensemble member, `trained_as: {stacked_with, stacked_levels}`), and the data: their
# fingerprint, source and sizes. A run is reused or resumed only on data with the same
# fingerprint: pointed at other files (another `--data-dir`), `sddlib run` stops with one
# line naming both. Every file is written atomically, so a run killed at any moment
# (Ctrl-C, `kill -9`, a cluster pre-emption) continues from its last checkpoint when the
# same command runs again, and ends with the table an uninterrupted run gives.
#
# `levels.csv` has one row per finished level; accuracies are fractions:

# %% tags=["hide-input"]
COLUMNS = {
    "level": "0 for the dense network, then one per pruning step",
    "sparsity": "the share of the prunable weights that are pruned, measured from the masks; "
                "prunable are the conv and linear weights (the output layer is pruned for "
                "ResNets and kept dense for the MLP and VGG, as in the paper; see the "
                "prune_output key)",
    "remaining_weights": "the number of prunable weights left",
    "train_acc": "training accuracy against the labels the network was trained on, noisy "
                 "ones included",
    "train_acc_clean": "training accuracy against the true labels",
    "train_acc_corrupted": "on the training samples whose label was changed, agreement with "
                           "the noisy label: memorisation (empty without label noise)",
    "train_loss": "mean cross-entropy on the training set, against the labels trained on",
    "test_acc": "test accuracy",
    "test_loss": "mean cross-entropy on the test set",
    "learning_distance": "||m * (w_final - w_start)||_2 over all conv and linear weights: how "
                         "far the level's training moves the weights it can train (m the "
                         "level's mask, w_start the weights the retraining mode starts the "
                         "level from); see sddlib.engine.distance",
    "activation_entropy": "the activation entropy of the level's network in bits (Quetu & "
                          "Tartaglione): each ReLU's input binarised at 0, per unit-position "
                          "the binary entropy of its share of samples on (clamped to "
                          f"[{entropy.CLAMP:g}, 1 - {entropy.CLAMP:g}]), averaged over every "
                          f"unit-position of every ReLU, on {entropy.SAMPLES:,} clean training "
                          "inputs (all when fewer); per layer in the level's entropy.json; "
                          "see sddlib.engine.entropy",
    "seconds": "wall-clock seconds the level took to train, resumptions included (a stacked "
               "member: its share of the group's time)",
}
missing = [c for c in run_store.LEVEL_COLUMNS if c not in COLUMNS]
if missing or len(COLUMNS) != len(run_store.LEVEL_COLUMNS):
    raise RuntimeError(f"levels.csv columns changed ({missing or 'one was removed'}): "
                       f"update this page")
table(pd.DataFrame({"column": run_store.LEVEL_COLUMNS,
                    "definition": [COLUMNS[c] for c in run_store.LEVEL_COLUMNS]}))

# %% [markdown]
# A run with a validation split (`validation_size` training samples held out, with their
# noisy labels; the split is stored in `validation.npz`) has two more columns: `val_acc`
# and `val_loss`, the level's accuracy and loss on those samples. A distillation run's
# `meta.json` names the teacher run and the level that taught it (`sddlib.engine.distill`).
#
# Evaluation runs after each level's training, in eval mode. `w_start` is the original
# init for the dense level 0 and for lottery rewinding to iteration 0, the rewind point
# for later rewind points, the previous level's trained weights for `finetune` and
# `lr-rewind`, and a fresh init for `scratch` and `reinit`. Runs stored with an earlier
# definition of the learning distance (`||w_init - w_final||` with pruned weights counted
# as 0, which measured sparsity more than learning) get the corrected column from their
# checkpoints, without retraining, the first time they are found; so do runs stored before
# the activation entropy was measured (`meta.json` records which definition and how many
# samples, `activation_entropy_version` and `activation_entropy_samples`).
# `metrics.entropy_early_stop` is a stopping rule over levels read from that column (and
# `val_acc` where a run has it), never from test accuracy; `metrics.early_stop_report`
# puts what it keeps beside the best level in hindsight.
#
# All runs of a store load as one tidy table, one row per (run, level), with the config's
# keys as columns: `RunStore("data/runs").load()` (`from sddlib.storage.store import RunStore`).
# `sddlib ls` lists the runs and their status, `sddlib show NAME` prints one run's
# `levels.csv` (a name prefix or the hash is enough).

# %% [markdown]
# ## Speed
#
# The ratios quoted here were measured on 2026-11-23 on the 2-core CPU this project is
# developed on (the full table is under {ref}`reference-measurements`); `make bench`
# measures them again on yours ({ref}`reference-benchmarks`).
#
# **What a curve costs.** A level is a full training (30 epochs by default), so a curve
# costs `levels + 1` trainings, times seeds and variants. Pruned weights are masks on
# dense tensors; on the CPU, linear layers with 20% of their weights or fewer are packed
# for their level's training (`sparse=auto`, `sddlib/sparse.py`): their kept weights
# become one vector, multiplied with the CSR kernels of `torch.sparse`, and only they are
# stepped by the optimiser, so such a layer costs what its remaining weights cost. The
# rest of a step (the batch, the loss, the other layers, the convolutions, which torch
# cannot skip) does not shrink, so a level's time falls with density only as far as its
# linear layers dominate it (the plot under {ref}`reference-benchmarks`). Time per epoch grows
# linearly with the training-set size (4,000 instead of 8,000 samples: 0.51x; 2,000: 0.25x) and,
# once the model is big enough to keep the cores busy, with its FLOPs: width 16 / 64 / 128
# of the default 1-D CNN cost 0.59x / 2.15x / 4.51x the default's time for 0.3x / 3.6x /
# 14x its FLOPs. The default model is small (0.83 MFLOP per sample for a training step),
# so one run of it uses 15 to 22% of the 2 cores' matmul peak, while width 128 reaches
# 50% (`benchmarks/bench_scaling.py`, `bench_flops.py`).
#
# **The CPU loop.** Data stay on the training device as whole tensors and batches are
# taken by indexing (no `DataLoader`), the optimiser step is one fused kernel
# (`fused=True`), masks are buffers applied with one `foreach` multiply. One default level
# trains 1.4 times as fast as a plain `DataLoader` loop on the same model and data (ratio
# 0.70 in `benchmarks/bench_level.py`, sddlib on one thread, the plain loop on two): short
# of 2x, because the time of a step goes into oneDNN's small 1-D convolution kernels
# (about half of it, by the profiler), which both loops call.
#
# **Runs side by side** (`sddlib/parallel.py`). The default model is too small to keep
# two cores busy, so several runs train at once, each in its own process on one core: the
# book's notebooks and `sddlib run --seeds` do this by default on the CPU (`auto`: one
# process per core, for runs big enough to be worth a process), and so does `run_many`
# with `workers="auto"` in your own script (start it under `if __name__ == "__main__":`,
# as Python's `spawn` start method asks). Two default runs side by side take 0.39x the
# plain loop's time per epoch each, 1.8 times the throughput of one run on one thread and
# 1.3 times that of one run on two, and use 27% of the matmul peak; 3 seeds cost 2.3 times
# one seed (`bench_stack.py`). A run's numbers depend on its torch thread count (oneDNN
# and MKL split their sums by thread), so the count belongs to the run, not to how it was
# launched: `threads` (auto: 1 for `mlp` and `cnn1d` on the CPU, every core otherwise)
# gives a run the same numbers alone, in a pool or in the book, and `meta.json` records
# it. The price is that a lone default run on one thread is 1.2 to 1.3 times slower than
# on two; `--set threads=2` buys that back for a run you will not compare digit for digit
# with pooled ones. `sddlib run --seeds ... --workers N` and, for the book,
# `SDDLIB_WORKERS=N` set the number of processes (`1`: one after another). On a GPU
# `auto` is one process (runs are stacked instead); `--workers N` runs N processes on the
# one GPU, the way to train several small BatchNorm models at once (not yet measured on a
# GPU).
#
# **Stacked ensembles** (`sddlib/ensemble.py`). Runs that differ only in seed, label
# noise or pruning criterion (same model shape and schedule; no BatchNorm, no rewinding,
# not reinit or re-dense) can train together as one stacked model (`torch.vmap` over
# `functional_call`), each with its own weights, masks, labels and data order. Each member
# is stored as its own run, writes mid-level checkpoints in the single-run format and
# resumes after a kill like any run. It pays where per-step overhead dominates (small
# models on a GPU: one launch instead of K), so it is on by default only on CUDA: on 2 CPU
# cores the grouped convolutions vmap makes cost as much per member as K single runs (3
# seeds stacked cost 3.2 to 4.1 times one seed, `benchmarks/bench_stack.py`; side by side
# is cheaper). Turn it on or off with `sddlib run --seeds ... --stack/--no-stack` and, for
# the book, `SDDLIB_STACK=1` or `0` (`auto` by default). Stacked and one-by-one training
# agree only to float rounding, which training amplifies (up to about 2 points of test
# accuracy at some levels), and for the CNN the numbers also depend on how many runs were
# stacked, so each member's `meta.json` records `trained_as: {stacked_with,
# stacked_levels}`.
#
# **The GPU fast path** (`sddlib/fast.py`). On CUDA, `precision=auto` and `compile=auto`
# train with the training set resident on the GPU (uint8 for images), crop/flip offsets
# drawn once per epoch and applied on the GPU, channels_last image models, bf16 autocast
# for the forward pass and loss (weights and optimiser state stay fp32), `torch.compile`
# compiled once per process and reused by every level (a new model instance of the same
# shape does not recompile), fused optimisers and no host synchronisation in the step
# loop. The recipe is unchanged; bf16 changes float rounding, so `precision` is part of a
# run's identity (`auto` keeps existing runs' names; `meta.json` records what it resolved
# to). On the CPU the defaults stay fp32 and eager. For models with BatchNorm (which do
# not stack), run several `sddlib run` processes or notebooks on one GPU; the run store's
# lock keeps them apart. `python benchmarks/bench_gpu.py` compares the fast path with a
# plain `DataLoader` loop (torchvision transforms, 4 workers, fp32) on ResNet-18 and
# CIFAR-shaped data (50,000 32x32 images, generated if CIFAR-10 is absent), and prints the
# GPU-hours a 30-level CIFAR-10 curve would take. As of 2026-11-23 it had not been run on
# a GPU (its logic is tested on the CPU in `tests/test_fast.py`).

# %% [markdown]
# (reference-benchmarks)=
# ## Benchmarks
#
# `make bench` runs `benchmarks/run_all.py`: every benchmark in `benchmarks/`, each
# number a ratio measured within one process (these machines are noisy), printed and
# written to `benchmarks/results/latest.md` (never committed, never part of the tests).
# This page shows that file as it was when the page was built:

# %% tags=["hide-input"]
latest = load_settings().root / "benchmarks" / "results" / "latest.md"
if latest.exists():
    lines = latest.read_text().splitlines()
    cells = [[c.strip() for c in line.strip().strip("|").split("|")]
             for line in lines if line.startswith("|")]
    header, body = cells[0], [row for row in cells[2:] if len(row) == len(cells[0])]
    title = next((line.lstrip("# ").strip() for line in lines if line.startswith("#")), "")
    notes = [line.strip() for line in lines if line.strip() and not line.startswith(("|", "#"))]
    display(Markdown(f"**{title}.** " + " ".join(notes)))
    display(table(pd.DataFrame(body, columns=header)))
else:
    display(Markdown("No benchmark results were there when this page was built. Run "
                     "`make bench` (a few minutes; it writes "
                     "`benchmarks/results/latest.md`), then rebuild this page with "
                     "`sddlib figures --only reference` and `jupyter-book build book/`."))

# %% [markdown]
# **Seconds per level against density.** `benchmarks/bench_sparse.py` trains the levels
# of a LeNet-300-100 curve on mnist-5k (masks of global magnitude pruning at 20% per
# level) on both paths and writes `benchmarks/results/sparse_levels.csv`; the plot is
# drawn from that file when the page is built.

# %% tags=["hide-input"]
levels_csv = load_settings().root / "benchmarks" / "results" / "sparse_levels.csv"
if levels_csv.exists():
    import matplotlib.pyplot as plt
    import seaborn as sns

    timed = pd.read_csv(levels_csv)
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    sns.lineplot(data=timed, x="density", y="seconds_per_epoch", hue="path", marker="o",
                 ax=ax)
    ax.set(xscale="log", xlabel="fraction of weights left (log scale)",
           ylabel="seconds per epoch", ylim=(0, None))
    ax.invert_xaxis()
    ax.set_title("LeNet-300-100, one level's epoch, one thread")
    ax.grid(alpha=0.3)
    plt.show()
else:
    display(Markdown("No `benchmarks/results/sparse_levels.csv` was there when this page "
                     "was built: run `python benchmarks/bench_sparse.py` (about a minute "
                     "and a half at its defaults), then rebuild this page."))

# %% [markdown]
# (reference-measurements)=
# ## Measurements
#
# Numbers measured once and kept as a dated record in `benchmarks/MEASUREMENTS.md`, shown
# here as that file holds them: they are not recomputed when the book is built; rerun the
# command beside each to measure them again.

# %% tags=["hide-input"]
record = load_settings().root / "benchmarks" / "MEASUREMENTS.md"
display(Markdown(record.read_text().split("\n\n", 2)[2]))  # without its title and note

# %% [markdown]
# ## Rebuild this page
#
# ```bash
# sddlib figures --only reference
# jupyter-book build book/
# ```
