"""Kill a run with SIGKILL at random moments, resume it, and compare its table.

    .venv/bin/python scripts/kill_trials.py [--trials 20] [--kills 2] [--seed 0]
                                            [--jobs N] [--data-dir DIR] [--json FILE]

Each trial computes one tiny run (MNIST-1D, an MLP, four levels of three epochs, a
lottery rewind point at iteration 5, a mid-level checkpoint at every epoch end) in a fresh
store. It starts the run in a child process and kills it (SIGKILL) after a random delay,
uniform over an uninterrupted run's duration, then lists the store as ``sddlib ls`` does
(:meth:`RunStore.listing`, ``--verify``), which must read it and find nothing damaged;
it does that ``--kills`` times (a child that finishes before its moment is not a kill),
then lets the run finish and compares its table with an uninterrupted run's, every column
but the wall time ``seconds``, and finds no temporary file or mid-level checkpoint left in
the run's folder. The moments come from ``random.Random(--seed)``; ``--jobs`` trials run
at once (each is still one process at a time).

The children are forked from this process, which imports sddlib but never runs torch (a
process forked after torch's thread pools started is not safe), so a trial costs its
runs, not torch's import. Prints ``N trials, M identical`` with the kill counts and exits
1 unless every trial resumed to the identical table with nothing damaged on the way.
``tests/test_integrity.py`` runs it.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

import pandas as pd
import torch._dynamo  # noqa: F401 - torch.optim imports it on first use: once, here

from sddlib.config.fields import ExperimentConfig
from sddlib.engine.experiment import run_experiment
from sddlib.storage.store import RunStore

CONFIG = ExperimentConfig(model="mlp", widths=[16, 16], train_size=300, test_size=100,
                          epochs=3, levels=3, batch_size=32, rewind_iteration=5, device="cpu")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--kills", type=int, default=2, help="kills per trial (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="trials at once (default: one per core)")
    parser.add_argument("--data-dir", type=Path, default=Path("data/datasets"))
    parser.add_argument("--json", type=Path, help="also write the counts here")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="kill-trials-"))
    try:
        attempt(work / "warm-up", args.data_dir)  # the dataset cache, made uninterrupted
        started = time.monotonic()
        if attempt(work / "reference", args.data_dir) != "finished":
            raise SystemExit("the uninterrupted reference run failed")
        duration = time.monotonic() - started
        reference = comparable(work / "reference")
        # every trial's candidate moments drawn up front: the same whatever the scheduling
        moments = [[rng.uniform(0, duration) for _ in range(4 * args.kills)]
                   for _ in range(args.trials)]
        results = []
        for first in range(0, args.trials, args.jobs):
            batch = range(first, min(first + args.jobs, args.trials))
            pids = [in_child(trial_in, work / f"trial-{t:03d}", args.data_dir, args.kills,
                             moments[t], reference) for t in batch]
            for pid in pids:
                os.waitpid(pid, 0)
            for t in batch:
                found = work / f"trial-{t:03d}" / "result.json"
                results.append(json.loads(found.read_text()) if found.exists() else
                               {"identical": False, "kills": 0, "mid_level": 0, "mid_write": 0,
                                "listings_clean": 0, "failures": ["the trial crashed"]})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    counts = {"trials": args.trials, "identical": sum(r["identical"] for r in results),
              **{key: sum(r[key] for r in results) for key in
                 ("kills", "mid_level", "mid_write", "listings_clean")},
              "run_seconds": round(duration, 3), "seed": args.seed,
              "failures": [f"trial {t}: {f}" for t, r in enumerate(results)
                           for f in r["failures"]]}
    print(f"{counts['trials']} trials, {counts['identical']} identical "
          f"({counts['kills']} kills: {counts['mid_level']} mid-level, {counts['mid_write']} "
          f"mid-write; after {counts['listings_clean']} of them `sddlib ls` read the store "
          "with nothing damaged)")
    for failure in counts["failures"]:
        print(f"  {failure}")
    if args.json:
        args.json.write_text(json.dumps(counts, indent=2))
    ok = counts["identical"] == counts["trials"] and not counts["failures"] and \
        counts["listings_clean"] == counts["kills"]
    return 0 if ok else 1


def trial_in(root: Path, data_dir: Path, kills: int, moments: list[float],
             reference: pd.DataFrame) -> None:
    """One trial in ``root``: up to ``kills`` kills at ``moments``, each followed by a
    listing, then the run to its end; the counts go to ``root/result.json``."""
    result = {"identical": False, "kills": 0, "mid_level": 0, "mid_write": 0,
              "listings_clean": 0, "failures": []}
    for moment in moments:
        if result["kills"] == kills or attempt(root, data_dir, kill_after=moment) != "killed":
            break
        result["kills"] += 1
        result["mid_level"] += any(root.glob("*/progress.pt"))
        result["mid_write"] += any(root.rglob(".*.tmp"))
        problems = listing_problems(root)
        result["listings_clean"] += not problems
        result["failures"] += [f"after kill {result['kills']}: {p}" for p in problems]
    if attempt(root, data_dir) != "finished":
        result["failures"].append("the resumed run failed")
    else:
        leftovers = [p.name for run in RunStore(root).folders() for p in run.rglob("*")
                     if p.name.endswith(".tmp") or p.name == "progress.pt"]
        if leftovers:
            result["failures"].append(f"left {leftovers}")
        try:
            pd.testing.assert_frame_equal(comparable(root), reference)
            result["identical"] = True
        except AssertionError as error:
            result["failures"].append(" ".join(str(error).split()))
    (root / "result.json").write_text(json.dumps(result))


def attempt(root: Path, data_dir: Path, kill_after: float | None = None) -> str:
    """Run (or resume) the run in ``root`` in a forked child; ``killed`` if it was still
    running ``kill_after`` seconds in (then it got SIGKILL), ``finished`` or ``failed``."""
    pid = in_child(run_experiment, CONFIG, RunStore(root), progress=False,
                   checkpoint_seconds=0, data_dir=data_dir)
    deadline = None if kill_after is None else time.monotonic() + kill_after
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return "finished" if os.waitstatus_to_exitcode(status) == 0 else "failed"
        if deadline is not None and time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "killed"
        left = 0.001 if deadline is None else deadline - time.monotonic()
        time.sleep(max(0.0, min(0.001, left)))


def in_child(function, *args, **kwargs) -> int:
    """The pid of a forked child that calls ``function`` and exits (1 if it raised),
    without running this process's cleanup."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        function(*args, **kwargs)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def listing_problems(root: Path) -> list[str]:
    """What is wrong with the store as ``sddlib ls --verify`` reads it after a kill:
    nothing, or the damaged (or running: the lock outlived its process) runs' lines; an
    exception while listing is one too. A kill after the last level is stored finds the
    run finished."""
    try:
        listed = RunStore(root).listing(verify=True)
    except Exception as error:  # noqa: BLE001 - any failure to list is the finding
        return [f"listing failed: {type(error).__name__}: {error}"]
    return [f"{entry.name} {entry.status}: {entry.problem}" for entry in listed
            if entry.status not in ("new", "partial", "finished")]


def comparable(root: Path) -> pd.DataFrame:
    """The finished run's table without its wall times."""
    (run,) = RunStore(root).runs()
    return run.levels().drop(columns="seconds")


if __name__ == "__main__":
    sys.exit(main())
