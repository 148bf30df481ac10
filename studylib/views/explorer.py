"""An ipywidgets explorer over a grid's results, built on the plain plotting functions.

Every view is a library function that also writes a PNG (figures_dir), so what a headless
papermill run shows survives without widget state. The callbacks are plain methods, testable
without a browser: set a dropdown's value and read `explorer.figure` / `explorer.current_run`.
"""
from __future__ import annotations

from pathlib import Path

import ipywidgets as widgets
import matplotlib.pyplot as plt
import pandas as pd

from ..core import runfiles
from ..core.config import METRICS, metric_name
from ..core.constants import DEFAULT_METRIC, N_BOOT
from ..core.fileio import read_json_dict_or_empty
from ..study import decisions, measures
from ..study.analysis import Study
from ..study.results import collect
from ..training.strategies import strategy_label as label
from . import catalogue, decisionfigures, measurefigures, runfigures, studyfigures
from .catalogue import FIGURES

RUN_VIEWS = {
    "learning curves": lambda run, metric: runfigures.learning_curves(run, metric),
    "per-block learning rate": lambda run, metric: runfigures.block_lr_heatmap(run, "lr"),
    "per-block RGN": lambda run, metric: runfigures.block_lr_heatmap(run, "rgn"),
    "per-block distance moved": lambda run, metric: runfigures.block_lr_heatmap(run, "rel_dist_init"),
    "per-tensor learning rate": lambda run, metric: runfigures.tensor_heatmap(run, "lr"),
    "trainable blocks": lambda run, metric: studyfigures.unfreezing_timeline({_run_name(run): run}),
    "confusion matrix": lambda run, metric: runfigures.confusion_matrix(run),
    "reliability diagram": lambda run, metric: measurefigures.reliability_diagram(run),
}
def _run_name(run: Path) -> str:
    """'G-LF seed 684' from the run's config (folder names are long hashes)."""
    config = read_json_dict_or_empty(Path(run) / runfiles.CONFIG)
    return f"{label(config['strategy']) if 'strategy' in config else Path(run).name} seed {config.get('seed', '?')}"


# The study views: catalogue.FIGURES' entries with a view, drawn for the chosen metric (the report draws the
# same figures, one per group where the explorer stacks them).
STUDY_DRAW = {
    "which_strategy": lambda study, metric: decisionfigures.which_strategy(decisions.study_which(study), metric=metric,
                                                                         rope=study.rope),
    "performance_profile": lambda study, metric: decisionfigures.performance_profile(
        decisions.performance_profile(study.gains), metric=metric),
    "gain_heatmap": lambda study, metric: studyfigures.gain_heatmap(
        study.gains, title=f"gain in test {metric_name(metric)} over FT (~: no verdict)"),
    "critical_difference": lambda study, metric: studyfigures.cd_diagrams(study.rank_tests, metric=metric),
    "accuracy": lambda study, metric: studyfigures.accuracy_bars(study.accuracy, metric=metric, classes=study.classes),
    "recall_per_class": lambda study, metric: studyfigures.recall_bars(study.per_class),
    "cost_frontier": lambda study, metric: studyfigures.cost_frontier(measures.frontier(study.best, metric),
                                                                    metric=metric),
    "cka_by_block": lambda study, metric: measurefigures.cka_by_block(measures.study_change(study)),
    "cka_vs_gain": lambda study, metric: measurefigures.change_vs_gain(measures.study_relation(study),
                                                                     metric=metric),
    "calibration_gains": lambda study, metric: measurefigures.calibration_gains(
        measures.study_calibration_gains(study)),
    "labelled_fraction": lambda study, metric: measurefigures.labelled_fraction(measures.study_efficiency(study),
                                                                                metric),
}
STUDY_VIEWS = {FIGURES[key].view: key for key in catalogue.STUDY_VIEWS}  # dropdown name -> catalogue key
# the views whose numbers follow the metric picker; the others say they do not
METRIC_VIEWS = {"gain over FT", "critical-difference diagram", "accuracy per strategy", "cost frontier",
                "which strategy for my data", "performance profile", "feature change vs gain", "labelled fraction",
                "learning curves"}


class Explorer:
    """Dropdowns for dataset, backbone, strategy, seed, metric and view; one figure below them."""

    def __init__(self, results_dir: str | Path, figures_dir: str | Path | None = None, n_boot: int = N_BOOT,
                 correction: str = "holm"):
        self.results_dir = Path(results_dir)
        self.figures_dir = Path(figures_dir or self.results_dir / "figures")
        self.n_boot, self.correction = n_boot, correction
        self.runs = collect(self.results_dir)  # read once; every view and metric reuses it
        self._studies: dict[str, Study] = {}
        self.done = self.study(DEFAULT_METRIC).done
        self.figure: plt.Figure | None = None
        self.current_run: Path | None = None
        self.message = ""
        self.output = widgets.Output()
        self.controls = self._controls()
        for control in self.controls.values():
            control.observe(lambda change: self.refresh(), names="value")
        self.refresh()

    def _options(self, column: str) -> list:
        return sorted(self.done[column].unique().tolist()) if not self.done.empty else []

    def _controls(self) -> dict[str, widgets.Dropdown]:
        def dropdown(label, options, value=None, width="250px"):
            """options: values, or (what the list shows, value) pairs."""
            options = list(options)
            values = [o[1] if isinstance(o, tuple) else o for o in options]
            return widgets.Dropdown(description=label, options=options,
                                    value=value if value in values else (values[0] if values else None),
                                    layout=widgets.Layout(width=width), style={"description_width": "62px"})

        arms = studyfigures._ordered(self._options("arm")) if not self.done.empty else []
        return {
            "view": dropdown("view", list(STUDY_VIEWS) + list(RUN_VIEWS), "gain over FT", "340px"),
            "metric": dropdown("metric", [(metric_name(m), m) for m in METRICS if m != "loss"], DEFAULT_METRIC),
            "dataset": dropdown("dataset", self._options("dataset")),
            "backbone": dropdown("backbone", self._options("backbone")),
            "strategy": dropdown("strategy", [(label(a), a) for a in arms], "auto_rgn"),
            "seed": dropdown("seed", self._options("seed"), width="180px"),
        }

    def value(self, name: str):
        return self.controls[name].value

    def selected_run(self) -> Path | None:
        """The best-validation run of the chosen dataset, backbone, strategy and seed."""
        if self.done.empty:
            return None
        best = self.study(self.value("metric")).best
        match = best[(best.dataset == self.value("dataset")) & (best.backbone == self.value("backbone"))
                     & (best.arm == self.value("strategy")) & (best.seed == self.value("seed"))]
        return Path(match.path.iloc[0]) if len(match) else None

    def refresh(self) -> None:
        """Redraw the chosen view, write it as PNG, show it in the widget and close it (pyplot would otherwise
        show the first figure again below the widget when the cell ends)."""
        view = self.value("view")
        self.figure, self.message = self._draw(view)
        with self.output:
            self.output.clear_output(wait=True)
            if self.message:
                print(self.message)
            # the file's very image, at its own size: the same dpi and legible text as every static copy
            runfigures.show(self.figure, self.figures_dir / f"explorer-{view.replace(' ', '_')}.png")

    def _draw(self, view: str) -> tuple[plt.Figure | None, str]:
        if self.done.empty:
            return None, f"no finished runs in {self.results_dir} yet"
        metric = self.value("metric")
        if view in STUDY_VIEWS:
            said = "" if view in METRIC_VIEWS else f"{view}: the same for every metric"
            return self._study_view(view, metric), said
        self.current_run = self.selected_run()
        if self.current_run is None:
            return None, "no finished run for this dataset / backbone / strategy / seed"
        try:
            said = "" if view in METRIC_VIEWS else f" ({view} is the same for every metric)"
            return RUN_VIEWS[view](self.current_run, metric), f"run: {_run_name(self.current_run)}{said}"
        except FileNotFoundError as err:  # e.g. tensors.csv, written only with log_tensors=true
            name = Path(err.filename).name
            why = ("per-tensor views need runs made with log_tensors=true" if name == runfiles.TENSORS else
                   "the run was made by a studylib that did not write it yet; rerun it with --overwrite to get it")
            return None, f"{self.current_run.name}: {name} is missing ({why})"

    def study(self, metric: str) -> Study:
        """The analysis for `metric`, made once (selection, gains and their bootstrap are cached in it)."""
        if metric not in self._studies:
            self._studies[metric] = Study(self.results_dir, metric, self.n_boot, self.runs, correction=self.correction)
        return self._studies[metric]

    def _study_view(self, view: str, metric: str) -> plt.Figure:
        key = STUDY_VIEWS[view]
        # calibration is measured on test whatever the metric: its gains come from the default study
        study = self.study(DEFAULT_METRIC if key == "calibration_gains" else metric)
        return STUDY_DRAW[key](study, metric)

    def widget(self) -> widgets.Widget:
        wrap = widgets.Layout(flex_flow="row wrap")  # a narrow window wraps the pickers instead of cutting them off
        top = widgets.HBox([self.controls["view"], self.controls["metric"]], layout=wrap)
        middle = widgets.HBox([self.controls[k] for k in ("dataset", "backbone", "strategy", "seed")], layout=wrap)
        return widgets.VBox([top, middle, self.output])

    def _ipython_display_(self) -> None:
        runfigures.display_widget(self.widget(), "the explorer (run the notebook to use it; the figures above are "
                                                 "its static copies)")

    def table(self) -> pd.DataFrame:
        """The accuracy table (mean, sd over seeds) for the chosen metric."""
        return self.study(self.value("metric")).accuracy
