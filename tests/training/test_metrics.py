"""Metrics against scikit-learn and against hand-computed formulas."""
import numpy as np
import pytest
from sklearn import metrics as skm

from studylib.training.metrics import (
    classification_metrics,
    confusion,
    per_class_metrics,
)


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


def test_per_class_precision_recall_f1_support_by_their_definitions():
    rng = np.random.default_rng(3)
    labels = np.r_[np.zeros(70, int), np.ones(25, int), np.full(5, 2)]  # 14:1 imbalance, as a real test set
    probs = rng.dirichlet(np.ones(4), size=100)
    probs[:, 3] = 0  # class 3 ("absent") is never true and never predicted
    probs /= probs.sum(1, keepdims=True)
    table = per_class_metrics(labels, probs, ["a", "b", "c", "absent"])
    preds = probs.argmax(1)
    for c, name in enumerate("abc"):
        hit = ((preds == c) & (labels == c)).sum()
        precision, recall = hit / (preds == c).sum(), hit / (labels == c).sum()
        assert table[name] == pytest.approx({"precision": precision, "recall": recall, "support": (labels == c).sum(),
                                             "f1": 2 * precision * recall / (precision + recall)})
    assert table["absent"] == {"precision": None, "recall": None, "f1": None, "support": 0}
    assert np.mean([table[n]["recall"] for n in "abc"]) == pytest.approx(
        classification_metrics(labels, probs[:, :3] / probs[:, :3].sum(1, keepdims=True))["balanced_accuracy"])


def test_every_view_of_the_same_runs_draws_the_same_number_of_resamples():
    import inspect
    import json

    from conftest import ROOT

    from studylib.cli import build_parser
    from studylib.core.constants import N_BOOT
    from studylib.study import analysis, measures, stats
    from studylib.views import explorer, report
    defaults = [inspect.signature(f).parameters["n_boot"].default for f in (
        stats.paired_gain, analysis.gain_summary, analysis.bn_split, measures.calibration_gains, report.write_report,
        explorer.Explorer.__init__)]
    assert defaults == [N_BOOT] * len(defaults) and analysis.Study.n_boot == N_BOOT
    cells = json.loads((ROOT / "notebooks" / "analysis.ipynb").read_text())["cells"]
    assert any(f"n_boot: int = {N_BOOT} " in "".join(c["source"]) for c in cells)
    assert build_parser().parse_args(["report", "x"]).boot == N_BOOT
