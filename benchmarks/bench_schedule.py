"""What a shorter schedule would cost the book: the quick profile's 1-D CNN curve at fewer
epochs per level, its training time against the verdict of the datasets page's claim.

Most of the quick book's training time is the 1-D CNN on MNIST-1D (``MEASUREMENTS.md``),
whose step on this CPU is close to what torch's convolution kernels give at its sizes, so
fewer epochs per level is the lever left to shorten the book. This measures what that
lever costs. The run is the datasets page's own ``mnist1d`` run on the quick profile (its
config built from ``_config.yml`` by :func:`sddlib.book.pages.page_runs`, so it follows the
profile), on the page's seeds, trained at each given number of epochs per level. For each
schedule it prints:

- the training seconds of all its seeds (the stored levels' ``seconds``) over those of the
  profile's own schedule (comparable when every run was trained in the same call, as in
  the default scratch store);
- the dense network's training accuracy, the mean over seeds (the noisy labels are
  memorised when it is near 1);
- the claim of the datasets page over those seeds
  (:func:`sddlib.analysis.metrics.three_phases_judgement`): the mean of each seed's
  smallest phase, its 95% interval and the verdict in the book's words.

The runs go to a scratch store unless ``--runs-dir`` names one; there its finished runs are
reused, so a second call only reads them. It trains whole curves (about ten minutes on
two cores for three schedules of five seeds), so it is not part of ``run_all.py``.

    python benchmarks/bench_schedule.py [EPOCHS ...] [--runs-dir DIR]
"""
from __future__ import annotations

import argparse
import tempfile

import common

from sddlib.analysis import metrics
from sddlib.book import figures, pages
from sddlib.config.fields import ExperimentConfig
from sddlib.scheduling.sweep import run_many
from sddlib.storage.store import RunStore

PAGE, DATASET = "sdd-datasets", "mnist1d"


def profile_configs(profile: str = "quick") -> list[ExperimentConfig]:
    """The page's ``mnist1d`` runs on ``profile``, one per seed."""
    return pages.page_runs(PAGE, figures.page_parameters(PAGE, profile))[DATASET]


def main(epochs: list[int] | None = None, runs_dir: str | None = None
         ) -> list[tuple[str, str]]:
    base = profile_configs()
    own = base[0].epochs
    schedules = sorted(set(epochs or [own // 2, 2 * own // 3, own]) | {own})
    with tempfile.TemporaryDirectory(prefix="sddlib-schedule-") as scratch:
        store = RunStore(runs_dir or scratch)
        configs = [config.replace(epochs=count) for count in schedules for config in base]
        frame = run_many(configs, store, data_dir=common.DATA_DIR, workers="auto",
                         progress=False)
    seconds = frame.groupby("epochs").seconds.sum()
    rows = []
    for count in schedules:
        runs = frame[frame.epochs == count]
        judged = metrics.three_phases_judgement(runs)
        dense = runs[runs.level == 0].train_acc.mean()
        label = f"schedule: {DATASET} cnn1d, {count} epochs per level ({len(base)} seeds)"
        rows += [(f"{label}, training time / {own} epochs'",
                  f"{seconds[count] / seconds[own]:.2f}"),
                 (f"{label}, dense training accuracy", f"{dense:.3f}"),
                 (f"{label}, smallest phase per seed, mean [95% interval]",
                  judged.interval()),
                 (f"{label}, sparse double descent", judged.words())]
    return common.report(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("epochs", nargs="*", type=int,
                        help="epochs per level to try (default: half, two thirds and all "
                             "of the profile's)")
    parser.add_argument("--runs-dir", help="a run store to use and keep (default: scratch)")
    options = parser.parse_args()
    main(options.epochs or None, options.runs_dir)
