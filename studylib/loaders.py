"""Generic loaders: each turns a data source into a `Table` of prepared uint8 images."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .config import RunConfig
from .registry import Registry
from .synthetic import make_synthetic


@dataclass
class Table:
    images: np.ndarray  # (n, 3, s, s) uint8
    labels: np.ndarray  # (n,) int64
    classes: tuple[str, ...]
    ids: list[str]
    split: np.ndarray | None = None  # official split per item ('' = unassigned), if any
    groups: np.ndarray | None = None  # patient / lesion id per item, if any
    report: dict = field(default_factory=dict)


Loader = Callable[..., Table]
LOADERS: Registry[Loader] = Registry("loader kind")


def load(info, root: Path, cfg: RunConfig, progress: bool = True) -> Table:
    return LOADERS.get(info.kind)(root=root, cfg=cfg, progress=progress, **info.options)


@LOADERS.register("synthetic")
def load_synthetic(root: Path, cfg: RunConfig, progress: bool, task: str) -> Table:
    # Generated at the prepared size directly; the seed of the *data* is fixed so that
    # different run seeds see the same images (seeds vary splits and training only).
    images, labels, classes = make_synthetic(task, cfg.synthetic_size, cfg.prepared_size, seed=0)
    return Table(images, labels, classes, [f"synthetic-{task}-{i}" for i in range(len(labels))])
