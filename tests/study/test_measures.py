"""Measurements beyond accuracy, checked against oracles.

Pinned here:
- calibration: ECE (equal width) equals torchmetrics' multiclass calibration error, the Brier score
  and NLL equal scikit-learn's, equal-mass ECE equals a hand computation, and bootstrap weights count
  an image as often as it is repeated (also through study.stats, where lower is better);
- linear CKA: its definition (HSIC with the centring matrix) and invariances;
- few labels: subsample_train is nested, stratified, group-safe and seeded, and load_dataset leaves
  validation and test untouched;
- a run writes representations.csv, reliability.csv and the calibration metrics consistently;
- the known transfer pattern on the synthetic source -> target pair: LP keeps every block, FT changes
  the top block most, LP-FT moves it less than FT.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_config
from sklearn.metrics import brier_score_loss, log_loss
from torchmetrics.functional.classification import multiclass_calibration_error

from studylib import RunConfig
from studylib.core.config import ConfigError
from studylib.data.datasets import load_dataset
from studylib.data.splits import UNUSED, subsample_train
from studylib.study.stats import Predictions, paired_gain, weighted_scores
from studylib.training.calibration import (
    bin_of,
    calibration_metrics,
    calibration_scores,
    reliability_table,
)
from studylib.training.pretrain import pretrain, pretrain_config
from studylib.training.representations import linear_cka, probe_subset
from studylib.training.runner import run

TINY_BLOCKS = ["stem", "stage1", "stage2", "stage3"]


def random_predictions(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities of a wide spread of confidences, labels drawn partly from them (so
    accuracy is neither 0 nor 1 and the bins are not all alike)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * rng.uniform(0.2, 4, size=(n, 1))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    from_probs = np.array([rng.choice(k, p=p) for p in probs])
    labels = np.where(rng.random(n) < 0.7, from_probs, rng.integers(0, k, n))
    return labels, probs


# --- calibration -----------------------------------------------------------------------------------
@pytest.mark.parametrize("k, bins, seed", [(2, 10, 0), (3, 15, 1), (5, 7, 2), (10, 20, 3)])
def test_ece_equals_torchmetrics_multiclass_calibration_error(k, bins, seed):
    labels, probs = random_predictions(400, k, seed)
    expected = multiclass_calibration_error(torch.tensor(probs), torch.tensor(labels), num_classes=k,
                                            n_bins=bins, norm="l1")
    assert calibration_metrics(labels, probs, bins)["ece"] == pytest.approx(float(expected), abs=1e-5)


@pytest.mark.parametrize("k, seed", [(3, 0), (4, 1), (8, 2)])
def test_brier_equals_sklearn_multiclass_brier_score_loss(k, seed):
    labels, probs = random_predictions(300, k, seed)
    expected = brier_score_loss(labels, probs, labels=list(range(k)))
    assert calibration_metrics(labels, probs)["brier"] == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("k, seed", [(2, 0), (3, 1), (6, 2)])
def test_nll_equals_sklearn_log_loss(k, seed):
    labels, probs = random_predictions(300, k, seed)
    expected = log_loss(labels, probs, labels=list(range(k)))
    assert calibration_metrics(labels, probs)["nll"] == pytest.approx(expected, rel=1e-10)


def test_ece_mass_by_hand_on_six_images_in_two_bins():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.45, 0.55], [0.95, 0.05]])
    labels = np.array([1, 0, 1, 0, 1, 0])  # correct: no, yes, yes, no, yes, yes
    # sorted by confidence the low half is images 4, 3, 2 (0.55, 0.6, 0.7; 2 of 3 right),
    # the high half images 1, 0, 5 (0.8, 0.9, 0.95; 2 of 3 right)
    low = abs(2 / 3 - (0.55 + 0.6 + 0.7) / 3)
    high = abs(2 / 3 - (0.8 + 0.9 + 0.95) / 3)
    metrics = calibration_metrics(labels, probs, bins=2)
    assert metrics["ece_mass"] == pytest.approx(3 / 6 * low + 3 / 6 * high)
    # equal width puts every confidence (all >= 0.5) in the upper bin: a different number
    assert metrics["ece"] == pytest.approx(abs(4 / 6 - probs.max(1).mean()))


def test_perfectly_calibrated_predictions_give_zero_ece():
    probs = np.tile([0.8, 0.2], (10, 1))
    labels = np.array([0, 0, 0, 0, 1, 0, 0, 0, 0, 1])  # 80% right in each half, as 0.8 promises
    metrics = calibration_metrics(labels, probs, bins=2)
    assert metrics["ece"] == pytest.approx(0, abs=1e-12)
    assert metrics["ece_mass"] == pytest.approx(0, abs=1e-12)


def test_confident_right_predictions_score_zero_everywhere():
    labels = np.array([0, 1, 2, 1])
    metrics = calibration_metrics(labels, np.eye(3)[labels], bins=15)
    assert metrics == pytest.approx({"ece": 0, "ece_mass": 0, "brier": 0, "nll": 0}, abs=1e-9)


def test_a_confidence_of_one_falls_in_the_last_width_bin():
    assert bin_of(np.array([0.0, 0.0999, 0.1, 0.55, 1.0]), 10).tolist() == [0, 0, 1, 5, 9]


@pytest.mark.parametrize("metric", ["ece", "brier", "nll"])
def test_integer_weights_equal_the_metric_on_repeated_images(metric):
    labels, probs = random_predictions(60, 4, 5)
    weights = np.random.default_rng(6).integers(0, 4, size=(3, 60))
    got = calibration_scores(metric, labels, probs, weights, bins=8)
    expected = [calibration_scores(metric, np.repeat(labels, w), np.repeat(probs, w, axis=0), None, bins=8)[0]
                for w in weights]
    assert got == pytest.approx(expected, rel=1e-10)


def test_reliability_table_reproduces_both_eces():
    labels, probs = random_predictions(200, 3, 7)
    table = reliability_table(labels, probs, bins=6)
    metrics = calibration_metrics(labels, probs, bins=6)
    for scheme, name in (("width", "ece"), ("mass", "ece_mass")):
        rows = table[table.scheme == scheme]
        assert rows.images.sum() == 200
        gap = (rows.images * (rows.accuracy - rows.confidence).abs()).sum() / 200
        assert gap == pytest.approx(metrics[name], rel=1e-10)


def test_weighted_scores_brier_matches_sklearn_with_sample_weight():
    labels, probs = random_predictions(80, 3, 8)
    weights = np.random.default_rng(9).integers(0, 3, size=(4, 80)).astype(float)
    p = Predictions(np.arange(80).astype(str), labels, probs, bins=5)
    expected = [brier_score_loss(labels, probs, labels=[0, 1, 2], sample_weight=w) for w in weights]
    assert weighted_scores("brier", p, weights) == pytest.approx(expected, rel=1e-10)
    assert weighted_scores("ece", p, np.ones((1, 80)))[0] == pytest.approx(calibration_metrics(labels, probs, 5)["ece"])


def test_paired_gain_counts_a_lower_brier_than_the_baseline_as_a_gain():
    pairs = []
    for seed in range(3):
        labels, noisy = random_predictions(150, 3, seed)
        sharper = 0.5 * noisy + 0.5 * np.eye(3)[labels]  # closer to the truth: lower Brier
        ids = np.arange(150).astype(str)
        pairs.append((Predictions(ids, labels, sharper), Predictions(ids, labels, noisy)))
    gain = paired_gain(pairs, "brier", n_boot=50)
    expected = [calibration_metrics(b.labels, b.probs)["brier"] - calibration_metrics(a.labels, a.probs)["brier"]
                for a, b in pairs]
    assert gain.per_seed == pytest.approx(expected)
    assert gain.gain > 0 and gain.low > 0


# --- linear CKA ------------------------------------------------------------------------------------
def cka_by_definition(x: np.ndarray, y: np.ndarray) -> float:
    """HSIC with the centring matrix H = I - 11^T / n on the linear kernels (Kornblith et al. 2019, eq. 4)."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T

    def hsic(a, b):
        return np.trace(a @ h @ b @ h)

    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


def debiased_cka_by_definition(x: np.ndarray, y: np.ndarray) -> float:
    """Song et al. 2012's unbiased HSIC written out term by term, with its constant 1 / (n (n - 3))."""
    n = len(x)
    x, y = x - x.mean(0), y - y.mean(0)

    def hsic(a, b):
        a, b = a.copy(), b.copy()
        np.fill_diagonal(a, 0)
        np.fill_diagonal(b, 0)
        one = np.ones(n)
        return (np.trace(a @ b) + (one @ a @ one) * (one @ b @ one) / ((n - 1) * (n - 2))
                - 2 / (n - 2) * one @ a @ b @ one) / (n * (n - 3))

    k, l_ = x @ x.T, y @ y.T
    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


def features(n: int, p: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, p)) + 3.0  # an offset: centring matters


@pytest.mark.parametrize("n, p, q", [(50, 8, 5), (30, 16, 16), (10, 60, 40)])  # the last: more features than images
def test_cka_matches_hsic_with_the_centering_matrix(n, p, q):
    x = features(n, p, 0)
    y = x[:, :min(p, q)] @ np.random.default_rng(1).normal(size=(min(p, q), q)) + features(n, q, 2)
    assert linear_cka(x, y, debiased=False) == pytest.approx(cka_by_definition(x, y), rel=1e-9)
    assert linear_cka(x, y) == pytest.approx(debiased_cka_by_definition(x, y), rel=1e-9)


@pytest.mark.parametrize("p", [16, 512])
def test_debiased_cka_of_unrelated_features_is_near_zero_whatever_the_width(p):
    x, y = features(256, p, 10), features(256, p, 11)
    assert abs(linear_cka(x, y)) < 0.02
    assert linear_cka(x, y, debiased=False) > 0.05  # the plain estimator's floor, which grows with p


def test_cka_of_a_representation_with_itself_is_one():
    x = features(40, 12, 3)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_cka_is_invariant_to_an_orthogonal_transform_and_isotropic_scaling():
    x, y = features(40, 12, 4), features(40, 9, 5)
    q, _ = np.linalg.qr(np.random.default_rng(6).normal(size=(12, 12)))
    assert linear_cka(x @ q, y) == pytest.approx(linear_cka(x, y), rel=1e-9)
    assert linear_cka(7.5 * x, y) == pytest.approx(linear_cka(x, y), rel=1e-9)
    assert linear_cka(x, x @ q * 0.01) == pytest.approx(1.0, abs=1e-9)


def test_cka_is_not_invariant_to_a_non_isotropic_scaling():
    x = features(40, 12, 7)
    stretched = x * np.geomspace(0.1, 10, 12)
    assert linear_cka(x, stretched) < 0.99


def test_cka_lies_between_zero_and_one():
    rng = np.random.default_rng(8)
    values = []
    for i in range(30):
        x = features(20, 10, 100 + i)
        y = rng.uniform(-1, 1) * x @ rng.normal(size=(10, 6)) + features(20, 6, 200 + i) * rng.uniform(0, 3)
        values.append(linear_cka(x, y, debiased=False))
    assert min(values) >= 0 and max(values) <= 1 + 1e-12
    assert max(values) - min(values) > 0.3  # the pairs span a range, not one value


def test_cka_of_a_constant_representation_is_undefined():
    assert np.isnan(linear_cka(np.ones((10, 4)), features(10, 4, 9)))


def test_probe_subset_is_a_seeded_subset_of_validation(tiny_data):
    val = tiny_data.indices("val")
    subset = probe_subset(tiny_data, 5, seed=1)
    assert len(subset) == 5 and set(subset) <= set(val) and list(subset) == sorted(subset)
    assert np.array_equal(subset, probe_subset(tiny_data, 5, seed=1))
    assert np.array_equal(probe_subset(tiny_data, 10_000, seed=1), val)


# --- few labels ------------------------------------------------------------------------------------
def grouped_data(seed: int = 0):
    """Groups (patients) of 3-5 images, each group in one split, labels mostly shared within a group."""
    rng = np.random.default_rng(seed)
    labels, split, groups = [], [], []
    for g in range(240):
        size, label = rng.integers(3, 6), rng.choice(4, p=[0.4, 0.3, 0.2, 0.1])
        where = rng.choice(["train", "val", "test"], p=[0.7, 0.15, 0.15])
        labels += [label if rng.random() < 0.8 else rng.integers(0, 4) for _ in range(size)]
        split += [where] * size
        groups += [f"patient{g}"] * size
    return np.array(labels), np.array(split), np.array(groups)


def kept(split: np.ndarray) -> set[int]:
    return set(np.flatnonzero(split == "train"))


@pytest.mark.parametrize("use_groups", [False, True])
def test_subsample_is_nested_across_fractions(use_groups):
    labels, split, groups = grouped_data()
    groups = groups if use_groups else None
    small, middle, large = (kept(subsample_train(labels, split, groups, f, seed=3)) for f in (0.05, 0.2, 0.5))
    assert small < middle < large < kept(split)
    few, more = (kept(subsample_train(labels, split, groups, per_class=k, seed=3)) for k in (2, 5))
    assert few < more


def test_subsample_keeps_about_the_fraction_of_every_class():
    labels, split, _ = grouped_data()
    for fraction in (0.001, 0.1, 0.3):
        out = subsample_train(labels, split, None, fraction, seed=1)
        for c in range(4):
            before = ((split == "train") & (labels == c)).sum()
            after = ((out == "train") & (labels == c)).sum()
            assert after >= 1 and abs(after - fraction * before) <= 1


def test_subsample_never_splits_a_group_and_leaves_val_and_test_alone():
    labels, split, groups = grouped_data()
    out = subsample_train(labels, split, groups, 0.25, seed=2)
    assert set(out) == {"train", "val", "test", UNUSED}
    for name in np.unique(groups[split == "train"]):
        assert len(set(out[groups == name])) == 1, name
    assert np.array_equal(out[split != "train"], split[split != "train"])
    assert np.array_equal(split[out == UNUSED], np.full((out == UNUSED).sum(), "train"))
    share = (out == "train").sum() / (split == "train").sum()
    assert share == pytest.approx(0.25, abs=0.05)  # whole groups: about the fraction, not exactly


@pytest.mark.parametrize("use_groups", [False, True])
def test_per_class_keeps_about_k_images_of_every_class(use_groups):
    labels, split, groups = grouped_data()
    out = subsample_train(labels, split, groups if use_groups else None, per_class=6, seed=4)
    per_class = np.bincount(labels[out == "train"], minlength=4)
    if use_groups:  # the last group taken may overshoot; mixed-label groups count for their majority
        assert all(3 <= n <= 6 + 4 + 2 for n in per_class), per_class
    else:
        assert per_class.tolist() == [6, 6, 6, 6]


def test_per_class_beyond_a_class_size_keeps_the_whole_class():
    labels, split, _ = grouped_data()
    assert np.array_equal(subsample_train(labels, split, None, per_class=100_000), split)


def test_different_seeds_keep_different_images():
    labels, split, groups = grouped_data()
    a, b = (kept(subsample_train(labels, split, groups, 0.3, seed=s)) for s in (0, 1))
    assert a != b
    assert a == kept(subsample_train(labels, split, groups, 0.3, seed=0))


def test_the_whole_training_split_is_returned_unchanged():
    labels, split, groups = grouped_data()
    assert np.array_equal(subsample_train(labels, split, groups, 1.0, 0, seed=5), split)


def test_load_dataset_with_train_fraction_keeps_validation_and_test():
    full = load_dataset(tiny_config(synthetic_size=240), progress=False)
    few = load_dataset(tiny_config(synthetic_size=240, train_fraction=0.25), progress=False)
    assert few.ids == full.ids
    for name in ("val", "test"):
        assert np.array_equal(few.indices(name), full.indices(name))
    assert set(few.indices("train")) < set(full.indices("train"))
    assert set(few.indices(UNUSED)) == set(full.indices("train")) - set(few.indices("train"))
    report = few.report["few_labels"]
    assert report["train_images"] == len(few.indices("train"))
    assert report["left_out"] == len(few.indices(UNUSED))
    assert len(few.indices("train")) / len(full.indices("train")) == pytest.approx(0.25, abs=0.05)
    assert "few_labels" not in full.report


@pytest.mark.parametrize("changes", [{"train_fraction": 0.5, "train_per_class": 3}, {"train_fraction": 0.0},
                                     {"train_fraction": 1.5}, {"train_per_class": -1}])
def test_invalid_few_label_settings_are_refused(changes):
    with pytest.raises(ConfigError):
        RunConfig(**changes)


# --- a run end to end ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def per_epoch_run(tmp_path_factory):
    """A tiny run that also compares features after every epoch."""
    return run(tiny_config(log_representations_every=1), tmp_path_factory.mktemp("runs") / "every")


def test_run_writes_one_selected_representation_row_per_backbone_block(per_epoch_run):
    frame = pd.read_csv(per_epoch_run.path / "representations.csv")
    selected = frame[frame.selected]
    assert selected.block.tolist() == TINY_BLOCKS
    assert (selected.epoch == per_epoch_run.metrics["best_epoch"]).all()
    assert selected.cka.between(-0.1, 1 + 1e-9).all() and (selected.rel_dist_init > 0).all()


def test_run_logs_representations_after_every_epoch(per_epoch_run):
    frame = pd.read_csv(per_epoch_run.path / "representations.csv")
    epochs = frame[~frame.selected]
    assert epochs.groupby("epoch").block.apply(list).to_dict() == {
        e: TINY_BLOCKS for e in range(per_epoch_run.metrics["epochs_run"])}
    # the selected network is the one at the best epoch: its features are those logged then
    best = epochs[epochs.epoch == per_epoch_run.metrics["best_epoch"]]
    assert frame[frame.selected].cka.tolist() == pytest.approx(best.cka.tolist(), abs=1e-9)


def test_run_calibration_metrics_match_its_predictions(per_epoch_run):
    predictions = pd.read_csv(per_epoch_run.path / "predictions.csv")
    probs = predictions[[c for c in predictions.columns if c.startswith("prob_")]].to_numpy()
    expected = calibration_metrics(predictions.label.to_numpy(), probs, bins=15)
    test = json.loads((per_epoch_run.path / "metrics.json").read_text())["test"]
    assert {name: test[name] for name in expected} == pytest.approx(expected, rel=1e-6)
    reliability = pd.read_csv(per_epoch_run.path / "reliability.csv")
    assert set(reliability.scheme) == {"width", "mass"}
    assert (reliability.groupby("scheme").images.sum() == len(predictions)).all()


def test_run_without_representation_images_writes_no_representations(tmp_path):
    result = run(tiny_config(repr_images=0, max_epochs=1), tmp_path / "off")
    assert not (result.path / "representations.csv").exists()
    assert (result.path / "reliability.csv").is_file()


def test_linear_probing_leaves_every_block_unchanged(tmp_path):
    result = run(tiny_config(strategy="lp", max_epochs=2), tmp_path / "lp")
    frame = pd.read_csv(result.path / "representations.csv")
    assert frame.block.tolist() == TINY_BLOCKS
    assert frame.cka.tolist() == pytest.approx([1.0] * 4, abs=1e-6)
    assert frame.rel_dist_init.tolist() == [0.0] * 4


# --- the known pattern: synthetic source -> target -------------------------------------------------
@pytest.fixture(scope="module")
def transfer(tmp_path_factory):
    """Selected-network CKA and weight distance per block for ft, lp and lp_ft from a pretrained start."""
    root = tmp_path_factory.mktemp("transfer")
    source = pretrain_config(image_size=16, size=800, epochs=5, quiet=True).replace(device="cpu")
    checkpoint = pretrain(root / "src.pt", source)
    frames = {}
    for strategy in ("ft", "lp", "lp_ft"):
        cfg = RunConfig(backbone="tinycnn", image_size=16, synthetic_size=320, batch_size=32, max_epochs=6,
                        patience=10, quiet=True, device="cpu", weights=str(checkpoint), lp_epochs=2,
                        strategy=strategy)
        frame = pd.read_csv(run(cfg, root / strategy).path / "representations.csv")
        frames[strategy] = frame[frame.selected].set_index("block").loc[TINY_BLOCKS]
    return frames


def test_lp_keeps_every_pretrained_block(transfer):
    assert transfer["lp"].cka.tolist() == pytest.approx([1.0] * 4, abs=1e-6)


def test_ft_changes_the_deeper_blocks_more(transfer):
    cka, distance = transfer["ft"].cka, transfer["ft"].rel_dist_init
    assert cka.idxmin() == "stage3" and cka["stage3"] < cka["stem"]
    assert distance.idxmax() == "stage3"
    assert cka["stage3"] < 0.9  # a real change, not noise


def test_lp_ft_moves_the_top_block_less_than_ft(transfer):
    assert transfer["lp_ft"].cka["stage3"] > transfer["ft"].cka["stage3"]
    assert transfer["lp_ft"].rel_dist_init["stage3"] < transfer["ft"].rel_dist_init["stage3"]


# --- the cost frontier ---------------------------------------------------------------------------------------
def test_the_frontier_marks_the_strategies_no_other_beats_for_less():
    from studylib.study.measures import frontier

    rows = [("a", 0.80, 100, 10.0), ("b", 0.85, 1000, 10.0), ("c", 0.79, 500, 1.0), ("d", 0.80, 100, 20.0)]
    best = pd.DataFrame([{"protocol": "P1", "dataset": "x", "backbone": "y", "arm": arm, "seed": seed,
                          "test_balanced_accuracy": score, "test_loss": 1 - score, "trainable_params": params,
                          "wall_seconds": seconds * 4, "epochs_run": 4, "peak_memory_mb": 50.0}
                         for arm, score, params, seconds in rows for seed in (1, 2)])
    table = frontier(best).set_index("arm")
    assert table.frontier_trainable_params.to_dict() == {"a": True, "b": True, "c": False, "d": True}  # a = d: both
    assert table.frontier_seconds_per_epoch.to_dict() == {"a": False, "b": True, "c": True, "d": False}  # b beats a
    assert table.seconds_per_epoch.to_dict() == {"a": 10.0, "b": 10.0, "c": 1.0, "d": 20.0}
    by_loss = frontier(best, metric="loss").set_index("arm")  # lower is better: the same order
    assert by_loss.frontier_trainable_params.to_dict() == table.frontier_trainable_params.to_dict()
