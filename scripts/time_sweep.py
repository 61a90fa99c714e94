"""Wall time of a grid (default: examples/grid-smoke.yml) with one local worker, with two,
and on Ray started on this machine.

    .venv/bin/python scripts/time_sweep.py [GRID.yml] [--set key=value]...

``--set`` changes the grid's base (``--set epochs=20`` for bigger runs). Each timing
starts from an empty run store in a temporary folder; the datasets are made once first
(untimed). The Ray line gives the sweep's time with Ray already started, then the time
``ray.init`` took. Prints one line per measurement.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

from sddlib.config.fields import parse_assignments
from sddlib.data.datasets import load_clean_cached
from sddlib.scheduling import executor, grid
from sddlib.scheduling.parallel import usable_cores
from sddlib.storage.store import RunStore

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", nargs="?", type=Path, default=ROOT / "examples" / "grid-smoke.yml")
    parser.add_argument("--set", dest="sets", action="append", default=[])
    args = parser.parse_args(argv)
    content = yaml.safe_load(args.grid.read_text())
    content["base"] = {**content.get("base", {}), **parse_assignments(args.sets, "--set")}
    configs = grid.expand_grid(content, str(args.grid))
    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder) / "datasets"
        for config in configs:
            load_clean_cached(config.dataset, str(data_dir), config.train_size,
                              config.test_size, config.image_size)
        print(" ".join([f"{len(configs)} runs of {args.grid.name}", *args.sets,
                        f"on {usable_cores()} cores"]), flush=True)
        for workers in (1, 2):
            seconds = timed(configs, Path(folder) / f"local-{workers}", data_dir,
                            workers=workers)
            print(f"local, {workers} worker(s): {seconds:.1f} s", flush=True)
        import ray

        started = time.perf_counter()
        ray.init(num_cpus=usable_cores(), include_dashboard=False, log_to_driver=False)
        startup = time.perf_counter() - started
        try:
            seconds = timed(configs, Path(folder) / "ray", data_dir, ray="local")
        finally:
            ray.shutdown()
        print(f"ray (local, {usable_cores()} CPUs): {seconds:.1f} s, plus {startup:.1f} s "
              "to start Ray", flush=True)


def timed(configs, root: Path, data_dir: Path, **how) -> float:
    started = time.perf_counter()
    summary = executor.run_all(configs, RunStore(root), progress=False, data_dir=data_dir, **how)
    seconds = time.perf_counter() - started
    if not summary.ok or len(summary.computed) != len(configs):
        raise SystemExit(summary.report())
    return seconds


if __name__ == "__main__":
    main(sys.argv[1:])
