"""Crafted finished runs: run folders as studylib writes them (config, metrics, predictions) with chosen test
results, so the statistics, analysis and report tests know the answer without training anything."""
import json
from pathlib import Path

import numpy as np
import pandas as pd

from studylib import RunConfig
from studylib.study import stats
from studylib.training.metrics import classification_metrics, confusion


def predictions(labels, correct) -> stats.Predictions:
    """Two-class predictions: right where `correct`, with a confident probability."""
    labels = np.asarray(labels)
    preds = np.where(correct, labels, 1 - labels)
    probs = np.column_stack([np.where(preds == 0, 0.9, 0.1), np.where(preds == 1, 0.9, 0.1)])
    return stats.Predictions(np.array([f"{i:05d}" for i in range(len(labels))]), labels, probs)


def crafted_run(root: Path, correct: np.ndarray, labels: np.ndarray, val: float = 0.8, **fields) -> Path:
    """A finished run folder as studylib writes it (config, metrics, predictions), with chosen test results."""
    cfg = RunConfig.from_dict({"strategy": "ft", **fields}).to_dict()
    name = "-".join(str(cfg[k]) for k in ("backbone", "strategy", "seed", "lr", "bn_policy", "medmnist_size"))
    path = root / "runs" / name
    path.mkdir(parents=True)
    p = predictions(labels, correct)
    frame = pd.DataFrame({"id": p.ids, "label": p.labels, "pred": p.preds, "prob_a": p.probs[:, 0],
                          "prob_b": p.probs[:, 1]})
    frame.to_csv(path / "predictions.csv", index=False)
    test = classification_metrics(p.labels, p.probs)
    (path / "config.json").write_text(json.dumps(cfg))
    (path / "metrics.json").write_text(json.dumps({"val": {"balanced_accuracy": val}, "test": test,
                                                   "classes": ["a", "b"],
                                                   "test_confusion": confusion(p.labels, p.probs).tolist()}))
    return path


def with_accuracy(labels: np.ndarray, accuracy: float) -> np.ndarray:
    """A correctness mask with exactly `accuracy` recall in each class (balanced accuracy = accuracy); masks
    are nested (the first images of each class are right), so two runs differ on few images, as real pairs do."""
    correct = np.zeros(len(labels), bool)
    for c in (0, 1):
        members = np.flatnonzero(labels == c)
        correct[members[: round(accuracy * len(members))]] = True
    return correct


def churned(labels: np.ndarray, accuracy: float, gain: float, churn: int) -> np.ndarray:
    """A strategy's mask: `gain` in balanced accuracy, all of it on the minority class 1 (its recall
    rises by 2 x gain, so plain accuracy would rise by less: the metrics cannot be confused), and
    `churn` images per class that the baseline got right are wrong while `churn` more of its wrong ones
    are right (test-image noise, no net change)."""
    correct = with_accuracy(labels, accuracy)
    for c, recall in ((0, accuracy), (1, accuracy + 2 * gain)):
        members = np.flatnonzero(labels == c)
        edge = round(recall * len(members))
        correct[members] = np.arange(len(members)) < edge
        correct[members[edge - churn:edge]] = False
        correct[members[edge:edge + churn]] = True
    return correct


LABELS = np.r_[np.zeros(1500, int), np.ones(500, int)]  # imbalanced, as medical test sets are


def case(root, backbone, ft_accuracy, gains, seeds=(684, 559, 629), strategy="lp_ft", churn=0, **fields):
    for seed, gain in zip(seeds, gains):
        if strategy == "lp_ft":  # the FT baseline of the case, once
            crafted_run(root, with_accuracy(LABELS, ft_accuracy), LABELS, backbone=backbone, seed=seed, **fields)
        crafted_run(root, churned(LABELS, ft_accuracy, gain, churn), LABELS, backbone=backbone, seed=seed,
                    strategy=strategy, **fields)


# --- every metric under bootstrap weights equals scikit-learn on the resampled images -------------
