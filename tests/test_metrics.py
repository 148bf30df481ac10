"""Metrics against scikit-learn and against hand-computed formulas."""
import numpy as np
import pytest
from sklearn import metrics as skm

from studylib.training.metrics import classification_metrics, confusion


def random_case(k, n=200, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[labels] * rng.uniform(0, 1, (n, 1))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return labels, probs


@pytest.mark.parametrize("k", [2, 3, 5])
def test_matches_sklearn(k):
    labels, probs = random_case(k, seed=k)
    preds = probs.argmax(1)
    got = classification_metrics(labels, probs)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(labels, preds))
    assert got["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(labels, preds))
    assert got["macro_f1"] == pytest.approx(skm.f1_score(labels, preds, average="macro"))
    assert got["kappa"] == pytest.approx(skm.cohen_kappa_score(labels, preds))
    expected_auc = (skm.roc_auc_score(labels, probs[:, 1]) if k == 2
                    else skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
    assert got["auroc"] == pytest.approx(expected_auc)
    assert np.array_equal(confusion(labels, probs), skm.confusion_matrix(labels, preds))


def test_balanced_accuracy_and_kappa_by_formula():
    labels, probs = random_case(4, n=300, seed=7)
    preds = probs.argmax(1)
    recalls = [np.mean(preds[labels == c] == c) for c in range(4)]
    got = classification_metrics(labels, probs)
    assert got["balanced_accuracy"] == pytest.approx(np.mean(recalls))
    observed = np.mean(preds == labels)
    chance = sum(np.mean(labels == c) * np.mean(preds == c) for c in range(4))
    assert got["kappa"] == pytest.approx((observed - chance) / (1 - chance))


def test_binary_auroc_is_the_mann_whitney_probability():
    labels, probs = random_case(2, n=150, seed=3)
    pos, neg = probs[labels == 1, 1], probs[labels == 0, 1]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert classification_metrics(labels, probs)["auroc"] == pytest.approx(pairs)


def test_auroc_is_nan_when_only_one_class_is_present():
    probs = np.full((4, 3), 1 / 3)
    assert np.isnan(classification_metrics(np.zeros(4, int), probs)["auroc"])
