"""Analysis on a small real grid: validation-only selection, paired gains, report, widgets, notebooks."""
import json
import re
import shutil
import warnings
from importlib.util import find_spec
from pathlib import Path

import matplotlib.pyplot as plt
import papermill
import pytest

from studylib.core.config import metric_name
from studylib.study import analysis
from studylib.study.analysis import Study
from studylib.study.grid import run_grid
from studylib.views.explorer import Explorer
from studylib.views.report import write_report

ROOT = Path(__file__).resolve().parents[2]
GRID = """dataset: synthetic
synthetic_size: 160
backbone: tinycnn
image_size: 16
batch_size: 32
max_epochs: 5
lp_epochs: 1
gu_epochs_per_stage: 1
device: cpu
num_threads: 1
strategy: [ft, lp, lp_ft, auto_rgn, gu_last_first]
seed: [684, 559]
lr: 1e-2
per_strategy:
  lp: {lr: [1e-1, 1e-2]}
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    (root / "g.yaml").write_text(GRID)
    table = run_grid(root / "g.yaml", root / "out", engine="inline", progress=False)
    assert set(table.status) == {"finished"}
    return root / "out"


def copy_results(results, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(results, target)
    return target


def set_metric(run: Path, split: str, value: float) -> None:
    """A chosen score; a chosen test score goes with its predictions.csv, which would no longer give it
    (the results table lists a run whose files disagree as damaged, and leaves it out)."""
    metrics = json.loads((run / "metrics.json").read_text())
    metrics[split]["balanced_accuracy"] = value
    (run / "metrics.json").write_text(json.dumps(metrics))
    if split == "test":
        (run / "predictions.csv").unlink(missing_ok=True)


def test_selection_uses_validation_only(results, tmp_path):
    root = copy_results(results, tmp_path)
    lp = analysis.load_results(root).query("strategy == 'lp' and seed == 684")
    assert len(lp) == 2  # two learning rates
    good, bad = Path(lp.path.iloc[0]), Path(lp.path.iloc[1])
    set_metric(good, "val", 0.9)
    set_metric(bad, "val", 0.5)
    set_metric(bad, "test", 1.0)  # a perfect *test* score must not win the selection
    best = analysis.select_best(analysis.load_results(root)).query("strategy == 'lp' and seed == 684")
    assert best.path.iloc[0] == str(good)
    set_metric(bad, "val", 0.95)
    best = analysis.select_best(analysis.load_results(root)).query("strategy == 'lp' and seed == 684")
    assert best.path.iloc[0] == str(bad)


def test_bootstrap_interval_contains_the_point_estimate(results):
    best = analysis.select_best(analysis.load_results(results))
    summary = analysis.gain_summary(best, n_boot=300)
    assert set(summary.arm) == {"lp", "lp_ft", "auto_rgn", "gu_last_first"}
    assert (summary.low <= summary.gain + 1e-12).all() and (summary.gain <= summary.high + 1e-12).all()
    assert set(summary.verdict) == {"seed variance unknown"}  # two seeds: no verdict is claimed
    assert (summary.seeds == 2).all()
    wtl = analysis.win_tie_loss(summary)
    assert (wtl.cases == 1).all()


def test_missing_baseline_gives_no_gain(results, tmp_path):
    root = copy_results(results, tmp_path)
    for path in (root / "runs").glob("*-ft-*"):
        shutil.rmtree(path)
    summary = analysis.gain_summary(analysis.select_best(analysis.load_results(root)), n_boot=50)
    assert set(summary.verdict) == {"no baseline"} and summary.gain.isna().all()


def test_mixed_protocols_are_warned_and_grouped(results, tmp_path):
    root = copy_results(results, tmp_path)
    run = next((root / "runs").glob("*-lp-*"))
    config = json.loads((run / "config.json").read_text())
    config["image_size"] = 32
    (run / "config.json").write_text(json.dumps(config))
    with pytest.warns(analysis.AnalysisWarning, match="2 different protocols"):
        done = analysis.load_results(root)
    assert done.protocol.nunique() == 2


def test_empty_and_partial_folders_say_what_is_missing(results, tmp_path):
    with pytest.warns(analysis.AnalysisWarning, match="no run folders"):
        assert analysis.load_results(tmp_path).empty
    root = copy_results(results, tmp_path)
    run = next((root / "runs").glob("*-lp_ft-*"))
    (run / "metrics.json").unlink()
    study = Study(root, n_boot=50)
    assert any("not finished" in note for note in study.notes)
    assert "lp_ft" in set(study.best.arm)  # the other seed still counts


def test_report_is_self_contained_and_shows_the_key_figures(results):
    markdown, page = write_report(results, n_boot=100)
    text = page.read_text()
    assert ("Gain in test balanced accuracy over FT per dataset x backbone" in text
            and "Auto-RGN: per-block learning rate" in text)
    assert "Critical-difference diagram (P1)" in text and text.count("How to read it:") >= 4
    assert text.count("data:image/png;base64,") >= 4
    assert "figures/gain_heatmap.png" in markdown.read_text()
    assert "Feature change per block (CKA to the starting network)" in text and "Feature change and the gain" in text
    assert "Calibration: improvement over FT" in text and "labelled fraction" not in text  # no few-labels grid here
    opening = markdown.read_text().split("## ")[0]  # the headline and methods paragraphs, before any section
    assert "4 fine-tuning strategies (Auto-RGN, G-LF, LP, LP-FT) were compared with full fine-tuning (FT)" in opening
    assert "2 paired seeds" in opening and "Methods. Data: synthetic" in opening and "at most 5 epochs" in opening
    assert "<td>LP-FT</td>" in text and "<td>lp_ft</td>" not in text  # labels, not registry ids, in the tables


@pytest.mark.slow  # seconds in-process: out of the quick suite
def test_report_plots_a_few_labels_grid_and_says_where_the_ranking_changes(results, tmp_path):
    root = copy_results(results, tmp_path)
    for run in list((root / "runs").iterdir()):  # the same runs again at 10% of the labels, LP now best
        twin = run.with_name(run.name + "-few")
        shutil.copytree(run, twin)
        config = json.loads((twin / "config.json").read_text())
        (twin / "config.json").write_text(json.dumps({**config, "train_fraction": 0.1}))
        set_metric(twin, "test", 0.9 if config["strategy"] == "lp" else 0.3)
    markdown, page = write_report(root, n_boot=20)
    text = page.read_text()
    assert "Test score against the labelled fraction" in text and (root / "figures" / "labelled_fraction.png").is_file()
    assert "at 10% of the labels the ranking changes" in text and re.search(r"\(LP [2-5] -&gt; 1[,;]", text)


def test_explorer_callbacks_without_a_browser(results, tmp_path):
    explorer = Explorer(results, figures_dir=tmp_path, n_boot=50)
    assert explorer.figure is not None and (tmp_path / "explorer-gain_over_FT.png").is_file()
    explorer.controls["view"].value = "per-block learning rate"
    explorer.controls["strategy"].value = "auto_rgn"
    first_run, first_title = explorer.current_run, explorer.figure.axes[0].get_title()
    assert "auto_rgn" in first_run.name
    explorer.controls["strategy"].value = "gu_last_first"
    assert explorer.current_run != first_run and "gu_last_first" in explorer.current_run.name
    assert explorer.figure.axes[0].get_title() != first_title
    assert (tmp_path / "explorer-per-block_learning_rate.png").is_file()
    explorer.controls["view"].value = "per-tensor learning rate"
    assert explorer.figure is None and "log_tensors=true" in explorer.message
    explorer.controls["view"].value = "critical-difference diagram"
    assert explorer.figure is not None and "Friedman" in explorer.figure.axes[0].get_title()
    explorer.controls["metric"].value = "macro_f1"
    assert list(explorer.table().columns[-3:]) == ["mean", "std", "count"]
    for view in ("feature change per block", "calibration vs FT", "reliability diagram"):
        explorer.controls["view"].value = view
        assert explorer.figure is not None, view


def test_explorer_on_an_empty_folder(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explorer = Explorer(tmp_path)
    assert explorer.figure is None and "no finished runs" in explorer.message


# tests/system/test_browser.py runs the analysis and teaching notebooks end to end in Chromium with these checks
# and more; headless, they run here only where no browser can
BROWSER = bool(shutil.which("chromium") or shutil.which("chromium-browser")) and bool(find_spec("playwright"))


@pytest.mark.slow
@pytest.mark.skipif(BROWSER, reason="tests/system/test_browser.py runs this notebook in Chromium with these checks")
def test_analysis_notebook_runs_headless_and_writes_figures(results, tmp_path):
    out = tmp_path / "analysis.ipynb"
    papermill.execute_notebook(str(ROOT / "notebooks" / "analysis.ipynb"), str(out), kernel_name="python3",
                               parameters={"results_dir": str(results), "n_boot": 100}, progress_bar=False)
    assert (results / "figures" / "gain_heatmap.png").is_file()
    assert (results / "figures" / "explorer-gain_over_FT.png").is_file()


@pytest.mark.slow
def test_analysis_notebook_on_an_empty_folder(tmp_path):
    papermill.execute_notebook(str(ROOT / "notebooks" / "analysis.ipynb"), str(tmp_path / "a.ipynb"),
                               kernel_name="python3", parameters={"results_dir": str(tmp_path)}, progress_bar=False)
    assert "no run folders" in (tmp_path / "a.ipynb").read_text()


@pytest.mark.slow
@pytest.mark.skipif(BROWSER, reason="tests/system/test_browser.py runs this notebook in Chromium with these checks")
def test_teaching_notebook_runs_at_its_smallest_settings(tmp_path):
    papermill.execute_notebook(str(ROOT / "notebooks" / "teaching.ipynb"), str(tmp_path / "t.ipynb"),
                               kernel_name="python3", progress_bar=False,
                               parameters={"mini_size": 160, "mini_epochs": 5, "mini_seeds": 2, "workers": 1,
                                           "pretrain_size": 200, "plan_epochs": 5, "out_dir": str(tmp_path / "teach")})
    assert (tmp_path / "teach" / "figures" / "strategy_maps.png").is_file()
    assert (tmp_path / "teach" / "figures" / "inside.png").is_file()
    text = (tmp_path / "t.ipynb").read_text()
    assert "Top block (stage3): CKA to the start" in text
    assert ("Seed-to-seed spread: between its best and worst of 2 seeds" in text
            and "Gains over FT, paired by seed" in text)
    assert len(list((tmp_path / "teach" / "runs").glob("*/metrics.json"))) == 5 * 2
    assert "Error" not in "".join(o.get("ename", "") for c in json.loads(text)["cells"] for o in c.get("outputs", []))


METRIC_VIEWS = {"gain over FT", "critical-difference diagram", "accuracy per strategy", "cost frontier",
                "which strategy for my data",
                "learning curves"}  # the views whose numbers change with the metric


def figure_text(figure) -> str:
    parts = [figure._suptitle.get_text() if figure._suptitle else ""]
    for axis in figure.axes:
        parts += [axis.get_title(), axis.get_xlabel(), axis.get_ylabel()]
    return " ".join(parts)


@pytest.mark.slow  # seconds in-process: out of the quick suite
def test_every_explorer_view_draws_one_figure_labelled_with_the_metric(results, tmp_path):
    from studylib.views.explorer import RUN_VIEWS, STUDY_VIEWS

    explorer = Explorer(results, figures_dir=tmp_path, n_boot=20)
    explorer.controls["metric"].value = "macro_f1"
    for view in list(STUDY_VIEWS) + list(RUN_VIEWS):
        explorer.controls["view"].value = view
        if view == "per-tensor learning rate":  # needs log_tensors=true runs: a message instead
            assert explorer.figure is None and "log_tensors" in explorer.message
            continue
        assert explorer.figure is not None, view
        assert not plt.fignum_exists(explorer.figure.number), f"{view}: left open, pyplot would show it twice"
        if view in METRIC_VIEWS:
            assert "macro F1" in figure_text(explorer.figure), view
    explorer.controls["view"].value = "accuracy per strategy"
    for metric in ("balanced_accuracy", "auroc", "kappa"):
        explorer.controls["metric"].value = metric
        axis = explorer.figure.axes[0]
        assert metric_name(metric) in axis.get_ylabel()
        chance = [line for line in axis.get_lines() if line.get_label().startswith("chance")]
        assert chance and axis.get_ylim()[1] < 1.0 + 0.2  # chance marked, the axis zoomed to the data


def test_the_epoch_bar_ends_full_at_the_epochs_history_holds_when_early_stopping_fires(tiny, tmp_path, monkeypatch):
    import studylib.training.engine as engine

    bars = []

    class Recorded(engine.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(engine, "tqdm", Recorded)
    from studylib.training.runner import run

    result = run(tiny(max_epochs=8, patience=1, lr=1e-12, quiet=False), tmp_path / "run")
    assert result.metrics["stopped_early"]
    epoch_bar = next(b for b in bars if b.unit == "epoch")
    assert epoch_bar.n == epoch_bar.total == result.metrics["epochs_run"]
    assert "stopped early" in epoch_bar.postfix


def test_the_figure_catalogue_is_what_the_report_and_the_explorer_show():
    from studylib.views import catalogue, explorer
    from studylib.views.report import HOW_TO_READ

    assert set(explorer.STUDY_DRAW) == set(catalogue.STUDY_VIEWS)  # every study view draws, and only those
    assert list(explorer.STUDY_VIEWS) == [catalogue.FIGURES[k].view for k in catalogue.STUDY_VIEWS]
    for key, figure in catalogue.FIGURES.items():
        assert (figure.reading in HOW_TO_READ) if figure.reading else figure.caption, key  # words under each


def handle_colour(handle):
    """A legend handle's colour: a line's colour, else a patch's or a collection's face (else edge) colour."""
    import numpy as np
    from matplotlib.lines import Line2D

    if isinstance(handle, Line2D):
        return handle.get_color()
    for get in ("get_facecolor", "get_edgecolor"):
        colour = np.asarray(getattr(handle, get)()) if hasattr(handle, get) else np.empty(0)
        if colour.size:
            return colour[0] if colour.ndim == 2 else colour
    return None


def strategy_colours(figure, names: set[str]) -> dict[str, set[str]]:
    """label -> the colours it wears in `figure`: legend entries, and tick labels coloured by strategy."""
    from matplotlib.colors import to_hex

    found: dict[str, set[str]] = {}
    legends = [figure.legends] + [[axis.get_legend()] for axis in figure.axes]
    for legend in (item for group in legends for item in group if item is not None):
        for handle, text in zip(legend.legend_handles, legend.get_texts()):
            name = text.get_text().split(" (")[0]
            if name in names:
                colour = handle_colour(handle)
                if colour is not None:
                    found.setdefault(name, set()).add(to_hex(colour))
    for axis in figure.axes:
        for tick in axis.get_yticklabels():
            name = tick.get_text().rstrip(" *")
            if name in names and to_hex(tick.get_color()) != "#000000":
                found.setdefault(name, set()).add(to_hex(tick.get_color()))
    return found


def test_every_strategy_wears_one_colour_in_every_figure_of_the_report(results, tmp_path, monkeypatch):
    import studylib.views.report as report
    from studylib.training.strategies import strategy_label

    figures = []
    monkeypatch.setattr(report.plt, "close", figures.append)  # keep each figure the report draws
    root = copy_results(results, tmp_path)
    write_report(root, n_boot=20)
    names = {strategy_label(s) for s in ("ft", "lp", "lp_ft", "auto_rgn", "gu_last_first")}
    seen: dict[str, set[str]] = {}
    for figure in figures:
        for name, colours in strategy_colours(figure, names).items():
            seen.setdefault(name, set()).update(colours)
    assert len(seen) >= 3 and sum(bool(strategy_colours(f, names)) for f in figures) >= 4, seen  # several figures
    monkeypatch.undo()  # plt.close is pyplot's again
    for figure in figures:
        plt.close(figure)
    assert all(len(colours) == 1 for colours in seen.values()), seen


def test_registered_strategies_wear_distinct_colours():
    from matplotlib.colors import to_hex

    from studylib.training.strategies import list_strategies
    from studylib.views.studyfigures import strategy_colour

    colours = [to_hex(strategy_colour(s)) for s in list_strategies()]
    assert len(set(colours)) == len(colours) <= 20
