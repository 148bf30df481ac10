"""Calibration: does a predicted confidence of 0.8 come true 80% of the time?

Expected calibration error (top-label, Guo et al. 2017) over equal-width bins of confidence and
over equal-mass bins (each bin the same number of images, Nixon et al. 2019: equal width leaves
most bins empty when a network is confident), the multi-class Brier score (Brier 1950: the mean over
images of the squared distance between the probability vector and the one-hot label) and the
negative log-likelihood of the true class (from the stored probabilities, clipped at 1e-12; the
`loss` beside it comes from the logits and, with class_weighted_loss, is weighted).

Every function takes optional image weights (draws x images) so the analysis's paired bootstrap
resamples the test images with the same definitions; without weights each image counts once.
Equal-mass bin edges are set once, on the unweighted images, and kept for every draw.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.config import CALIBRATION_METRICS  # lower is better for all four
from ..core.constants import CALIBRATION_BINS

EPS = 1e-12  # a probability of exactly 0 for the true class would make the log-likelihood infinite


def calibration_metrics(labels: np.ndarray, probs: np.ndarray, bins: int = CALIBRATION_BINS) -> dict[str, float]:
    """ECE (equal width, equal mass), Brier score and NLL of one split's predictions."""
    return {name: float(calibration_scores(name, labels, probs, None, bins)[0]) for name in CALIBRATION_METRICS}


def calibration_scores(metric: str, labels: np.ndarray, probs: np.ndarray, weights: np.ndarray | None,
                       bins: int = CALIBRATION_BINS) -> np.ndarray:
    """`metric` under each row of `weights` (draws x images; None: every image once).

    Args:
        metric: one of CALIBRATION_METRICS: "ece" (equal-width bins), "ece_mass" (equal-mass bins), "brier" or "nll".
        labels: true class index of each image, shape (n,).
        probs: predicted class probabilities, shape (n, k).
        weights: image weights, draws x images (a bootstrap draw's image counts); None: every image once.
        bins: confidence bins of the two expected calibration errors.
    """
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    weights = np.ones((1, len(labels))) if weights is None else np.atleast_2d(np.asarray(weights, dtype=float))
    total = weights.sum(1)
    if metric == "nll":
        return weights @ -np.log(np.clip(probs[np.arange(len(labels)), labels], EPS, None)) / total
    if metric == "brier":
        onehot = np.eye(probs.shape[1])[labels]
        return weights @ ((probs - onehot) ** 2).sum(1) / total
    if metric in ("ece", "ece_mass"):
        which = bin_of(probs.max(1), bins, "width" if metric == "ece" else "mass")
        gap = np.zeros((len(weights), bins))  # per bin: sum of (correct - confidence), weighted
        np.add.at(gap.T, which, (weights * (correct(labels, probs) - probs.max(1))).T)
        return np.abs(gap).sum(1) / total
    raise ValueError(f"no calibration metric {metric!r}; choose one of {', '.join(CALIBRATION_METRICS)}")


def correct(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    return (np.asarray(probs).argmax(1) == np.asarray(labels)).astype(float)


def bin_of(confidence: np.ndarray, bins: int, scheme: str = "width") -> np.ndarray:
    """Bin index of each confidence. width: [0, 1/B), [1/B, 2/B), ..., [(B-1)/B, 1] (torchmetrics' edges,
    except that torchmetrics gives a confidence of exactly 1 a bin of its own); mass: images sorted by
    confidence and cut into B runs of (nearly) equal size (equal confidences may straddle a cut)."""
    if scheme == "width":
        edges = np.linspace(0, 1, bins + 1)  # the same floats torchmetrics compares with
        return np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    order = np.argsort(confidence, kind="stable")
    which = np.empty(len(confidence), dtype=int)
    for b, part in enumerate(np.array_split(order, bins)):
        which[part] = b
    return which


def reliability_table(labels: np.ndarray, probs: np.ndarray, bins: int = CALIBRATION_BINS) -> pd.DataFrame:
    """Per scheme and bin: images, mean confidence, accuracy (the points of a reliability diagram)."""
    confidence, hit = np.asarray(probs).max(1), correct(labels, probs)
    rows = []
    for scheme in ("width", "mass"):
        which = bin_of(confidence, bins, scheme)
        for b in range(bins):
            inside = which == b
            if inside.any():
                rows.append({"scheme": scheme, "bin": b, "images": int(inside.sum()),
                             "low": float(confidence[inside].min()) if scheme == "mass" else b / bins,
                             "high": float(confidence[inside].max()) if scheme == "mass" else (b + 1) / bins,
                             "confidence": float(confidence[inside].mean()), "accuracy": float(hit[inside].mean())})
    return pd.DataFrame(rows, columns=["scheme", "bin", "images", "low", "high", "confidence", "accuracy"])
