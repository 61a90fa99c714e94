"""Run every benchmark and write their numbers as a markdown table.

The table goes to ``benchmarks/results/latest.md`` (git-ignored) and to stdout. Each ratio
in it was measured within one benchmark's process; the machine line says where.

    python benchmarks/run_all.py [--quick]

``--quick`` runs one epoch per timing instead of several (a smoke test of the machinery;
its numbers are noisier).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import bench_conv1d
import bench_conv_sparse
import bench_flops
import bench_gpu
import bench_level
import bench_scaling
import bench_sparse
import bench_stack
import common
import torch

RESULTS = Path(__file__).resolve().parent / "results" / "latest.md"


def main(argv: list[str]) -> str:
    quick = "--quick" in argv
    epochs = 1 if quick else None
    started = time.time()
    rows = []
    for bench in (bench_level, bench_flops, bench_conv1d, bench_conv_sparse, bench_stack,
                  bench_scaling, bench_sparse, bench_gpu):
        print(f"== {bench.__name__}", flush=True)
        rows += bench.main() if epochs is None else bench.main(epochs)
    lines = [f"# sddlib benchmarks ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
             f"Machine: {common.machine()}.", "",
             "| measure | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    lines += ["", f"Total wall time {time.time() - started:.0f} s"
              f"{' (--quick: one epoch per timing)' if quick else ''}; "
              f"torch threads {torch.get_num_threads()}."]
    text = "\n".join(lines) + "\n"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main(sys.argv[1:])
