"""The benchmark scripts run at CI size (their numbers are recorded in benchmarks/README.md, never asserted)."""
import contextlib
import io
import runpy
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def run_script(script: str, *args: str) -> str:
    """Run a benchmark as `python script args` would, in this process (no interpreter and torch start-up per
    script); its printed output."""
    out, argv, path, threads = io.StringIO(), sys.argv, list(sys.path), torch.get_num_threads()
    sys.argv = [str(ROOT / script), *args]
    sys.path.insert(0, str((ROOT / script).parent))  # as `python script` does: a benchmark imports its siblings
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(str(ROOT / script), run_name="__main__")
    finally:
        sys.argv, sys.path[:] = argv, path
        torch.set_num_threads(threads)
    return out.getvalue()


@pytest.mark.slow
def test_training_benchmark_runs_at_tiny_size():
    out = run_script("benchmarks/bench_train.py", "--tiny", "--backbones", "tinycnn", "--steps", "2",
                     "--lp-epochs", "2")
    assert "| tinycnn |" in out and "cached features" in out


@pytest.mark.slow
def test_strategy_benchmark_runs_every_strategy_at_tiny_size():
    out = run_script("benchmarks/bench_strategies.py", "--backbone", "tinycnn", "--size", "16", "--batch", "16",
                     "--steps", "1", "--epoch-images", "160")
    rows = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line][1:]
    from studylib.training.strategies import list_strategies
    assert [row.split(" | ")[0].strip("| ") for row in rows] == list_strategies()
    assert "DELTA channel attention: 208 channels" in out


@pytest.mark.slow
def test_paper_estimate_covers_the_432_runs():
    assert "all (432 runs)" in run_script("benchmarks/estimate_paper.py")


@pytest.mark.slow
def test_runs_log_their_speed_and_the_paper_estimate_uses_it(tiny, tmp_path):
    import pandas as pd

    from studylib.study.results import collect
    from studylib.training.runner import run

    for strategy in ("ft", "lp"):
        run(tiny(strategy=strategy, max_epochs=3), tmp_path / strategy)
    table = collect(tmp_path).set_index("strategy")
    history = pd.read_csv(tmp_path / "ft" / "history.csv").iloc[1:]  # the first epoch is the warm-up
    assert table.loc["ft", "train_images_per_s"] == history.train_images.sum() / history.train_seconds.sum()
    assert history.train_images.eq(history.train_images.iloc[0]).all() and history.val_images.gt(0).all()
    assert pd.isna(table.loc["lp", "train_images_per_s"])  # cached-feature epochs say nothing about the backbone
    out = run_script("benchmarks/estimate_paper.py", "--from-runs", str(tmp_path))
    assert "measured tinycnn: 1 runs" in out and "| tinycnn |" in out and "resnet50" not in out


@pytest.mark.slow
def test_resume_benchmark_runs_at_tiny_size():
    assert "| tinycnn |" in run_script("benchmarks/bench_resume.py", "--backbones", "tinycnn")


@pytest.mark.slow
def test_training_benchmark_runs_on_real_images_through_the_prepared_cache(shared_data):
    out = run_script("benchmarks/bench_train.py", "--data", str(shared_data / "brain-mri-nickparvar"),
                     "--backbones", "tinycnn", "--size", "32", "--batch", "16", "--steps", "2", "--lp-epochs", "2")
    assert "data: DataBundle(" in out and "| tinycnn |" in out


@pytest.mark.slow
def test_analysis_benchmark_runs_at_tiny_size():
    out = run_script("benchmarks/bench_analysis.py", "--cases", "2", "--strategies", "3", "--test-size", "60",
                     "--classes", "3", "--n-boot", "20")
    assert "| 18 | 4 |" in out


@pytest.mark.slow
def test_interval_calibration_runs_at_tiny_size():
    out = run_script("benchmarks/calibrate_intervals.py", "--reps", "2", "--images", "60")
    assert "| crossed |" in out and "| nested |" in out


@pytest.mark.slow
def test_scale_benchmark_runs_at_tiny_size(tmp_path):
    out = run_script("benchmarks/bench_scale.py", "--image-size", "16", "--budget-gb", "0.002", "--steps", "2",
                     "--batch", "8", "--files", "30", "--workers", "1", "--dir", str(tmp_path), "--in-process")
    assert "| warm | train |" in out and "| cold | train |" in out and "| resident | none |" in out
    assert "read-ahead thread alone" in out and "| with the index (after) | cold |" in out


@pytest.mark.slow
def test_grid_benchmark_runs_at_tiny_size():
    out = run_script("benchmarks/bench_grid.py", "--workers", "1", "--runs", "4")
    assert "| 1 |" in out and "runs/min" in out
