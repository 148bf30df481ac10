"""Grids: validation before any run, papermill execution, resume after kill -9, Dask."""
import json
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import papermill
import pytest
import yaml
from conftest import Preempted, stop_training_at

from studylib.core.config import ConfigError, RunConfig, config_keys, field_help
from studylib.study.grid import duration, load_grid, run_grid
from studylib.study.results import collect

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TINY = ("dataset: synthetic\nsynthetic_size: 120\nbackbone: tinycnn\nimage_size: 16\nbatch_size: 32\n"
        "max_epochs: 1\ndevice: cpu\nnum_threads: 1\n")


def write_grid(tmp_path, body, name="g.yaml"):
    path = tmp_path / name
    path.write_text(TINY + body)
    return path


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(notebook):
    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{notebook.name} has outputs"


def test_experiment_parameters_match_the_config_fields():
    params = papermill.inspect_notebook(str(ROOT / "notebooks" / "experiment.ipynb"))
    # fields and strategy knobs
    assert set(params) - {"out_dir", "overwrite", "resume", "imports"} == set(config_keys())
    help_text, library = field_help(), RunConfig().to_dict()
    for name in config_keys():
        value = eval(params[name]["default"])  # the cell's literal, as papermill reads it
        mark = f"[NOTEBOOK: the library's default is {library[name]!r}] " if value != library[name] else ""
        assert params[name]["help"] == mark + help_text[name], name  # a teaching value says it is one
    assert sum("[NOTEBOOK" in p["help"] for p in params.values()) >= 5


@pytest.mark.parametrize("grid", sorted((ROOT / "params").glob("*.yaml")), ids=lambda p: p.name)
def test_every_params_file_uses_only_config_fields(grid):
    data = yaml.safe_load(grid.read_text())
    keys = set(data) | {k for v in (data.get("per_strategy") or {}).values() for k in v}
    assert keys - {"name", "description", "per_strategy"} <= set(config_keys())
    assert load_grid(grid).runs


def test_paper_grid_is_the_full_study():
    grid = load_grid(ROOT / "params" / "paper.yaml")
    assert len(grid.runs) == 432
    assert {c.backbone for c in grid.runs} == {"resnet50", "densenet121", "vgg19"}
    assert {c.seed for c in grid.runs} == {684, 559, 629}


def test_per_strategy_sweeps_only_that_strategy(tmp_path):
    grid = load_grid(write_grid(tmp_path, "strategy: [ft, auto_rgn]\nlr: 1e-3\n"
                                          "per_strategy:\n  auto_rgn: {lr: [1e-1, 1e-2]}\n"))
    assert sorted((c.strategy, c.lr) for c in grid.runs) == [("auto_rgn", 0.01), ("auto_rgn", 0.1), ("ft", 0.001)]


@pytest.mark.parametrize("body, message", [
    ("strategy: [ft, lp\n", r"g.yaml line \d+, column \d+: malformed YAML"),
    ("strategy: ft\nlearning_rate: [1, 2]\n", r"g.yaml line 10: unknown key 'learning_rate'"),
    ("strategy: [ft, nope]\n", r"unknown strategy 'nope'"),
    ("strategy: ft\npatience: [1, two]\n", r"g.yaml line 10: patience must be int"),
    ("strategy: ft\nmax_epochs: 2\n", r"g.yaml line 10, column 1: 'max_epochs' is set twice \(lines 6 and 10\)"),
])
def test_bad_grids_fail_before_any_run(tmp_path, body, message):
    path = write_grid(tmp_path, body)
    with pytest.raises(ConfigError, match=message):
        run_grid(path, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_smoke_grid_through_papermill_on_a_local_cluster_equals_inline_then_skips_when_finished(tmp_path, capfd):
    """One papermill grid on a Dask LocalCluster of 2 workers (a kernel per run) against the same grid inline."""
    local = run_grid(ROOT / "params" / "smoke.yaml", tmp_path / "local", engine="inline", progress=False)
    out = tmp_path / "dask"
    table = run_grid(ROOT / "params" / "smoke.yaml", out, workers=2, progress=False)  # papermill, 2 at a time
    assert list(table.status) == ["finished", "finished"]
    assert "without encryption" not in capfd.readouterr().err  # the kernels' log warnings stay out of a grid's output
    run_dir = out / "runs" / table.run[0]
    executed = nbformat.read(run_dir / "experiment.ipynb", as_version=4)
    assert any(c.outputs for c in executed.cells if c.cell_type == "code")  # the executed copy is kept
    for name in table.run:  # every cell ran cleanly and the run's own status agrees with the table
        cells = nbformat.read(out / "runs" / name / "experiment.ipynb", as_version=4).cells
        errors = [o for c in cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert not errors, errors
        assert all(c.execution_count for c in cells if c.cell_type == "code")
        assert json.loads((out / "runs" / name / "status.json").read_text())["status"] == "finished"
    assert (run_dir / "figures" / "learning_curves.png").is_file()
    columns = ["run", "status", "test_balanced_accuracy"]
    pd.testing.assert_frame_equal(local[columns], table[columns])
    a, b = collect(tmp_path / "local"), collect(out)
    metrics = [c for c in a.columns if c.startswith(("val_", "test_"))]
    pd.testing.assert_frame_equal(a[["run"] + metrics], b[["run"] + metrics])
    stamp = (run_dir / "metrics.json").stat().st_mtime_ns
    again = run_grid(ROOT / "params" / "smoke.yaml", out, dry_run=True, progress=False)
    assert set(again.action) == {"skip (finished)"}
    run_grid(ROOT / "params" / "smoke.yaml", out, engine="inline", progress=False)  # nothing to run: no cluster
    assert (run_dir / "metrics.json").stat().st_mtime_ns == stamp


# A failing notebook cell: tests/system/test_extending.py runs one in a papermill grid beside a plugin strategy.


def test_report_cli_writes_the_table_and_lists_failures(tmp_path, capsys):
    from studylib.cli import main
    path = write_grid(tmp_path, "strategy: [ft, surgical]\nsurgical_block: nowhere\n")
    run_grid(path, tmp_path / "out", engine="inline", progress=False)
    assert main(["report", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "2 runs, 1 finished" in out and "surgical_block" in out
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    assert {"test_balanced_accuracy", "wall_seconds", "peak_memory_mb", "trainable_params", "status"} <= set(table)
    assert json.loads((tmp_path / "out" / "runs" / table.run[0] / "config.json").read_text())


def write_notebook(path: Path, body: str) -> Path:
    """A papermill-ready notebook: a parameters cell (out_dir), then `body`."""
    from nbformat.v4 import new_code_cell, new_notebook
    params = new_code_cell("out_dir = ''\noverwrite = True")
    params.metadata["tags"] = ["parameters"]
    nbformat.write(new_notebook(cells=[params, new_code_cell(body)], metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}), path)
    return path


@pytest.mark.slow
def test_a_dying_kernel_marks_the_run_failed(tmp_path):
    from studylib.study.grid import execute_run
    write_notebook(tmp_path / "dies.ipynb", "import os\nos._exit(1)")
    status = execute_run({"strategy": "ft"}, str(tmp_path / "run"), notebook=str(tmp_path / "dies.ipynb"))
    assert status["status"] == "failed" and "kernel died" in status["reason"]
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_a_grid_goes_on_from_the_saved_epochs_of_an_interrupted_run(tmp_path, monkeypatch):
    from studylib.study.grid import run_name
    from studylib.training.runner import run

    path = tmp_path / "g.yaml"
    path.write_text(TINY.replace("max_epochs: 1", "max_epochs: 3") + "strategy: ft\nresume_every_s: 0\n")
    cfg = load_grid(path).runs[0]
    run_dir = tmp_path / "out" / "runs" / run_name(cfg)
    undo = stop_training_at(monkeypatch, 2)
    with pytest.raises(Preempted):
        run(cfg, run_dir, resume=True)
    undo()
    assert list(run_grid(path, tmp_path / "out", dry_run=True, progress=False).action) == ["resume (saved epochs)"]
    table = run_grid(path, tmp_path / "out", engine="inline", progress=False)
    assert list(table.status) == ["finished"]
    assert json.loads((run_dir / "metrics.json").read_text())["resumed_from_epoch"] == 2


def test_dry_run_estimates_the_time_left_from_finished_runs_of_the_same_dataset_and_backbone(tmp_path):
    path = write_grid(tmp_path, "strategy: [ft, lp]\nseed: [1, 2]\n")
    out = tmp_path / "out"
    run_grid(path, out, engine="inline", progress=False, overrides={"seed": 1})
    plan = run_grid(path, out, dry_run=True, progress=False)
    walls = [json.loads(p.read_text())["wall_seconds"] for p in out.glob("runs/*/metrics.json")]
    assert list(plan.action).count("run") == 2
    summary = plan.attrs["summary"]
    assert summary.startswith("2 finished, 0 to resume, 2 to run; about ")
    assert f"about {duration(2 * float(np.median(walls)))} of runs for the 2 " in summary
    assert [duration(s) for s in (4.2, 600, 7200)] == ["4 s", "10 min", "2.0 h"]


def test_init_copies_the_shipped_templates_and_never_overwrites(tmp_path, capsys):
    from studylib.cli import main
    (tmp_path / "work" / "params").mkdir(parents=True)
    (tmp_path / "work" / "params" / "smoke.yaml").write_text("# mine\n")
    assert main(["init", str(tmp_path / "work")]) == 0
    assert "kept as they were (not overwritten): smoke.yaml" in capsys.readouterr().out
    assert (tmp_path / "work" / "params" / "smoke.yaml").read_text() == "# mine\n"
    shipped = ({p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
               | {p.name for p in (ROOT / "params").glob("*.yaml")})
    copied = {p.name for p in (tmp_path / "work").rglob("*") if p.is_file()}
    assert copied == shipped


def test_a_shipped_grid_runs_by_its_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = run_grid("smoke", tmp_path / "out", dry_run=True, progress=False)
    assert len(plan) == len(load_grid(ROOT / "params" / "smoke.yaml").runs) and set(plan.action) == {"run"}


@pytest.mark.slow
def test_a_grid_runs_the_notebook_it_is_given(tmp_path):
    write_notebook(tmp_path / "mine.ipynb", "open(out_dir + '/mine.txt', 'w').write('ran')")
    path = write_grid(tmp_path, "strategy: ft\n")
    run_grid(path, tmp_path / "out", progress=False, notebook=tmp_path / "mine.ipynb")
    assert [p.read_text() for p in (tmp_path / "out").glob("runs/*/mine.txt")] == ["ran"]
    with pytest.raises(ConfigError, match="nowhere.ipynb does not exist"):
        run_grid(path, tmp_path / "out2", progress=False, notebook=tmp_path / "nowhere.ipynb")


def test_grid_help_names_every_shipped_grid(capsys):
    from studylib.cli import build_parser
    from studylib.core.templates import shipped_grids
    with pytest.raises(SystemExit):
        build_parser().parse_args(["grid", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert len(shipped_grids()) == 10 and all(name in text for name in shipped_grids())


def test_a_list_of_class_names_in_a_grid_is_one_value_and_a_list_of_lists_sweeps(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text("strategy: ft\nclasses: [NORMAL, PNEUMONIA]\nper_strategy:\n  ft: {seed: [1, 2]}\n")
    assert [c.classes for c in load_grid(grid).runs] == ["NORMAL,PNEUMONIA"] * 2
    grid.write_text("strategy: ft\nclasses: [[a, b], [a, b, c]]\n")
    assert [c.classes for c in load_grid(grid).runs] == ["a,b", "a,b,c"]
