"""Figures of the decisions (study.decisions): which strategy for my data, and performance profiles of the gains."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..core.config import metric_name
from ..core.constants import DEFAULT_METRIC, PRACTICAL, ROPE
from ..training.strategies import strategy_label as label
from .runfigures import save
from .studyfigures import _ordered, message_figure, panel_grid, strategy_colour

MIN_CASES = 3  # a profile over fewer cases is a step or two: the gain table says more
STANDING_COLOURS = {"p_worse": "#c0504d", "p_equivalent": "#4f81bd", "rest": "#d9d9d9"}


def which_strategy(table: pd.DataFrame, path: Path | None = None, metric: str = DEFAULT_METRIC,
                   rope: float = ROPE) -> plt.Figure:
    """One panel per protocol x modality x backbone: for every strategy but the best, the posterior probability that
    it is worse than the best beyond the ROPE (red) and that it is practically equivalent to it (blue), on its least
    favourable case; a dashed line at PRACTICAL. The recommended strategy is starred, the best named in the title."""
    if table.empty:
        return save(message_figure("no decision to show: a group needs two strategies on the same cases"), path)
    groups = table.groupby(["protocol", "modality", "backbone"], sort=False)
    fig, axes = panel_grid(len(groups), width=4.3, height=1.1 + 0.42 * table.arm.nunique())
    several = table.protocol.nunique() > 1
    for axis, ((protocol, kind, backbone), group) in zip(axes, groups):
        top = group[group.standing == "best"].arm.iloc[0]
        others = group[group.standing != "best"].set_index("arm").reindex(
            [a for a in _ordered(group.arm) if a != top])
        names = [label(a) + (" *" if others.loc[a, "recommended"] else "") for a in others.index]
        rows = np.arange(len(others))
        worse = others.p_worse.fillna(0).to_numpy(dtype=float)
        equivalent = others.p_equivalent.fillna(0).to_numpy(dtype=float)
        axis.barh(rows, worse, color=STANDING_COLOURS["p_worse"], label="p(worse than the best)")
        axis.barh(rows, equivalent, left=worse, color=STANDING_COLOURS["p_equivalent"],
                  label="p(practically equivalent)")
        axis.barh(rows, 1 - worse - equivalent, left=worse + equivalent, color=STANDING_COLOURS["rest"])
        axis.axvline(PRACTICAL, color="black", ls="--", lw=1)
        axis.set_yticks(rows, names)
        for tick, arm in zip(axis.get_yticklabels(), others.index):
            tick.set_color(strategy_colour(arm))
        axis.invert_yaxis()
        axis.set_xlim(0, 1)
        axis.set_xlabel(f"posterior probability (ROPE +-{rope:g} {metric_name(metric)})")
        star = " *" if group[group.arm == top].recommended.iloc[0] else ""
        axis.set_title(f"{kind} / {backbone}" + (f" ({protocol})" if several else "")
                       + f"\nbest: {label(top)}{star}; * = cheapest as good", fontsize=10)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=2, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.1 if len(axes) <= 4 else 0.04, 1, 1))
    return save(fig, path)


def performance_profile(profile: pd.DataFrame, path: Path | None = None, metric: str = DEFAULT_METRIC) -> plt.Figure:
    """The share of cases whose mean gain over FT is above t, against t, one line per strategy (one panel per protocol
    group): a line further right and higher gains more often and by more; where it crosses 0.5 is the median gain."""
    if profile.empty or profile.cases.max() < MIN_CASES:
        return save(message_figure(f"a performance profile needs at least {MIN_CASES} dataset x backbone cases per "
                                   "strategy"), path)
    groups = profile.groupby("protocol", sort=False)
    fig, axes = panel_grid(len(groups), width=4.3, height=3.6)
    for axis, (protocol, group) in zip(axes, groups):
        for arm in _ordered(group.arm):
            line = group[group.arm == arm]
            axis.plot(line.threshold, line.share, drawstyle="steps-post", color=strategy_colour(arm), lw=1.8,
                      label=f"{label(arm)} ({line.cases.iloc[0]} cases)")
        axis.axvline(0, color="0.5", lw=1, ls=":")
        axis.set(xlabel=f"gain in test {metric_name(metric)} over FT, t", ylabel="share of cases with gain > t",
                 ylim=(-0.02, 1.02), title=protocol if groups.ngroups > 1 else "performance profile of the gains")
        axis.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, path)
