"""Figures of the measurements beyond accuracy: feature change per block (CKA), calibration (one run's
reliability diagram, the strategies' gains over FT) and test score against the labelled fraction.

Each function returns the figure and, given `path`, writes it as PNG.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..core import runfiles
from ..core.config import metric_name
from ..core.constants import DEFAULT_METRIC
from ..training.strategies import strategy_label
from .runfigures import _title, save
from .studyfigures import _ordered, message_figure, panel_grid, strategy_colour

label = strategy_label  # 'lp_ft' -> 'LP-FT'


def _cases(frame: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame]]:
    return list(frame.groupby(["protocol", "dataset", "backbone"], sort=True))


def _case_title(keys: tuple, several: bool) -> str:
    protocol, dataset, backbone = keys
    return f"{dataset} | {backbone}" + (f" | {protocol}" if several else "")


def cka_by_block(change: pd.DataFrame, path: Path | None = None) -> plt.Figure:
    """CKA of each block's features to the starting network, a line per strategy, blocks input to output;
    one panel per dataset x backbone (mean over seeds, bars: sd)."""
    if change.empty:
        return save(message_figure("no representations.csv in the selected runs (repr_images=0, or runs made "
                                   "before studylib measured feature change)"), path)
    cases = _cases(change)
    fig, axes = panel_grid(len(cases), width=4.4, height=3.8)
    several = change.protocol.nunique() > 1
    for axis, (keys, group) in zip(axes, cases):
        blocks = list(dict.fromkeys(group.sort_values("order").block))
        for i, strategy in enumerate(_ordered(group.arm)):
            part = group[group.arm == strategy].set_index("block").reindex(blocks)
            axis.errorbar(range(len(blocks)), part.cka, yerr=part.cka_sd.fillna(0), marker="o", capsize=2,
                          label=label(strategy), color=strategy_colour(strategy), linestyle="--" if i >= 10 else "-")
        axis.set_xticks(range(len(blocks)), blocks, rotation=30, ha="right")
        low = float(np.nanmin(group.cka)) if np.isfinite(group.cka).any() else 0.0
        axis.set(ylim=(min(0.9, low - 0.05), 1.01), xlabel="block (input -> output)",
                 ylabel="CKA to the starting network", title=_case_title(keys, several))
        axis.grid(alpha=0.3)
    axes[-1].legend(fontsize=8, loc="lower left", ncol=2, title="1 = features unchanged", title_fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def change_vs_gain(relation: pd.DataFrame, path: Path | None = None, metric: str = DEFAULT_METRIC) -> plt.Figure:
    """Top-block CKA against the paired gain over FT, one point per strategy and case."""
    relation = relation.dropna(subset=["cka_top", "gain"])
    if relation.empty:
        return save(message_figure("no strategy has both feature change and a gain over FT"), path)
    fig, axis = plt.subplots(figsize=(5.6, 3.8))
    for strategy in _ordered(relation.arm):
        part = relation[relation.arm == strategy]
        axis.scatter(part.cka_top, part.gain, color=strategy_colour(strategy), label=label(strategy))
    axis.axhline(0, color="grey", lw=0.8)
    axis.set(xlabel="CKA of the top backbone block to the start (1 = unchanged)",
             ylabel=f"gain in test {metric_name(metric)} over FT",
             title="how far the top features moved vs what it bought")
    axis.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return save(fig, path)


def reliability_diagram(run_dir: str | Path, path: Path | None = None) -> plt.Figure:
    """Accuracy against mean confidence per bin (equal width and equal mass) of one run's test predictions,
    with the ECE in the title; written to RUN/figures/reliability_diagram.png unless `path` says otherwise."""
    import json

    run_dir = Path(run_dir)
    table = pd.read_csv(run_dir / runfiles.RELIABILITY)
    test = json.loads((run_dir / runfiles.METRICS).read_text())["test"]
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.8))
    for axis, scheme, ece in zip(axes, ("width", "mass"), (test.get("ece"), test.get("ece_mass"))):
        part = table[table.scheme == scheme]
        axis.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="perfectly calibrated")
        width = (part.high - part.low).clip(lower=0.01)
        axis.bar(part.low, part.accuracy, width=width, align="edge", alpha=0.5, edgecolor="C0", label="accuracy")
        axis.scatter(part.confidence, part.accuracy, s=8 + 60 * part.images / part.images.max(), color="C0",
                     zorder=3, label="bin (size: images)")
        axis.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean confidence (top class)", ylabel="accuracy",
                 title=f"equal-{scheme} bins: ECE {ece:.3f}" if ece is not None else f"equal-{scheme} bins")
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle(f"{_title(run_dir)}: reliability on test (Brier {test.get('brier', np.nan):.3f}, "
                 f"NLL {test.get('nll', np.nan):.3f})", fontsize=9)
    fig.tight_layout()
    return save(fig, path if path is not None else run_dir / "figures" / "reliability_diagram.png")


def calibration_gains(gains: pd.DataFrame, path: Path | None = None) -> plt.Figure:
    """Improvement over FT (FT's error minus the strategy's) of ECE, Brier and NLL with 95% intervals; one
    panel per metric, a row per strategy; filled markers: the corrected verdict is better or worse."""
    gains = gains.dropna(subset=["gain"]) if len(gains) else gains
    if gains.empty:
        return save(message_figure("no calibration gains: the runs need FT and another strategy (3+ seeds for "
                                   "intervals)"), path)
    metrics = list(dict.fromkeys(gains.metric))
    rows = int(gains.groupby("metric").size().max())
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 1.2 + 0.35 * rows), squeeze=False)
    for axis, metric in zip(axes[0], metrics):
        part = gains[gains.metric == metric].reset_index(drop=True)
        keys = [k for k in ("protocol", "dataset", "backbone") if part[k].nunique() > 1]
        names = [label(r.arm) + (f" ({', '.join(str(getattr(r, k)) for k in keys)})" if keys else "")
                 for r in part.itertuples()]
        y = np.arange(len(part))
        decided = part.verdict.isin(["better", "worse"]).to_numpy()
        err = np.vstack([part.gain - part.low, part.high - part.gain]).clip(min=0)
        axis.errorbar(part.gain, y, xerr=np.nan_to_num(err), fmt="none", ecolor="grey", capsize=2)
        axis.scatter(part.gain[decided], y[decided], color="C0", zorder=3, label="better / worse (corrected)")
        axis.scatter(part.gain[~decided], y[~decided], facecolor="white", edgecolor="C0", zorder=3,
                     label="no verdict")
        axis.axvline(0, color="grey", lw=0.8)
        axis.set_yticks(y, names, fontsize=8)
        axis.invert_yaxis()
        axis.set(xlabel=f"{metric.upper() if metric != 'brier' else 'Brier'} improvement over FT "
                        "(> 0: better calibrated)")
    axes[0, 0].legend(fontsize=8, loc="best")
    fig.tight_layout()
    return save(fig, path)


def labelled_fraction(table: pd.DataFrame, metric: str = DEFAULT_METRIC, path: Path | None = None) -> plt.Figure:
    """Test score against the labelled share of the training split (or images per class for k-shot runs), log
    x axis, a line per strategy with its 95% interval over seeds; one panel per setting x dataset x backbone x
    axis. Tick labels give the mean number of training images actually used (whole groups can exceed a share)."""
    if table.empty:
        return save(message_figure("no few-labels grid here: run params/efficiency.yaml (train_fraction varies)"), path)
    cases = list(table.groupby(["setting", "dataset", "backbone", "axis"], sort=True))
    fig, axes = panel_grid(len(cases), width=4.4, height=3.9)
    for axis, ((setting, dataset, backbone, kind), group) in zip(axes, cases):
        share = kind == "train_fraction"
        for strategy in _ordered(group.arm):
            part = group[group.arm == strategy].sort_values("labelled")
            axis.plot(part.labelled, part["mean"], marker="o", color=strategy_colour(strategy), label=label(strategy))
            axis.fill_between(part.labelled, part.low, part.high, color=strategy_colour(strategy), alpha=0.12)
        axis.set_xscale("log")
        ticks = group.groupby("labelled").train_images.mean()
        axis.set_xticks(list(ticks.index), [(f"{t:.0%}" if share else f"{int(t)}") +
                                            (f"\n{n:.0f} img" if np.isfinite(n) else "") for t, n in ticks.items()])
        axis.minorticks_off()
        axis.set(xlabel="labelled share of the training split (log scale)" if share
                 else "labelled images per class (log scale)", ylabel=f"test {metric_name(metric)}",
                 title=f"{dataset} | {backbone}" + (f" | {setting}" if table.setting.nunique() > 1 else ""))
        axis.grid(alpha=0.3)
    axes[-1].legend(fontsize=8, ncol=2, loc="lower right")
    fig.tight_layout()
    return save(fig, path)
