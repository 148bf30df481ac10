"""The statistics behind every verdict: a two-level bootstrap of paired gains, multiplicity
correction, and the Friedman test with its post-hoc over many cases.

Two-level (hierarchical) bootstrap, after Bouthillier et al., "Accounting for Variance in
Machine Learning Benchmarks" (MLSys 2021) and Davison & Hinkley, "Bootstrap Methods and their
Application" (1997, section 3.8, multi-stage sampling): a gain has two sources of variance,
the training run (seed: head initialisation, batch order, and the split when it is re-drawn)
and the test sample. Each draw resamples the seeds with replacement, then, for every seed
drawn, the test images with replacement, paired between the strategy and the baseline (both
were tested on the same images); the draw's gain is the mean over its seeds. Every metric is
computed from the stored predictions with the draw's image counts as weights, so one method
serves all of them. With few seeds the seed level has few distinct resamples (3 seeds: 10), so
intervals are approximate; verdicts need at least MIN_SEEDS seeds.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

MIN_SEEDS = 3  # fewer seeds: the seed-to-seed variance is unknown, no verdict is claimed
LEVEL = 0.95


@dataclass
class Predictions:
    """One run's test predictions, sorted by image id."""

    ids: np.ndarray
    labels: np.ndarray
    probs: np.ndarray  # (n, k)

    @classmethod
    def read(cls, run: str | Path) -> "Predictions":
        frame = pd.read_csv(Path(run) / "predictions.csv").sort_values("id", kind="stable")
        prob_columns = [c for c in frame.columns if c.startswith("prob_")]
        if prob_columns:
            probs = frame[prob_columns].to_numpy(dtype=float)
        else:  # written by a studylib that kept only the predicted class: one-hot "probabilities"
            probs = np.eye(int(max(frame.label.max(), frame.pred.max())) + 1)[frame.pred.to_numpy()]
        return cls(frame.id.astype(str).to_numpy(), frame.label.to_numpy(dtype=int), probs)

    @property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(1)


# --- every metric under image weights (a bootstrap draw is a vector of image counts) -------------
def weighted_scores(metric: str, p: Predictions, weights: np.ndarray) -> np.ndarray:
    """`metric` of `p` under each row of `weights` (draws x images): the same definitions as
    training.metrics (scikit-learn), with each image counted `weight` times."""
    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    if metric in ("auroc", "macro_ap"):
        return _ranked(metric, p, weights)
    if metric == "loss":
        nll = -np.log(np.clip(p.probs[np.arange(len(p.labels)), p.labels], 1e-12, None))
        return weights @ nll / weights.sum(1)
    return _from_confusion(metric, _confusions(p, weights))


def _confusions(p: Predictions, weights: np.ndarray) -> np.ndarray:
    """Weighted confusion matrices, (draws, true class, predicted class)."""
    k = p.probs.shape[1]
    cell = p.labels * k + p.preds
    onehot = np.zeros((len(cell), k * k))
    onehot[np.arange(len(cell)), cell] = 1.0
    return (weights @ onehot).reshape(-1, k, k)


def _from_confusion(metric: str, cm: np.ndarray) -> np.ndarray:
    total = cm.sum((1, 2))
    diagonal = np.einsum("bii->bi", cm)
    true_count, pred_count = cm.sum(2), cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric == "accuracy":
            return diagonal.sum(1) / total
        if metric == "balanced_accuracy":  # mean recall over the classes present in the draw
            recall = np.where(true_count > 0, diagonal / true_count, np.nan)
            return np.nanmean(recall, 1)
        if metric == "macro_f1":  # over every class, 0 where undefined (zero_division=0)
            denominator = true_count + pred_count
            return np.where(denominator > 0, 2 * diagonal / np.where(denominator > 0, denominator, 1), 0.0).mean(1)
        if metric == "kappa":
            observed = diagonal.sum(1) / total
            chance = (true_count * pred_count).sum(1) / total**2
            kappa = (observed - chance) / (1 - chance)
            return np.where(np.isfinite(kappa), kappa, np.nan)
    raise ValueError(f"no bootstrap scorer for metric {metric!r}")


def _ranked(metric: str, p: Predictions, weights: np.ndarray) -> np.ndarray:
    """Macro one-vs-rest AUROC or average precision over the classes present in each draw."""
    per_class = []
    for c in np.unique(p.labels):
        positive = p.labels == c
        order = np.argsort(p.probs[:, c], kind="stable")
        scores, pos = p.probs[order, c], positive[order].astype(float)
        w = weights[:, order]
        # tie groups of equal scores: [start, end) in the sorted order
        starts = np.flatnonzero(np.r_[True, scores[1:] != scores[:-1]])
        w_pos, w_neg = w * pos, w * (1 - pos)
        grp_pos = np.add.reduceat(w_pos, starts, axis=1)
        grp_neg = np.add.reduceat(w_neg, starts, axis=1)
        total_pos, total_neg = grp_pos.sum(1), grp_neg.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            if metric == "auroc":  # P(score of a positive > a negative's), ties count one half
                below = np.cumsum(grp_neg, 1) - grp_neg
                value = (grp_pos * (below + 0.5 * grp_neg)).sum(1) / (total_pos * total_neg)
            else:  # step-wise AP over thresholds from the highest score down (scikit-learn's)
                tp = np.cumsum(grp_pos[:, ::-1], 1)
                fp = np.cumsum(grp_neg[:, ::-1], 1)
                precision = tp / (tp + fp)
                recall_step = grp_pos[:, ::-1] / total_pos[:, None]
                value = np.nansum(recall_step * np.nan_to_num(precision), 1)
                value = np.where(total_pos > 0, value, np.nan)
        per_class.append(np.where((total_pos > 0) & ((total_neg > 0) | (metric != "auroc")), value, np.nan))
    with np.errstate(invalid="ignore"):
        return np.nanmean(np.stack(per_class), 0)


# --- the paired gain and its interval ----------------------------------------------------------
@dataclass
class Gain:
    gain: float  # mean over seeds of (strategy - baseline) on the same test images
    low: float  # the interval at LEVEL, before any multiplicity correction
    high: float
    p: float  # two-sided bootstrap p-value of "no difference"
    seeds: int
    per_seed: list[float]


def paired_gain(pairs: list[tuple[Predictions, Predictions]], metric: str, n_boot: int = 1000,
                seed: int = 0) -> Gain:
    """Gain of the first of each (strategy, baseline) pair over the second, one pair per seed,
    with the two-level bootstrap described at the top of this module."""
    for a, b in pairs:
        if not np.array_equal(a.ids, b.ids):
            raise ValueError("a strategy and its baseline were tested on different images; compare runs of one split")
    rng = np.random.default_rng(seed)
    per_seed = [float(_diff(metric, a, b, np.ones((1, len(a.ids))))[0]) for a, b in pairs]
    k = len(pairs)
    picked = rng.integers(0, k, (n_boot, k))  # level 1: which seed fills each slot of each draw
    diffs = np.full((n_boot, k), np.nan)
    for j, (a, b) in enumerate(pairs):
        rows, slots = np.nonzero(picked == j)
        n = len(a.ids)
        for chunk in range(0, len(rows), 256):  # bounded memory on large test sets
            part = slice(chunk, chunk + 256)
            counts = rng.multinomial(n, np.full(n, 1 / n), size=len(rows[part]))  # level 2: test images
            diffs[rows[part], slots[part]] = _diff(metric, a, b, counts)
    draws = np.nanmean(diffs, 1)
    draws = draws[np.isfinite(draws)]
    alpha = 1 - LEVEL
    low, high = np.percentile(draws, [100 * alpha / 2, 100 * (1 - alpha / 2)]) if len(draws) else (np.nan, np.nan)
    return Gain(float(np.mean(per_seed)), float(low), float(high), bootstrap_p(draws), k, per_seed)


def _diff(metric: str, a: Predictions, b: Predictions, counts: np.ndarray) -> np.ndarray:
    sign = -1.0 if metric == "loss" else 1.0  # a gain is an improvement: lower loss is better
    return sign * (weighted_scores(metric, a, counts) - weighted_scores(metric, b, counts))


def bootstrap_p(draws: np.ndarray) -> float:
    """Two-sided p-value of a zero gain: twice the smaller tail of the bootstrap distribution
    (the interval-inversion p-value; +1 so it is never exactly 0)."""
    if len(draws) == 0:
        return float("nan")
    if np.all(draws == 0):
        return 1.0
    below, above = (np.sum(draws <= 0) + 1) / (len(draws) + 1), (np.sum(draws >= 0) + 1) / (len(draws) + 1)
    return float(min(1.0, 2 * min(below, above)))


def adjust(p_values: pd.Series, method: str = "holm") -> pd.Series:
    """Family-wise (Holm 1979) or false-discovery-rate (Benjamini-Hochberg, 'fdr_bh') adjusted p-values."""
    from statsmodels.stats.multitest import multipletests

    valid = p_values.dropna()
    out = pd.Series(np.nan, index=p_values.index)
    if len(valid):
        out[valid.index] = multipletests(valid.to_numpy(), method=method)[1]
    return out


CORRECTIONS = {"holm": "Holm (family-wise error)", "fdr_bh": "Benjamini-Hochberg (false discovery rate)"}


# --- many strategies over many cases (Demsar 2006) ------------------------------------------------
@dataclass
class RankTest:
    """Friedman test over blocks (rows) x strategies (columns) and its pairwise post-hoc."""

    scores: pd.DataFrame  # blocks x strategies, higher is better
    ranks: pd.Series  # mean rank per strategy, 1 = best
    friedman_p: float
    pairwise_p: pd.DataFrame  # strategies x strategies, adjusted p-values of the post-hoc
    posthoc: str
    blocks: str  # what a block is ("dataset x backbone cases" or "seeds of one case")


def rank_test(scores: pd.DataFrame, posthoc: str = "nemenyi", blocks: str = "cases") -> RankTest | None:
    """Friedman test and post-hoc (Nemenyi, or Wilcoxon signed-rank with Holm as Benavoli et al.
    2016 recommend) over the complete rows of `scores`; None with fewer than 2 rows or 3 columns."""
    import scikit_posthocs as sp
    from scipy import stats

    scores = scores.dropna(axis=0, how="any")
    if len(scores) < 2 or scores.shape[1] < 3:
        return None
    ranks = scores.rank(axis=1, ascending=False, method="average").mean().sort_values()
    columns = [scores[c].to_numpy() for c in scores.columns]
    if np.all(np.ptp(scores.to_numpy(), axis=1) == 0):
        friedman = 1.0  # every block ties every strategy
    else:
        friedman = float(stats.friedmanchisquare(*columns).pvalue)
    if posthoc == "wilcoxon":
        melted = scores.reset_index(drop=True).melt(var_name="strategy", value_name="score", ignore_index=False)
        pairwise = sp.posthoc_wilcoxon(melted.reset_index(), val_col="score", group_col="strategy", p_adjust="holm",
                                       zero_method="zsplit")
    else:
        pairwise = sp.posthoc_nemenyi_friedman(scores.to_numpy())
        pairwise.index = pairwise.columns = scores.columns
    pairwise = pairwise.fillna(1.0)
    return RankTest(scores, ranks, friedman, pairwise.loc[ranks.index, ranks.index], posthoc, blocks)
