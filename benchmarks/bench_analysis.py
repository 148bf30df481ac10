"""Time of the analysis of a paper-sized grid: reading the run folders, the two-level bootstrap of every
gain (per metric), the rank tests, the decisions (which strategy for my data, the signed-rank test across
datasets, the probability of improvement, pool stability) and the whole report.

    python benchmarks/bench_analysis.py [--cases 18] [--strategies 8] [--seeds 3] [--test-size 2000] [--classes 8]

The run folders are crafted (config.json, metrics.json, predictions.csv with random but
plausible predictions): the analysis reads nothing else, so the timing is the analysis's own.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from studylib.core.config import RunConfig
from studylib.study import decisions, measures
from studylib.study.analysis import Study
from studylib.training.calibration import calibration_metrics
from studylib.training.metrics import classification_metrics
from studylib.training.strategies import STUDY_STRATEGIES
from studylib.views.report import write_report


def craft(root: Path, cases: int, strategies: list[str], seeds: int, n: int, k: int) -> int:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, k, n)
    made = 0
    for case in range(cases):
        for strategy in strategies:
            for seed in range(seeds):
                logits = rng.normal(size=(n, k)) + (1.5 + 0.1 * strategies.index(strategy)) * np.eye(k)[labels]
                probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
                path = root / "runs" / f"case{case}-{strategy}-{seed}"
                path.mkdir(parents=True)
                cfg = RunConfig.from_dict({"strategy": strategy, "seed": seed, "backbone": f"b{case % 3}",
                                           "dataset": f"d{case // 3}"}).to_dict()
                (path / "config.json").write_text(json.dumps(cfg))
                metrics = {"val": {"balanced_accuracy": float(rng.uniform(0.6, 0.9))},
                           "test": {**classification_metrics(labels, probs), **calibration_metrics(labels, probs)}}
                (path / "metrics.json").write_text(json.dumps(metrics))
                frame = pd.DataFrame({"id": np.arange(n), "label": labels, "pred": probs.argmax(1)})
                for c in range(k):
                    frame[f"prob_{c}"] = probs[:, c]
                frame.to_csv(path / "predictions.csv", index=False)
                made += 1
    return made


def timed(step, *args, **kwargs) -> tuple[object, float]:
    started = time.perf_counter()
    value = step(*args, **kwargs)
    return value, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=18)
    parser.add_argument("--strategies", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--n-boot", type=int, default=300)
    args = parser.parse_args()
    strategies = list(STUDY_STRATEGIES)[: args.strategies]
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        runs = craft(root, args.cases, strategies, args.seeds, args.test_size, args.classes)
        study, read = timed(Study, root, n_boot=args.n_boot)
        gains, bacc = timed(lambda: study.gains)
        _, auroc = timed(lambda: Study(root, "auroc", args.n_boot, study.runs).gains)
        _, ranks = timed(lambda: study.rank_tests)
        _, decided = timed(lambda: (decisions.study_which(study), decisions.study_across(study),
                                    decisions.study_improvement(study), study.pool_stability))
        _, calibration = timed(measures.study_calibration_gains, study)
        _, report = timed(write_report, root, n_boot=args.n_boot, runs=study.runs)
    print(f"{runs} runs, {len(gains)} gains, {args.seeds} seeds, {args.test_size} test images x "
          f"{args.classes} classes, {args.n_boot} resamples")
    print("| runs | gains | read + select | gains, balanced accuracy | gains, AUROC | rank tests | decisions (which "
          "strategy, signed-rank, improvement, pool) | calibration gains (ECE, Brier, NLL) | whole report |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {runs} | {len(gains)} | {read:.1f} s | {bacc:.1f} s | {auroc:.1f} s | {ranks:.2f} s | {decided:.1f} s "
          f"| {calibration:.1f} s | {report:.1f} s |")


if __name__ == "__main__":
    main()
