"""Helpers for the teaching notebook: what each strategy trains, epoch by epoch, without training."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..core.config import RunConfig
from ..data.datasets import load_dataset
from ..models.backbones import create_backbone
from ..training.engine import Device
from ..training.runner import make_trainer
from .runfigures import save


def strategy_plan(strategy: str, backbone: str = "tinycnn", epochs: int = 8, **fields) -> pd.DataFrame:
    """Per epoch x block: does it train, at which learning rate (before the cosine schedule).

    Plans are asked of the strategy at initial weights; Auto-RGN and Auto-SNR probe a few
    batches of the synthetic data for their gradient statistics.
    """
    cfg = RunConfig.from_dict({"strategy": strategy, "backbone": backbone, "max_epochs": epochs, "image_size": 32,
                               "synthetic_size": 96, "batch_size": 16, "device": "cpu", "quiet": True,
                               "gu_epochs_per_stage": 1, "lp_epochs": max(1, min(3, epochs - 1)), **fields})
    data = load_dataset(cfg, progress=False)
    bb = create_backbone(backbone, data.num_classes)
    trainer = make_trainer(cfg, bb, data, Device.resolve(cfg, bb))
    rows = []
    for epoch in range(epochs):
        plan = trainer.strategy.plan(epoch, trainer.probe)
        trainable = set(plan.trainable)
        for block, names in bb.blocks.items():
            lrs = [plan.lrs[n] for n in names if n in trainable]
            rows.append({"epoch": epoch, "block": block, "stage": plan.stage, "trainable": bool(lrs),
                         "lr": sum(lrs) / len(lrs) if lrs else 0.0})
    return pd.DataFrame(rows)


def plan_figure(strategies: list[str], backbone: str = "tinycnn", epochs: int = 8, path=None) -> plt.Figure:
    """One learning-rate map per strategy on a shared colour scale; rows are blocks, blank means frozen."""
    plans = {s: strategy_plan(s, backbone, epochs) for s in strategies}
    maps = {s: _log_lr_map(p) for s, p in plans.items()}
    low = min(np.nanmin(m.to_numpy()) for m in maps.values())
    high = max(np.nanmax(m.to_numpy()) for m in maps.values())
    fig, axes = plt.subplots(1, len(strategies), figsize=(2.8 * len(strategies) + 1, 3.2), squeeze=False)
    for axis, (strategy, table) in zip(axes[0], maps.items()):
        image = axis.imshow(table.to_numpy(), aspect="auto", cmap="viridis", interpolation="nearest",
                            vmin=low, vmax=high)
        axis.set(title=strategy, xlabel="epoch", yticks=range(len(table)),
                 yticklabels=list(table.index) if axis is axes[0][0] else [])
    fig.colorbar(image, ax=list(axes[0]), label="log10 learning rate (blank = frozen)")
    return save(fig, path)


def _log_lr_map(plan: pd.DataFrame) -> pd.DataFrame:
    blocks = list(dict.fromkeys(plan.block))
    table = plan.pivot(index="block", columns="epoch", values="lr").reindex(blocks)
    return np.log10(table.where(table > 0))
