"""Grid throughput with 1, 2 and 4 runs at a time (Dask LocalCluster), on whatever device is here.

    python benchmarks/bench_grid.py [--workers 1 2 4] [--runs 8]

On one GPU, `--workers K` puts K runs on it at once: small data and frozen backbones leave it
under-used, so several runs per GPU raise grid throughput until compute or memory saturates.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from studylib.study.grid import run_grid

GRID = """dataset: synthetic
synthetic_size: 600
backbone: {backbone}
image_size: {size}
batch_size: 64
max_epochs: 3
patience: 3
lp_epochs: 1
num_threads: {threads}
strategy: [ft, lp, lp_ft, l2_sp]
seed: {seeds}
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--runs", type=int, default=8, help="a multiple of 4")
    parser.add_argument("--backbone", default="tinycnn")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--engine", default="inline")
    args = parser.parse_args()
    seeds = list(range(1, args.runs // 4 + 1))
    print(f"| runs at a time | {args.runs} runs ({args.backbone}, {args.size}px, engine {args.engine}) | runs/min |")
    print("|---|---|---|")
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            grid = Path(tmp) / "g.yaml"
            grid.write_text(GRID.format(backbone=args.backbone, size=args.size, seeds=seeds,
                                        threads=1 if workers > 1 else 0))
            start = time.perf_counter()
            table = run_grid(grid, Path(tmp) / "out", workers=workers, engine=args.engine, progress=False)
            seconds = time.perf_counter() - start
            assert (table.status == "finished").all(), table
        print(f"| {workers} | {seconds:.1f} s | {60 * len(table) / seconds:.1f} |")


if __name__ == "__main__":
    main()
