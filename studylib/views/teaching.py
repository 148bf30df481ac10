"""Helpers for the teaching notebook: what each strategy trains, epoch by epoch, without training."""
from __future__ import annotations

from pathlib import Path

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


# --- inside the runs: what trained, how far the weights moved, how much the features changed ------
def inside_tables(runs: dict[str, str | Path]) -> dict[str, pd.DataFrame]:
    """Per strategy: layers.csv (the plan as it ran) and the selected network's representations.csv rows."""
    out = {}
    for strategy, run in runs.items():
        run = Path(run)
        changes = pd.read_csv(run / "representations.csv") if (run / "representations.csv").is_file() else None
        out[strategy] = {"layers": pd.read_csv(run / "layers.csv"),
                         "change": None if changes is None else changes[changes.selected.astype(bool)]}
    return out


def inside_figure(runs: dict[str, str | Path], path=None) -> plt.Figure:
    """Side by side for the chosen runs: which blocks trained each epoch (top, one map per strategy), how far
    each block's weights moved from the start and how much its features changed (bottom, a line each)."""
    from .measurefigures import label

    tables = inside_tables(runs)
    n = max(1, len(tables))
    fig = plt.figure(figsize=(max(8.0, 2.6 * n), 6.4))
    grid = fig.add_gridspec(2, 1, height_ratios=[1, 1.25])
    top, bottom = grid[0].subgridspec(1, n), grid[1].subgridspec(1, 2)
    for i, (strategy, t) in enumerate(tables.items()):
        axis = fig.add_subplot(top[0, i])
        layers = t["layers"]
        blocks = list(dict.fromkeys(layers.block))
        plan = layers.pivot(index="block", columns="epoch", values="trainable").reindex(blocks).astype(float)
        axis.imshow(plan.to_numpy(), cmap="Greens", vmin=0, vmax=1.3, aspect="auto", interpolation="nearest")
        axis.set(title=f"{label(strategy)}: trained", xlabel="epoch", yticks=range(len(blocks)),
                 yticklabels=blocks if i == 0 else [])
    moved, changed = fig.add_subplot(bottom[0, 0]), fig.add_subplot(bottom[0, 1])
    for i, (strategy, t) in enumerate(tables.items()):
        if t["change"] is None:
            continue
        change = t["change"]
        x = range(len(change))
        moved.plot(x, change.rel_dist_init, marker="o", color=f"C{i % 10}", label=label(strategy))
        changed.plot(x, change.cka, marker="o", color=f"C{i % 10}", label=label(strategy))
        for axis in (moved, changed):
            axis.set_xticks(list(x), change.block, rotation=30, ha="right")
    moved.set(ylabel="relative weight distance from the start", title="how far the weights moved (0 = not at all)")
    changed.set(ylabel="CKA to the starting features", title="how much the features changed (1 = not at all)")
    changed.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return save(fig, path)


def lpft_check(runs: dict[str, str | Path]) -> str:
    """Does LP-FT keep its top features closer to the start than FT, as its authors predict? Said of these
    runs (one seed each): a single seed shows the direction, not whether it holds beyond seed noise."""
    tables = inside_tables({s: r for s, r in runs.items() if s in ("ft", "lp_ft")})
    if len(tables) < 2 or any(t["change"] is None or t["change"].empty for t in tables.values()):
        return "Run both FT and LP-FT (with repr_images > 0) to check the prediction."
    ft, lpft = (tables[s]["change"].iloc[-1] for s in ("ft", "lp_ft"))
    agrees = lpft.cka > ft.cka
    return (f"Top block ({ft.block}): CKA to the start {lpft.cka:.3f} after LP-FT against {ft.cka:.3f} after FT "
            f"(difference {lpft.cka - ft.cka:+.3f}), weights moved {lpft.rel_dist_init:.3f} against "
            f"{ft.rel_dist_init:.3f} (relative distance). "
            + ("In this run the direction agrees with the prediction: LP-FT changed the top features less."
               if agrees else "In this run the direction does not agree: LP-FT changed the top features at least "
               "as much as FT.") + " One seed each: rerun with other seeds before calling it a pattern.")


class InsideExplorer:
    """Pick strategies (by their names) and see `inside_figure` for them, redrawn on every change."""

    def __init__(self, runs: dict[str, str | Path]):
        import ipywidgets as widgets

        from .measurefigures import label

        self.runs = dict(runs)
        options = [(label(s), s) for s in self.runs]
        self.picker = widgets.SelectMultiple(options=options, value=tuple(self.runs)[:3], rows=len(options),
                                             description="strategies")
        self.output = widgets.Output()
        self.figure: plt.Figure | None = None
        self.picker.observe(lambda change: self.refresh(), names="value")
        self.refresh()

    def refresh(self) -> None:
        from IPython.display import display

        chosen = {s: self.runs[s] for s in self.picker.value}
        self.figure = inside_figure(chosen) if chosen else None
        with self.output:
            self.output.clear_output(wait=True)
            display(self.figure) if self.figure is not None else print("pick at least one strategy")
        if self.figure is not None:  # shown in the widget; closed so the notebook does not show a stale copy below
            plt.close(self.figure)

    def _ipython_display_(self) -> None:
        import ipywidgets as widgets
        from IPython.display import display

        display(widgets.HBox([self.picker, self.output]))
