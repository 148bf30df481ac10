"""Helpers for the teaching notebook: what each strategy trains, epoch by epoch, without training."""
from __future__ import annotations

import functools
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..core import runfiles
from ..core.config import RunConfig, metric_name
from ..core.constants import BASELINE
from ..core.fileio import read_json_dict_or_empty
from ..core.knobs import OWNERS
from ..data.datasets import load_dataset
from ..models.backbones import create_backbone
from ..study.mini import stage_lengths
from ..training.engine import Device
from ..training.runner import make_trainer
from ..training.strategies import STUDY_STRATEGIES
from .runfigures import display_widget, epoch_step, save
from .studyfigures import strategy_colour


def strategy_plan(strategy: str, backbone: str = "tinycnn", epochs: int = 8, **fields) -> pd.DataFrame:
    """Per epoch x block: does it train, at which learning rate (before the cosine schedule).

    Plans are asked of the strategy at initial weights; Auto-RGN and Auto-SNR probe a few
    batches of the synthetic data for their gradient statistics.
    """
    cfg = RunConfig.from_dict({"strategy": strategy, "backbone": backbone, "max_epochs": epochs, "image_size": 32,
                               "synthetic_size": 96, "batch_size": 16, "device": "cpu", "quiet": True,
                               **stage_lengths(epochs), **fields})
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


# The sliders of the plan explorer: knob -> (what the slider says, min, max, step); the strategies a slider
# changes are the knob's owners (core/knobs.py).
PLAN_SETTINGS = {
    "lp_epochs": ("LP-FT: LP epochs", 1, 6, 1),
    "gu_epochs_per_stage": ("G-LF / G-FL: epochs per stage", 1, 3, 1),
    "lpft_lr_factor": ("LP-FT: rate factor", -3, 0, 0.5),  # log10 slider
    "dlr_decay": ("Discr. LR: decay per block", 0.1, 1.0, 0.05),
}
# The SP strategies' alpha changes the loss, not the plan: its sliders (log10 of alpha) redraw the pull figure.
PENALTY_SETTINGS = {
    "l1sp_alpha": ("L1-SP: α", -6, -1, 0.5),
    "l2sp_alpha": ("L2-SP: α", -4, 0, 0.5),
}
LOG_SLIDERS = ("lpft_lr_factor", *PENALTY_SETTINGS)
LOG_LR_SCALE = (-7.0, -2.0)  # log10 learning rate at the ends of the plan maps' colour scale (the default rate is
# 1e-3; LP-FT's factor reaches 1e-6, Auto-RGN's smallest rates about 2e-7); rates beyond it take the end colours
# Under a panel's title: what the map alone does not show (formatted with the settings).
PANEL_NOTES = {"auto_rgn": "illustration: rates at the initial weights", "auto_snr": "illustration: initial weights",
               "l1_sp": "all train, + α·Σ|w − w0|, α = {l1sp_alpha:.2g}",
               "l2_sp": "all train, + α/2·‖w − w0‖², α = {l2sp_alpha:.2g}",
               "bitfit": "in each block only the biases train", "norm_tune": "in each block only the norm layers train",
               "lora": "in each block only rank-{lora_rank} updates of its layers train",
               "ssf": "in each block only an added scale and shift per norm channel train",
               "bss": "all train, + η·(smallest σ² of the batch's features)",
               "delta": "all train, + α·Σ W_c‖FM_c − FM⁰_c‖² per block end"}


def plan_figure(strategies: list[str], backbone: str = "tinycnn", epochs: int = 8, path=None,
                settings: dict | None = None, columns: int = 4) -> plt.Figure:
    """One learning-rate map per strategy on a shared colour scale, in a grid; rows are blocks, blank = frozen.

    `settings` (config fields such as lp_epochs) apply to the strategies that use them. A strategy whose
    settings cannot run in `epochs` (gradual unfreezing with too long stages) shows the reason instead.

    Args:
        strategies: strategy names, one panel each.
        backbone: backbone whose blocks make the rows.
        epochs: epochs planned (the columns of each map).
        path: PNG file the figure is saved to; None: not saved.
        settings: config fields (e.g. lp_epochs) applied to the strategies that read them.
        columns: panels per row, at most.
    """
    from ..training.strategies import strategy_label

    plans = {s: cached_plan(s, backbone, epochs, _relevant(s, settings or {})) for s in strategies}
    maps = {s: _log_lr_map(p) for s, p in plans.items() if isinstance(p, pd.DataFrame)}
    low, high = LOG_LR_SCALE  # one scale for every panel, selection and copy: a colour always means one rate
    columns = max(1, min(columns, len(strategies)))
    rows = -(-len(strategies) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.7 * columns + 1.6, 2.7 * rows + 0.3), squeeze=False,
                             constrained_layout=True)
    image = None
    notes = {s: note.format(**{**RunConfig().to_dict(), **(settings or {})}) for s, note in PANEL_NOTES.items()}
    for axis, strategy in zip(axes.flat, strategies):
        title = strategy_label(strategy) + (f"\n({notes[strategy]})" if strategy in notes else "")
        axis.set_title(title, fontsize=9)
        if strategy not in maps:
            axis.text(0.5, 0.5, textwrap.fill(str(plans[strategy]), 30), ha="center", va="center", fontsize=9,
                      transform=axis.transAxes)
            axis.set_axis_off()
            continue
        table = maps[strategy]
        image = axis.imshow(table.to_numpy(), aspect="auto", cmap="viridis", interpolation="nearest",
                            vmin=low, vmax=high)
        first = axis.get_subplotspec().is_first_col()
        axis.set(xlabel="epoch", yticks=range(len(table)), yticklabels=list(table.index) if first else [])
        axis.set_xticks(range(0, len(table.columns), epoch_step(len(table.columns))))
    for axis in list(axes.flat)[len(strategies):]:
        axis.set_axis_off()
    if image is not None:
        bar = fig.colorbar(image, ax=axes, label="learning rate (log scale; blank = frozen)", shrink=0.9,
                           extend="both")
        ticks = np.arange(np.ceil(low), np.floor(high) + 1)
        bar.set_ticks(ticks, labels=[f"1e{int(t)}" for t in ticks])
    return save(fig, path)


def sp_pull_figure(l1sp_alpha: float | None = None, l2sp_alpha: float | None = None,
                   strategies=("l1_sp", "l2_sp"), path=None) -> plt.Figure:
    """How hard each SP penalty pulls a backbone weight back to its pretrained value w0, by how far the
    weight moved: the penalty's gradient, α for L1-SP whatever the distance, α·|w − w0| for L2-SP.

    Args:
        l1sp_alpha: L1-SP's α; None: the RunConfig default.
        l2sp_alpha: L2-SP's α; None: the RunConfig default.
        strategies: which curves to draw: "l1_sp", "l2_sp" or both.
        path: PNG file the figure is saved to; None: not saved.
    """
    defaults = RunConfig()
    l1 = defaults.l1sp_alpha if l1sp_alpha is None else l1sp_alpha
    l2 = defaults.l2sp_alpha if l2sp_alpha is None else l2sp_alpha
    distance = np.logspace(-4, 0, 200)
    fig, axis = plt.subplots(figsize=(6.2, 3.4), constrained_layout=True)
    if "l1_sp" in strategies:
        axis.plot(distance, np.full_like(distance, l1), label=f"L1-SP: α·sign(w − w0), α = {l1:.2g}")
    if "l2_sp" in strategies:
        axis.plot(distance, l2 * distance, label=f"L2-SP: α·(w − w0), α = {l2:.2g}")
    if {"l1_sp", "l2_sp"} <= set(strategies) and l2 > 0 and 1e-4 <= l1 / l2 <= 1:
        axis.axvline(l1 / l2, color="grey", linestyle=":")
        axis.annotate(f"equal pull at |w − w0| = {l1 / l2:.2g}", (l1 / l2, l1), textcoords="offset points",
                      xytext=(6, 8), fontsize=8, color="dimgrey")
    axis.set(xscale="log", yscale="log", xlabel="|w − w0|: how far a backbone weight moved from its pretrained value",
             ylabel="pull back to w0\n(gradient of the penalty)",
             title="SP penalties: L1 pulls every moved weight equally, L2 like a spring")
    axis.title.set_fontsize(10)
    axis.legend(fontsize=8, loc="lower right")
    return save(fig, path)


def _relevant(strategy: str, settings: dict) -> tuple:
    """The settings that change this strategy's plan, as a hashable key."""
    return tuple(sorted((k, v) for k, v in settings.items() if k in PLAN_SETTINGS and strategy in OWNERS[k]))


@functools.lru_cache(maxsize=256)
def cached_plan(strategy: str, backbone: str, epochs: int, settings: tuple) -> pd.DataFrame | str:
    """strategy_plan, remembered (a slider redraws only what changed); a refused setting returns its message.

    Args:
        strategy: strategy name.
        backbone: backbone name.
        epochs: epochs planned.
        settings: (field, value) pairs that change this plan, hashable for the cache (see _relevant).
    """
    from ..training.runner import check_config

    try:
        check_config(RunConfig.from_dict({"strategy": strategy, "backbone": backbone, "max_epochs": epochs,
                                          **stage_lengths(epochs), **dict(settings)}))
    except ValueError as err:  # ConfigError: e.g. gradual-unfreezing stages that do not fit the epochs
        return f"not possible with these settings:\n{err}"
    return strategy_plan(strategy, backbone, epochs, **dict(settings))


def show_in(output, *figures: plt.Figure | None, empty: str = "pick at least one strategy") -> None:
    """Shows the figures (or `empty` when there is none) in an ipywidgets Output, then closes them: pyplot
    would otherwise show stale copies below the widget when the cell ends."""
    from IPython.display import Image, display

    from .runfigures import png_bytes

    shown = [f for f in figures if f is not None]
    with output:
        output.clear_output(wait=True)  # the PNG studylib writes (its dpi and size), not the inline backend's
        # one display message for all figures: a redraw is never left half-shown when the next one starts
        display(*[Image(data=png_bytes(f), unconfined=True) for f in shown]) if shown else print(empty)
    for figure in shown:
        plt.close(figure)


class PlanExplorer:
    """Pick strategies by name, move their settings, and see each one's plan redrawn: which blocks train
    in which epoch, at which rate. Nothing trains: plans are asked of the strategies directly."""

    def __init__(self, backbone: str = "tinycnn", epochs: int = 8, strategies=("ft", "lp", "gu_last_first", "lp_ft")):
        import ipywidgets as widgets

        from ..training.strategies import STRATEGIES, strategy_label

        names = list(STUDY_STRATEGIES) + [n for n in STRATEGIES.names() if n not in STUDY_STRATEGIES]
        self.backbone = backbone
        self.picker = widgets.SelectMultiple(options=[(strategy_label(n), n) for n in names], value=tuple(strategies),
                                             rows=len(names), description="strategies")  # every option in sight
        style, row = {"description_width": "200px"}, widgets.Layout(width="500px")  # one track length for all
        self.epochs = widgets.IntSlider(value=epochs, min=4, max=16, description="epochs", continuous_update=False,
                                        style=style, layout=row)
        self.sliders = {}
        for field_name, (text, low, high, step) in {**PLAN_SETTINGS, **PENALTY_SETTINGS}.items():
            default = getattr(RunConfig(), field_name)
            if field_name in LOG_SLIDERS:
                slider = widgets.FloatLogSlider(value=default, base=10, min=low, max=high, step=step,
                                                description=text, continuous_update=False, style=style, layout=row)
            elif isinstance(step, int):
                slider = widgets.IntSlider(value=min(max(default, low), high), min=low, max=high, step=step,
                                           description=text, continuous_update=False, style=style, layout=row)
            else:
                slider = widgets.FloatSlider(value=default, min=low, max=high, step=step, description=text,
                                             continuous_update=False, style=style, layout=row)
            self.sliders[field_name] = slider
        for field_name, value in stage_lengths(epochs).items():  # stage lengths that fit the epochs
            self.sliders[field_name].value = value
        self.output = widgets.Output()
        self.figure: plt.Figure | None = None
        self.pull_figure: plt.Figure | None = None  # shown when L1-SP or L2-SP is picked
        for widget in (self.picker, self.epochs, *self.sliders.values()):
            widget.observe(lambda change: self.refresh(), names="value")
        self.refresh()

    @property
    def settings(self) -> dict:
        return {name: slider.value for name, slider in self.sliders.items()}

    def plans(self) -> dict:
        """What the figure shows: strategy -> its plan table (or the reason it cannot run)."""
        return {s: cached_plan(s, self.backbone, self.epochs.value, _relevant(s, self.settings))
                for s in self.picker.value}

    def refresh(self) -> None:
        chosen = list(self.picker.value)
        self.figure = plan_figure(chosen, self.backbone, self.epochs.value, settings=self.settings) if chosen else None
        penalised = [s for s in chosen if any(s in OWNERS[k] for k in PENALTY_SETTINGS)]
        self.pull_figure = (sp_pull_figure(self.settings["l1sp_alpha"], self.settings["l2sp_alpha"], penalised)
                            if penalised else None)
        show_in(self.output, self.figure, self.pull_figure)

    def _ipython_display_(self) -> None:
        import ipywidgets as widgets

        hint = widgets.HTML("<small>Ctrl-click (Cmd-click) adds or removes a strategy; Shift-click a range</small>")
        box = widgets.VBox([widgets.HBox([widgets.VBox([self.picker, hint]),
                                          widgets.VBox([self.epochs, *self.sliders.values()])],
                                         layout=widgets.Layout(flex_flow="row wrap")), self.output])
        display_widget(box, "the plan explorer (run the notebook to use it; the static copy above shows its maps)")


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
        changes = pd.read_csv(run / runfiles.REPRESENTATIONS) if (run / runfiles.REPRESENTATIONS).is_file() else None
        out[strategy] = {"layers": pd.read_csv(run / runfiles.LAYERS),
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
        axis.set(xlabel="epoch", yticks=range(len(blocks)), yticklabels=blocks if i == 0 else [])
        axis.set_title(f"{label(strategy)}: trained", fontsize=10)
        axis.set_xticks(range(0, plan.shape[1], epoch_step(plan.shape[1])))
    moved, changed = fig.add_subplot(bottom[0, 0]), fig.add_subplot(bottom[0, 1])
    for strategy, t in tables.items():
        if t["change"] is None:
            continue
        change = t["change"]
        x = range(len(change))
        moved.plot(x, change.rel_dist_init, marker="o", color=strategy_colour(strategy), label=label(strategy))
        changed.plot(x, change.cka, marker="o", color=strategy_colour(strategy), label=label(strategy))
        for axis in (moved, changed):
            axis.set_xticks(list(x), change.block, rotation=30, ha="right")
    moved.set(ylabel="relative weight distance\nfrom the start")
    moved.set_title("how far the weights moved\n(0 = not at all)", fontsize=10)
    changed.set(ylabel="CKA to the\nstarting features")
    changed.set_title("how much the features changed\n(1 = not at all)", fontsize=10)
    handles, names = changed.get_legend_handles_labels()
    if handles:  # below both panels, one entry per strategy in its fixed colour: five stay readable
        fig.legend(handles, names, loc="lower center", ncol=min(len(names), 6), fontsize=9, frameon=False)
    seeds = sorted({str(read_json_dict_or_empty(Path(r) / runfiles.CONFIG).get("seed", "?")) for r in runs.values()})
    fig.suptitle(f"one run per strategy, seed {', '.join(seeds)}", fontsize=10)
    fig.tight_layout(rect=(0, 0.06 if handles else 0, 1, 1))
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
        chosen = {s: self.runs[s] for s in self.picker.value}
        self.figure = inside_figure(chosen) if chosen else None
        show_in(self.output, self.figure)

    def _ipython_display_(self) -> None:
        import ipywidgets as widgets

        hint = widgets.HTML("<small>Ctrl-click (Cmd-click) adds or removes a strategy</small>")
        display_widget(widgets.VBox([widgets.VBox([self.picker, hint]), self.output]),
                       "the inside explorer (run the notebook to use it; the static copy above shows its figure)")


def rgn_sentence(run: str | Path, close: float = 0.8) -> str:
    """What section 5's Auto-RGN figure shows, said from its run: by how much the head's rate led the fastest
    backbone block at the first epoch, and in which epochs a backbone block came within `close` of it or passed it."""
    run = Path(run)
    config = read_json_dict_or_empty(run / runfiles.CONFIG)
    rates = pd.read_csv(run / runfiles.LAYERS).pivot(index="epoch", columns="block", values="lr")
    backbone = rates.drop(columns="head")
    fastest, ratio = backbone.idxmax(axis=1), rates["head"] / backbone.max(axis=1)
    first = rates.index[0]
    text = (f"In this Auto-RGN run (seed {config.get('seed', '?')}), the head's rate at epoch {first} was "
            f"{ratio[first]:.1f} times the fastest backbone block's ({fastest[first]})"
            + (", orders of magnitude ahead" if ratio[first] >= 100 else "") + ". ")
    caught = [e for e in rates.index if ratio[e] <= 1 / close]
    if not caught:
        return text + f"The head led in every epoch, by at least {ratio.min():.1f} times."
    blocks = sorted(set(fastest[caught]), key=list(backbone.columns).index)
    lowest = ratio[caught].min()
    return text + (f"In epoch{'s' if len(caught) > 1 else ''} {_epochs(caught)}, {' and '.join(blocks)} came within "
                   f"{1 - close:.0%} of the head's rate or passed it (the head's rate over theirs: {lowest:.2f} at "
                   "the lowest).")


def moved_most(run: str | Path) -> str:
    """Which backbone block of a run moved furthest from its start, and which least (relative weight distance of
    the selected network, representations.csv): what exercise 6.1 asks of G-LF, said from the run shown."""
    from ..training.strategies import strategy_label

    run = Path(run)
    config = read_json_dict_or_empty(run / runfiles.CONFIG)
    if not (run / runfiles.REPRESENTATIONS).is_file():
        return "This run measured no weight distances (repr_images = 0)."
    change = pd.read_csv(run / runfiles.REPRESENTATIONS)
    change = change[change.selected.astype(bool) & (change.block != "head")].set_index("block").rel_dist_init
    most, least = change.idxmax(), change.idxmin()
    return (f"In this {strategy_label(config.get('strategy', '?'))} run (seed {config.get('seed', '?')}), {most} "
            f"moved most from its start (relative distance {change[most]:.3f}) and {least} least "
            f"({change[least]:.3f}).")


def _epochs(epochs: list[int]) -> str:
    """'3-6' for consecutive epochs, else '1, 3, 4'."""
    if epochs == list(range(epochs[0], epochs[-1] + 1)) and len(epochs) > 2:
        return f"{epochs[0]}-{epochs[-1]}"
    return ", ".join(map(str, epochs))


# --- the mini comparison's sentence (the runs: study/mini.py) ---------------------------------------
def spread_sentence(study) -> str:
    """How far one strategy's score moves between seeds, and which gains over FT stand outside that noise."""
    from ..training.strategies import strategy_label

    best = study.best
    column = f"test_{study.metric}"
    spread = best.groupby("arm")[column].agg(lambda v: v.max() - v.min())
    seeds = best.groupby("arm").seed.nunique()
    if best.empty or seeds.max() < 2:
        return "Only one seed ran: the seed-to-seed spread is unknown, so no gain can be told from noise."
    ft = best[best.arm == BASELINE][column]
    text = (f"Seed-to-seed spread: between its best and worst of {seeds.max()} seeds, a strategy's test "
            f"{metric_name(study.metric)} moved by {spread.median():.3f} (median over strategies; largest "
            f"{spread.max():.3f}, {strategy_label(spread.idxmax())})"
            + (f"; FT alone ranged {ft.min():.3f} to {ft.max():.3f}. " if len(ft) else ". "))
    gains = study.gains.dropna(subset=["gain"])
    if gains.empty:
        return text + "No gain over FT could be computed (FT missing?)."
    parts = [f"{strategy_label(r.arm)} {r.gain:+.3f} [{r.low:+.3f}, {r.high:+.3f}] {r.verdict}"
             for r in gains.sort_values("gain", ascending=False).itertuples()]
    inside = int((gains.verdict == "inside the noise").sum())
    return (text + "Gains over FT, paired by seed (95% interval over seeds and test images; verdict after Holm "
            "correction): " + "; ".join(parts) + f". {inside} of {len(gains)} gains are inside the noise: "
            "a single seed could have shown them either way.")
