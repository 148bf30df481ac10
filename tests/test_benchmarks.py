"""The benchmark scripts run at CI size (their numbers are recorded in benchmarks/README.md, never asserted)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_training_benchmark_runs_at_tiny_size():
    out = run_script("benchmarks/bench_train.py", "--tiny", "--backbones", "tinycnn", "--steps", "2", "--lp-epochs", "2")
    assert "| tinycnn |" in out and "cached features" in out


def test_paper_estimate_covers_the_432_runs():
    assert "all (432 runs)" in run_script("benchmarks/estimate_paper.py")
