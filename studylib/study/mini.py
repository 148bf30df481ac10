"""The teaching notebook's mini comparison: a few strategies over three seeds under the demo's protocol,
small enough to run live in class, read back as the `Study` of exactly its runs."""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from ..core.constants import STUDY_SEEDS
from ..core.fileio import atomic_write
from ..core.templates import template
from .analysis import Study, grid_study
from .grid import run_grid

MINI_STRATEGIES = ("lp", "ft", "lp_ft", "gu_last_first", "auto_rgn")


def stage_lengths(epochs: int) -> dict:
    """Stage lengths that fit `epochs` on a small backbone (gradual unfreezing one block per epoch)."""
    return {"gu_epochs_per_stage": 1, "lp_epochs": max(1, min(3, epochs - 1))}


def mini_comparison(out_dir: str | Path, checkpoint: str | Path, strategies=MINI_STRATEGIES, seeds=STUDY_SEEDS,
                    size: int = 1000, epochs: int = 8, workers: int = 0) -> Study:
    """Fine-tune `checkpoint` on the synthetic target task with each strategy and seed under the demo's
    protocol (params/demo.yaml: one thread per run), with a progress bar. Finished runs are found again
    when the cell runs a second time.

    Args:
        out_dir: the grid folder (its mini.yaml records what ran).
        checkpoint: the pretrained tinycnn (studylib.training.pretrain writes one).
        strategies: registered strategy names.
        seeds: one run per strategy and seed.
        size: synthetic images.
        epochs: max_epochs of every run; LP-FT and gradual unfreezing get stages that fit.
        workers: runs at a time (0: one per core, up to 4).
    """
    grid = yaml.safe_load(template("params", "demo.yaml").read_text())
    grid.update(name="teaching", weights=str(Path(checkpoint).resolve()), strategy=list(strategies), seed=list(seeds),
                synthetic_size=size, max_epochs=epochs, **stage_lengths(epochs))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "mini.yaml"
    atomic_write(path, yaml.safe_dump(grid, sort_keys=False))
    run_grid(path, out, workers=workers or min(4, os.cpu_count() or 1), engine="inline")
    return grid_study(path, out)
