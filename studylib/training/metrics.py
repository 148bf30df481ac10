"""Classification metrics over predicted class probabilities (scikit-learn does the maths)."""
from __future__ import annotations

import warnings

import numpy as np


def classification_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro F1, Cohen's kappa, AUROC and macro AP.

    `probs` is (n, k) with rows summing to one. AUROC is binary for k == 2 and one-vs-rest
    macro otherwise; it is NaN when the labels hold a single class (it is undefined there).
    """
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    k = probs.shape[1]
    preds = probs.argmax(axis=1)
    with warnings.catch_warnings():  # a class absent from y_true is expected on tiny splits
        warnings.simplefilter("ignore")
        return {
            "accuracy": float(_sklearn().accuracy_score(labels, preds)),
            "balanced_accuracy": float(_sklearn().balanced_accuracy_score(labels, preds)),
            "macro_f1": float(_sklearn().f1_score(labels, preds, average="macro", labels=range(k), zero_division=0)),
            "kappa": _kappa(labels, preds),
            "auroc": auroc(labels, probs),
            "macro_ap": macro_average_precision(labels, probs),
        }


def _kappa(labels: np.ndarray, preds: np.ndarray) -> float:
    value = _sklearn().cohen_kappa_score(labels, preds)
    return float(value) if np.isfinite(value) else float("nan")


def auroc(labels: np.ndarray, probs: np.ndarray) -> float:
    present = np.unique(labels)
    if len(present) < 2:
        return float("nan")
    if probs.shape[1] == 2:
        return float(_sklearn().roc_auc_score(labels, probs[:, 1]))
    # One-vs-rest macro over the classes present in labels (others have no positives).
    onehot = _sklearn_preprocessing().label_binarize(labels, classes=range(probs.shape[1]))
    scores = [_sklearn().roc_auc_score(onehot[:, c], probs[:, c]) for c in present]
    return float(np.mean(scores))


def macro_average_precision(labels: np.ndarray, probs: np.ndarray) -> float:
    present = np.unique(labels)
    onehot = _sklearn_preprocessing().label_binarize(labels, classes=range(probs.shape[1]))
    if probs.shape[1] == 2:
        onehot = np.column_stack([1 - onehot[:, 0], onehot[:, 0]])
    scores = [_sklearn().average_precision_score(onehot[:, c], probs[:, c]) for c in present]
    return float(np.mean(scores))


def per_class_metrics(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support of each class (None where undefined: a class never true or never
    predicted; None, not NaN, so that metrics.json reads back as it was written)."""
    preds = np.asarray(probs).argmax(axis=1)
    precision, recall, f1, support = _sklearn().precision_recall_fscore_support(
        labels, preds, labels=range(len(classes)), zero_division=np.nan)
    def value(x) -> float | None:
        return None if np.isnan(x) else float(x)
    return {name: {"precision": value(precision[c]), "recall": value(recall[c]), "f1": value(f1[c]),
                   "support": int(support[c])} for c, name in enumerate(classes)}


def confusion(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Confusion matrix, rows = true class, columns = predicted class."""
    k = np.asarray(probs).shape[1]
    return _sklearn().confusion_matrix(labels, np.asarray(probs).argmax(axis=1), labels=range(k))


def _sklearn():
    """scikit-learn's metrics, imported on first use: commands that compute none (studylib config, a grid's
    parent process) start a second faster."""
    from sklearn import metrics
    return metrics


def _sklearn_preprocessing():
    from sklearn import preprocessing
    return preprocessing
