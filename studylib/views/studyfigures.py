"""Figures of a whole grid: gains over FT, accuracy, per-block learning rates, unfreezing timelines, cost.

Each function returns the figure and, given `path`, writes it as PNG (headless notebooks keep
their figures that way).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..core import runfiles
from ..core.config import metric_name
from ..core.constants import DEFAULT_METRIC
from ..training.strategies import list_strategies
from ..training.strategies import strategy_label as label
from .runfigures import save

PANELS_PER_ROW = 4  # at 4.2 in a panel and 110 dpi a row stays under 2,000 px, whatever the number of cases


def panel_grid(count: int, width: float = 4.2, height: float = 3.2):
    """A figure of `count` panels wrapped PANELS_PER_ROW to a row; returns it and the used axes, in order."""
    count = max(1, count)
    columns = min(count, PANELS_PER_ROW)
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False)
    for axis in axes.flat[count:]:
        axis.axis("off")
    return fig, list(axes.flat[:count])


def _ordered(strategies) -> list[str]:
    """The registry's order (the study's eight first), then any strategy no longer registered."""
    known = [s for s in list_strategies() if s in set(strategies)]
    return known + sorted(set(strategies) - set(known))


def gain_heatmap(summary: pd.DataFrame, path: Path | None = None, title: str = "") -> plt.Figure:
    """Gain of each strategy over FT (rows) per dataset x backbone (columns); hatched = inside the noise."""
    if summary.empty:
        return save(message_figure("no gains to show: the results need FT and at least one other strategy"), path)
    frame = summary.assign(case=summary.dataset + "\n" + summary.backbone)
    if summary.protocol.nunique() > 1:  # groups are compared apart: one column per group and case
        frame["case"] = frame.case + "\n" + frame.protocol
    table = frame.pivot_table(index="arm", columns="case", values="gain", aggfunc="mean")
    table = table.reindex(_ordered(table.index)).rename(index=label)
    noise = frame.pivot_table(index="arm", columns="case", values="verdict", aggfunc="first")
    noise = noise.reindex(_ordered(noise.index)).rename(index=label)
    if table.shape[1] > table.shape[0]:  # many cases: one row each, so the figure grows down, not across
        table, noise = table.T, noise.T
        table.index = noise.index = [c.replace("\n", " / ") for c in table.index]
    limit = np.nanmax(np.abs(table.to_numpy())) if np.isfinite(table.to_numpy()).any() else 0.1
    fig, axis = plt.subplots(figsize=(1.6 + 1.3 * table.shape[1], 0.8 + 0.45 * table.shape[0]))
    image = axis.imshow(table.to_numpy(dtype=float), cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    for (i, j), value in np.ndenumerate(table.to_numpy(dtype=float)):
        verdict = noise.iat[i, j]
        text = ("missing" if not np.isfinite(value)
                else f"{value:+.3f}" + ("" if verdict in ("better", "worse") else "~"))
        dark = np.isfinite(value) and abs(value) > 0.6 * limit  # the colour map's ends are dark: white text there
        axis.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
    axis.set(xticks=range(table.shape[1]), yticks=range(table.shape[0]),
             title=title or "gain in test balanced accuracy over FT (~: no verdict: inside the noise or too few seeds)")
    axis.set_xticklabels(table.columns, fontsize=8)
    axis.set_yticklabels(table.index)
    fig.colorbar(image, ax=axis, label="gain over FT")
    return save(fig, path)


def chance_level(metric: str, classes: int | None) -> float | None:
    """What guessing scores: balanced accuracy 1/k, AUROC 0.5, kappa 0; None where it depends on the data."""
    if metric == "balanced_accuracy" and classes:
        return 1 / classes
    return {"auroc": 0.5, "kappa": 0.0}.get(metric)


def accuracy_bars(table: pd.DataFrame, path: Path | None = None, metric: str = DEFAULT_METRIC,
                  classes: int | None = None) -> plt.Figure:
    """Mean +- sd over seeds of the test metric per strategy, one panel per dataset x backbone; the axis
    zoomed to the data (differences of a few points stay visible) with the chance level marked.

    Args:
        table: accuracy_table's output: mean and std over seeds per protocol, dataset, backbone and arm.
        path: PNG file the figure is saved to; None: not saved.
        metric: the test metric in `table` (axis label and chance level).
        classes: number of classes, for balanced accuracy's chance level 1/k; None: no such line.
    """
    cases = table.groupby(["protocol", "dataset", "backbone"])
    several = table.protocol.nunique() > 1
    chance = chance_level(metric, classes)
    fig, axes = panel_grid(len(cases))
    for axis, ((protocol, dataset, backbone), group) in zip(axes, cases):
        group = group.set_index("arm").reindex(_ordered(group.arm))
        spread = group["std"].fillna(0)
        axis.errorbar(range(len(group)), group["mean"], yerr=spread, fmt="o", color="C0", capsize=3)
        low, high = np.nanmin(group["mean"] - spread), np.nanmax(group["mean"] + spread)
        if chance is not None:
            axis.axhline(chance, color="grey", ls="--", lw=0.8, label=f"chance ({chance:.2f})")
            low = min(low, chance)
            axis.legend(fontsize=8, loc="lower right")
        margin = 0.08 * max(high - low, 0.02)
        axis.set_xticks(range(len(group)), [label(s) for s in group.index], rotation=60, ha="right")
        axis.set(title=f"{dataset} | {backbone}" + (f" | {protocol}" if several else ""),
                 ylabel=f"test {metric_name(metric)}", ylim=(low - margin, high + margin))
    fig.tight_layout()
    return save(fig, path)


def unfreezing_timeline(runs: dict[str, str | Path], path: Path | None = None) -> plt.Figure:
    """Which blocks train at each epoch, one panel per strategy (gradual unfreezing, LP-FT, ...)."""
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(1, max(1, len(runs)), figsize=(4.2 * max(1, len(runs)), 3.2), squeeze=False)
    for axis, (name, run) in zip(axes[0], runs.items()):
        layers = pd.read_csv(Path(run) / runfiles.LAYERS)
        blocks = list(dict.fromkeys(layers.block))
        table = layers.pivot(index="block", columns="epoch", values="trainable").reindex(blocks).astype(float)
        axis.imshow(table.to_numpy(), cmap="Greens", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        axis.set_xticks(range(table.shape[1]), table.columns)
        axis.set(yticks=range(len(blocks)), yticklabels=blocks, xlabel="epoch",
                 title=f"{label(name)}: trainable blocks")
    fig.legend(handles=[Patch(facecolor=plt.cm.Greens(1.0), edgecolor="grey", label="trains"),
                        Patch(facecolor=plt.cm.Greens(0.0), edgecolor="grey", label="frozen")],
               loc="upper right", fontsize=8, ncol=2)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return save(fig, path)


def cost_frontier(table: pd.DataFrame, path: Path | None = None, metric: str = DEFAULT_METRIC) -> plt.Figure:
    """Test metric against each cost (measures.frontier), one point per strategy and case; the strategies on a
    case's Pareto frontier are ringed and joined: the cheapest way to each level of accuracy."""
    from ..study.measures import COSTS

    fig, axes = plt.subplots(1, len(COSTS), figsize=(12, 3.8), squeeze=False)
    for axis, (cost, name) in zip(axes[0], COSTS.items()):
        for _, case in table.dropna(subset=[cost]).groupby(["protocol", "dataset", "backbone"]):
            edge = case[case[f"frontier_{cost}"]].sort_values(cost)
            axis.plot(edge[cost], edge["mean"], color="0.6", lw=1, zorder=1, drawstyle="steps-post")
            for row in case.itertuples():
                on = getattr(row, f"frontier_{cost}")
                axis.scatter(getattr(row, cost), row.mean, color=strategy_colour(row.arm), zorder=2, s=36,
                             edgecolors="black" if on else "none", linewidths=1.2,
                             label=label(row.arm) if axis is axes[0][0] else None)
        if (pd.to_numeric(table[cost], errors="coerce") > 0).any() and cost != "peak_memory_mb":
            axis.set_xscale("log")
        axis.set(xlabel=name, title=f"{name}: ringed = on the frontier")
        axis.title.set_fontsize(9)
    axes[0][0].set_ylabel(f"test {metric_name(metric)} (mean over seeds)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if unique:
        fig.legend(unique.values(), unique.keys(), loc="lower center", ncol=min(len(unique), 7), fontsize=8,
                   frameon=False)
    fig.tight_layout(rect=(0, 0.08 + 0.04 * (len(unique) // 8), 1, 1))
    return save(fig, path)


def cd_diagram(test, path: Path | None = None, title: str = "", axis: plt.Axes | None = None) -> plt.Figure:
    """Critical-difference diagram (Demsar 2006) of a stats.RankTest: mean ranks on an axis, 1 = best;
    a bar joins strategies the post-hoc test cannot tell apart at 0.05 (drawn by scikit-posthocs).
    When the Friedman test finds no difference, no post-hoc is read and one bar joins them all.

    Args:
        test: a stats.RankTest: mean ranks, pairwise p-values, the Friedman p-value.
        path: PNG file the figure is saved to; None: not saved.
        title: the title; "": one naming the blocks, the Friedman p-value and the verdict.
        axis: axes to draw on, in a figure of the caller's (that figure is saved); None: a new figure.
    """
    import scikit_posthocs as sp

    fig = None
    if axis is None:
        fig, axis = plt.subplots(figsize=(7.5, 1.4 + 0.22 * len(test.ranks)))
    ranks, pairwise = test.ranks.rename(index=label), test.pairwise_p.rename(index=label, columns=label)
    colours = {label(s): strategy_colour(s) for s in test.ranks.index}  # the colours of every other figure
    sp.critical_difference_diagram(ranks, pairwise, ax=axis, alpha=0.05, color_palette=colours,
                                   label_fmt_left="{label} ({rank:.2f})", label_fmt_right="({rank:.2f}) {label}")
    posthoc = "Nemenyi" if test.posthoc == "nemenyi" else "Wilcoxon-Holm"
    verdict = (f"bars: no significant difference ({posthoc}, 0.05)" if test.rejected else
               "no difference detected: no post-hoc, one bar joins all")
    axis.set_title(title or f"mean rank (1 = best) over {test.blocks}\nFriedman p = {test.friedman_p:.3g}; {verdict}"
                   + (f"\n{test.note}" if test.note else ""), fontsize=9)
    fig = fig or axis.figure
    fig.tight_layout()
    return save(fig, path)


def cd_diagrams(tests: dict, path: Path | None = None, metric: str = DEFAULT_METRIC) -> plt.Figure:
    """One critical-difference diagram per protocol group, stacked (the explorer's view)."""
    if not tests:
        return save(message_figure("a critical-difference diagram needs at least 3 strategies and 2 cases or seeds"),
                    path)
    heights = [1.4 + 0.22 * len(t.ranks) for t in tests.values()]
    fig, axes = plt.subplots(len(tests), 1, figsize=(7.5, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for axis, (protocol, test) in zip(axes[:, 0], tests.items()):
        verdict = "bars: no significant difference" if test.rejected else "no difference detected (no post-hoc)"
        cd_diagram(test, None, f"{protocol}: mean rank of test {metric_name(metric)} over {test.blocks}\n"
                               f"Friedman p = {test.friedman_p:.3g}; {verdict}", axis=axis)
    return save(fig, path)


def recall_bars(table: pd.DataFrame, path: Path | None = None) -> plt.Figure:
    """Mean test recall of each class (x) per strategy (bars), one panel per dataset x backbone: where a
    strategy's gain comes from, and which class a 14:1 test set hides in the average."""
    if table.empty:
        return save(message_figure("no per-class results: the runs' metrics.json has no class names"), path)
    cases = table.groupby(["protocol", "dataset", "backbone"], sort=False)
    fig, axes = panel_grid(len(cases))
    for axis, ((_protocol, dataset, backbone), group) in zip(axes, cases):
        classes = list(dict.fromkeys(group["class"]))
        strategies = _ordered(group.arm)
        width = 0.8 / len(strategies)
        for i, strategy in enumerate(strategies):
            values = group[group.arm == strategy].set_index("class").recall.reindex(classes)
            axis.bar(np.arange(len(classes)) + (i - (len(strategies) - 1) / 2) * width, values, width,
                     label=label(strategy), color=strategy_colour(strategy))
        axis.set_xticks(range(len(classes)), classes, rotation=30 if len(classes) > 4 else 0, ha="right"
                        if len(classes) > 4 else "center")
        axis.set(ylim=(0, 1.05), ylabel="test recall (mean over seeds)", title=f"{dataset} | {backbone}")
    axes[0].legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return save(fig, path)


def confusion_grid(matrices: dict[str, np.ndarray], classes: list[str], title: str,
                   path: Path | None = None) -> plt.Figure:
    """One confusion matrix per strategy (counts summed over seeds; colour: share of the true class).

    Args:
        matrices: arm -> confusion matrix of counts (rows: true class), summed over seeds.
        classes: class names, in label order.
        title: the figure's title.
        path: PNG file the figure is saved to; None: not saved.
    """
    names = _ordered(matrices)
    fig, axes = panel_grid(len(names), width=3.4, height=3.2)
    for axis, name in zip(axes, names):
        counts = matrices[name]
        with np.errstate(invalid="ignore", divide="ignore"):
            share = counts / counts.sum(1, keepdims=True)
        axis.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for (i, j), n in np.ndenumerate(counts):
            axis.text(j, i, f"{int(n)}", ha="center", va="center", fontsize=8,
                      color="white" if np.nan_to_num(share[i, j]) > 0.6 else "black")
        ticks = range(len(classes))
        axis.set_xticks(ticks, classes, rotation=45, ha="right", fontsize=8)
        axis.set_yticks(ticks, classes, fontsize=8)
        axis.set(xlabel="predicted", ylabel="true", title=label(name))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, path)


SOURCE_MARKERS = "osD^v"


def source_gains(table: pd.DataFrame, path: Path | None = None, metric: str = DEFAULT_METRIC) -> plt.Figure:
    """One panel per case: each strategy's paired gain of every source of weights over the reference source (a point
    per source, its 95% interval as a line), strategies in their colours; right of the zero line, the source helped.

    Args:
        table: sources.source_gains' table (arm, dataset, backbone, source, reference, gain, low, high, verdict).
        path: PNG to write; None: not saved.
        metric: the compared metric, for the axis label.
    """
    if table.empty:
        return save(message_figure("no sources to compare: the grid has one value of weights"), path)
    cases = table.groupby(["dataset", "backbone"], sort=False)
    arms = _ordered(table.arm.unique())
    origins = list(dict.fromkeys(table.source))
    fig, axes = panel_grid(len(cases), width=4.6, height=1.2 + 0.38 * len(arms) * max(1, len(origins) ** 0.5))
    for axis, ((dataset, backbone), case) in zip(axes, cases):
        for k, source in enumerate(origins):
            rows = case[case.source == source].set_index("arm").reindex(arms)
            y = np.arange(len(arms)) + (k - (len(origins) - 1) / 2) * 0.25
            for row, (arm, r) in zip(y, rows.iterrows()):
                if pd.notna(r.gain):
                    axis.plot([r.low, r.high], [row, row], color=strategy_colour(arm), lw=2)
                    axis.plot(r.gain, row, SOURCE_MARKERS[k % len(SOURCE_MARKERS)], color=strategy_colour(arm),
                              mfc="white" if r.verdict not in ("better", "worse") else strategy_colour(arm),
                              label=source if arm == arms[0] else None)
        axis.axvline(0, color="black", lw=1)
        axis.set_yticks(np.arange(len(arms)), [label(a) for a in arms])
        for tick, arm in zip(axis.get_yticklabels(), arms):
            tick.set_color(strategy_colour(arm))
        axis.invert_yaxis()
        axis.set_xlabel(f"gain in test {metric_name(metric)} over {case.reference.iloc[0]}")
        axis.set_title(f"{dataset} / {backbone}" + (f": from {origins[0]}" if len(origins) == 1 else ""), fontsize=10)
    if len(origins) > 1:
        axes[0].legend(fontsize=8, frameon=False)
    fig.text(0.01, 0.005, "filled: beyond the noise (corrected); open: inside it", fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return save(fig, path)


def strategy_colour(strategy: str) -> str:
    """One colour per strategy in every figure, by its place in the registry: the study's eight keep matplotlib's
    first eight (C0-C7), the next two C8-C9, then tab20's light shades, so 20 registered strategies never share one."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    known = list_strategies()
    index = known.index(strategy) if strategy in known else len(known) + sum(map(ord, strategy))
    index %= 20
    return f"C{index}" if index < 10 else to_hex(colormaps["tab20"](2 * (index - 10) + 1))


def message_figure(message: str) -> plt.Figure:
    fig, axis = plt.subplots(figsize=(6, 1.5))
    axis.axis("off")
    axis.text(0.5, 0.5, message, ha="center", va="center")
    return fig
