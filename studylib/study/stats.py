"""The statistics behind every verdict: paired gains with an interval that carries both sources of
variance, multiplicity correction, and the Friedman test with its post-hoc over many cases.

A gain has two sources of variance (Bouthillier et al., "Accounting for Variance in Machine
Learning Benchmarks", MLSys 2021): the training run (seed: head initialisation, batch order, and
the split when it is re-drawn) and the test sample. studylib's interval for the mean gain over k
seeds is a t-interval whose variance adds the two:

- seed level: s^2 / k, with s^2 the sample variance of the k per-seed gains;
- test level: V, the bootstrap variance of the mean gain when the test images are resampled
  (paired: the strategy and the baseline are scored on the same resampled images, every metric
  recomputed from the stored predictions with the draw's image counts as weights).

When every seed was tested on the same images (an official test split), the images are crossed
with the seeds: one resample of the images is applied to every seed at once (test sets that are
only partly shared are resampled from their union, so shared images count alike; they are treated
like crossed ones), V adds to s^2 / k (which then
measures training variance only, plus some image noise counted twice: conservative), and the
degrees of freedom follow Welch-Satterthwaite (1946) with V taken as known: k - 1 when the seed
term dominates, more when the well-estimated test term does. When each seed re-drew its split,
with disjoint test sets, the per-seed gains are independent replicates that already carry their
own test noise: the interval is the one-sample t-interval over them (k - 1 degrees of freedom). `calibrate_intervals.py`
in benchmarks/ measures how often each design calls a null difference significant. A t-interval is
used at the seed level because a percentile bootstrap over 3 seeds cannot put mass beyond the
seeds observed and covers far less than 95% (a simulation with no true gain and a seed sd of 5
points called 20% of cases significant); the t-distribution with k - 1 degrees of freedom is what
keeps 3 seeds honest. The p-value comes from the same t-distribution, so it has no floor and a
Holm correction over a paper-sized family (126 gains) can still reach a verdict.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..core import runfiles
from ..core.config import CALIBRATION_METRICS, improvement_sign
from ..core.constants import CALIBRATION_BINS, N_BOOT, PRACTICAL, ROPE
from ..training.calibration import calibration_scores

SEED_LIMIT = 200  # seeds_needed looks no further
MIN_SEEDS = 3  # fewer seeds: the seed-to-seed variance is too poorly known, no verdict is claimed
LEVEL = 0.95


@dataclass
class Predictions:
    """One run's test predictions, sorted by image id."""

    ids: np.ndarray
    labels: np.ndarray
    probs: np.ndarray  # (n, k)
    bins: int = CALIBRATION_BINS  # the run's calibration_bins (expected calibration error)
    has_probs: bool = True  # False: only the predicted class was stored (one-hot stand-ins)

    @classmethod
    def read(cls, run: str | Path) -> "Predictions":
        frame = pd.read_csv(Path(run) / runfiles.PREDICTIONS).sort_values("id", kind="stable")
        prob_columns = [c for c in frame.columns if c.startswith("prob_")]
        if prob_columns:
            probs = frame[prob_columns].to_numpy(dtype=float)
        else:  # written by a studylib that kept only the predicted class: one-hot "probabilities"
            probs = np.eye(int(max(frame.label.max(), frame.pred.max())) + 1)[frame.pred.to_numpy()]
        config = Path(run) / runfiles.CONFIG
        saved = json.loads(config.read_text()) if config.is_file() else {}
        bins = saved.get("calibration_bins", CALIBRATION_BINS)
        return cls(frame.id.astype(str).to_numpy(), frame.label.to_numpy(dtype=int), probs, int(bins),
                   bool(prob_columns))

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
    if metric in CALIBRATION_METRICS:
        if not p.has_probs:
            raise ValueError("predictions.csv has no probabilities (written by an older studylib): calibration "
                             "is undefined for this run")
        return calibration_scores(metric, p.labels, p.probs, weights, p.bins)
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
        if metric.startswith("recall:"):  # one class's recall: "recall:2" (NaN in a draw without that class)
            c = int(metric.split(":")[1])
            return np.where(true_count[:, c] > 0, diagonal[:, c] / np.where(true_count[:, c] > 0, true_count[:, c], 1),
                            np.nan)
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
    gain: float  # mean over seeds of the improvement over the baseline on the same test images
    low: float  # the interval at LEVEL, before any multiplicity correction
    high: float
    p: float  # two-sided p-value of "no difference" (t-distribution, df below)
    seeds: int
    per_seed: list[float]
    se: float = float("nan")  # standard error of the mean gain, both sources of variance
    df: float = float("nan")
    design: str = ""  # crossed (the seeds share their test images), nested (disjoint), or partly shared
    test_var: float = 0.0  # V, the test-image part of se^2 (0 when nested: the seeds' spread already carries it)


def rope_probabilities(gain: float, se: float, df: float, rope: float) -> tuple[float, float, float]:
    """(p worse, p practically equivalent, p better) under a Student posterior of the mean gain, the form of the
    Bayesian correlated t-test (Corani & Benavoli 2015; Benavoli et al. 2017, JMLR 18(77); baycomp's
    single-data-set posterior): Student t with the paired gain's degrees of freedom, centred on the mean gain, scaled
    by its standard error. That standard error is the interval's: seed variance plus the variance of the test images
    the seeds share, so the posterior is the frequentist interval's own distribution read as a belief. The
    correlated t-test's own correction (Nadeau-Bengio, for the training sets that cross-validation folds share) is
    not applied: where each seed re-draws its split, training sets overlap and this posterior may be somewhat
    over-confident (benchmarks/calibrate_intervals.py measures the interval's error rate). `rope`: gains within
    +-rope count as practically equivalent."""
    from baycomp.single import Posterior

    if not (np.isfinite(gain) and np.isfinite(se)):
        return float("nan"), float("nan"), float("nan")
    worse, equivalent, better = Posterior(gain, se ** 2, df, rope).probs() if rope > 0 else \
        Posterior(gain, se ** 2, df, 1e-12).probs()
    return float(worse), max(0.0, float(equivalent)), float(better)


POWER = 0.8  # seeds_needed: the chance a new experiment of that size reaches a decision


def seeds_needed(gain: float, seed_sd: float, test_var: float, rope: float = ROPE, power: float = POWER) -> float:
    """Seeds per arm at which a new experiment would reach the posterior decision (practically equivalent, better or
    worse: one of them above PRACTICAL) with probability `power`, if the true mean gain and the seed-to-seed sd are
    the observed ones: the smallest k where that share of the experiment's possible mean gains (normal around `gain`
    with standard error sqrt(sd^2 / k + V); V, the test-image variance, does not shrink with seeds) gives a decided
    posterior (its degrees of freedom as paired_gain's). A plug-in estimate: the observed gain and sd are themselves
    uncertain. inf when no number of seeds would do (V alone keeps it undecided: the test set is too small for the
    ROPE, or the gain sits on the ROPE's edge); NaN without a seed sd (fewer than 2 seeds)."""
    if not (np.isfinite(gain) and np.isfinite(seed_sd)):
        return float("nan")
    test_var = float(test_var) if np.isfinite(test_var) else 0.0
    if _decision_power(gain, seed_sd, test_var, rope, float("inf")) < power:
        return float("inf")
    for k in range(MIN_SEEDS, SEED_LIMIT + 1):
        if _decision_power(gain, seed_sd, test_var, rope, k) >= power:
            return float(k)
    return float("inf")


def _decision_power(gain: float, seed_sd: float, test_var: float, rope: float, k: float) -> float:
    """The share of a k-seed experiment's possible mean gains (400 normal quantiles around `gain`) whose posterior
    passes PRACTICAL for one of worse, equivalent, better."""
    from scipy import stats as scipy_stats

    seed_var = seed_sd ** 2 / k
    variance = seed_var + test_var
    if variance <= 0:
        return 1.0 if abs(abs(gain) - rope) > 0 else 0.0
    se = float(np.sqrt(variance))
    df = variance ** 2 / (seed_var ** 2 / (k - 1)) if seed_var > 0 and np.isfinite(k) else float("inf")
    means = gain + se * scipy_stats.norm.ppf((np.arange(400) + 0.5) / 400)
    worse = scipy_stats.t.cdf((-rope - means) / se, df)
    better = scipy_stats.t.sf((rope - means) / se, df)
    decided = np.maximum(np.maximum(worse, better), 1 - worse - better) > PRACTICAL
    return float(decided.mean())


def paired_gain(pairs: list[tuple[Predictions, Predictions]], metric: str, n_boot: int = N_BOOT,
                seed: int = 0) -> Gain:
    """Improvement of the first of each (strategy, baseline) pair over the second, one pair per seed,
    with the interval described at the top of this module (`n_boot` image resamples estimate the
    test-level variance).

    Args:
        pairs: (strategy, baseline) test predictions, one pair per seed, both on the same images.
        metric: the metric compared (e.g. balanced_accuracy, ece, or recall:<class index>).
        n_boot: test-image bootstrap resamples for the test-level variance (at most 1: none).
        seed: seed of the resampling.
    """
    from scipy import stats as scipy_stats

    for a, b in pairs:
        if not np.array_equal(a.ids, b.ids):
            raise ValueError("a strategy and its baseline were tested on different images; compare runs of one split")
    rng = np.random.default_rng(seed)
    k = len(pairs)
    per_seed = np.array([_diff(metric, a, b, np.ones((1, len(a.ids))))[0] for a, b in pairs])
    design, draws = _test_draws(pairs, metric, n_boot, rng)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        # a draw with no image of a class leaves that class's recall undefined (NaN): that draw is left out
        warnings.simplefilter("ignore", RuntimeWarning)
        test_var = float(np.nanvar(np.nanmean(draws, 1), ddof=1)) if n_boot > 1 else 0.0
    gain = float(np.mean(per_seed))
    seed_var = float(np.var(per_seed, ddof=1)) / k if k > 1 else float("nan")
    if k < 2:  # no seed-level estimate: the test level alone, and the verdict says so
        variance, df = test_var, float("inf")
    elif design == "nested":  # disjoint test sets: the per-seed gains are independent replicates (a t-test;
        # a floor at V was tried and called 7-8% of null cases significant); V only when s^2 is exactly 0
        variance, df = (seed_var, k - 1) if seed_var > 0 else (test_var, float("inf"))
    else:
        variance = seed_var + test_var
        df = variance ** 2 / (seed_var ** 2 / (k - 1)) if seed_var > 0 else float("inf")
    se = float(np.sqrt(variance)) if np.isfinite(variance) else float("nan")
    counted = 0.0 if design == "nested" and k > 1 and seed_var > 0 else test_var  # V's share of se^2
    if not np.isfinite(gain) or not np.isfinite(se):
        return Gain(gain, np.nan, np.nan, np.nan, k, per_seed.tolist(), se, df, design, counted)
    if se == 0:  # identical runs, or a difference no resample can move
        return Gain(gain, gain, gain, 1.0 if gain == 0 else 0.0, k, per_seed.tolist(), 0.0, df, design, counted)
    half = float(scipy_stats.t.ppf(0.5 + LEVEL / 2, df)) * se
    p = float(2 * scipy_stats.t.sf(abs(gain) / se, df))
    return Gain(gain, gain - half, gain + half, p, k, per_seed.tolist(), se, float(df), design, counted)


def _test_draws(pairs, metric: str, n_boot: int, rng: np.random.Generator) -> tuple[str, np.ndarray]:
    """(design, draws x seeds improvements under resampled test images). The images of every seed are
    resampled from their union at once, so an image two seeds share counts the same in both: seeds
    sharing one test set get one common resample (crossed), disjoint sets independent ones (nested),
    and partly shared sets (a split re-drawn with a fixed test part) the mixture in between."""
    union, inverse = np.unique(np.concatenate([a.ids for a, _ in pairs]), return_inverse=True)
    where = np.split(inverse, np.cumsum([len(a.ids) for a, _ in pairs])[:-1])
    total = sum(len(a.ids) for a, _ in pairs)
    design = "crossed" if all(len(w) == len(union) for w in where) else \
        "nested" if len(union) == total else "partly shared"
    draws = np.zeros((n_boot, len(pairs)))
    for chunk in range(0, n_boot, 128):  # bounded memory on large test sets
        rows = min(128, n_boot - chunk)
        counts = _counts(rng, len(union), rows)
        for j, (a, b) in enumerate(pairs):
            mine = counts[:, where[j]]
            mine *= len(a.ids) / np.maximum(mine.sum(1, keepdims=True), 1)  # a resample of this seed's size
            draws[chunk:chunk + rows, j] = _diff(metric, a, b, mine)
    return design, draws


def _counts(rng: np.random.Generator, n: int, rows: int) -> np.ndarray:
    """Bootstrap image counts: `rows` resamples of n images with replacement."""
    picks = rng.integers(0, n, (rows, n))
    return np.stack([np.bincount(row, minlength=n) for row in picks]).astype(float)


def _diff(metric: str, a: Predictions, b: Predictions, counts: np.ndarray) -> np.ndarray:
    """Improvement of a over b under each row of counts (where lower is better: b - a)."""
    sign = improvement_sign(metric)
    return sign * (weighted_scores(metric, a, counts) - weighted_scores(metric, b, counts))


def adjust(p_values: pd.Series, method: str = "holm") -> pd.Series:
    """Family-wise (Holm 1979) or false-discovery-rate (Benjamini-Hochberg, 'fdr_bh') adjusted p-values; NaN stays
    NaN. Holm's step-down is written out (statsmodels' version runs a full garbage collection on every call, 0.2 s
    in a busy process, paid by every report many times); BH is scipy's."""
    from scipy.stats import false_discovery_control

    valid = p_values.dropna()
    out = pd.Series(np.nan, index=p_values.index)
    if not len(valid):
        return out
    p = valid.to_numpy(dtype=float)
    if method == "holm":
        order = np.argsort(p, kind="stable")
        stepped = np.minimum(1.0, np.maximum.accumulate(p[order] * np.arange(len(p), 0, -1)))
        adjusted = np.empty_like(p)
        adjusted[order] = stepped
    elif method == "fdr_bh":
        adjusted = false_discovery_control(p, method="bh")
    else:
        raise ValueError(f"correction {method!r}; choose one of holm, fdr_bh")
    out[valid.index] = adjusted
    return out


CORRECTIONS = {"holm": "Holm (family-wise error)", "fdr_bh": "Benjamini-Hochberg (false discovery rate)"}


# --- many strategies over many cases (Demsar 2006) ------------------------------------------------
@dataclass
class RankTest:
    """Friedman test over blocks (rows) x strategies (columns) and its pairwise post-hoc."""

    scores: pd.DataFrame  # blocks x strategies, higher is better
    ranks: pd.Series  # mean rank per strategy, 1 = best
    friedman_p: float
    pairwise_p: pd.DataFrame  # strategies x strategies, adjusted p-values of the post-hoc (all 1 when
    # the Friedman test does not reject: the post-hoc is only read after a rejection, Demsar 2006)
    posthoc: str
    blocks: str  # "N dataset x backbone cases" or "N seeds of one case ..."
    note: str = ""  # blocks or strategies left out because a strategy is missing from them
    statistic: float = float("nan")  # Friedman's chi-square
    critical_difference: float = float("nan")  # Nemenyi's CD at 0.05: mean ranks further apart differ

    @property
    def rejected(self) -> bool:
        return self.friedman_p < 1 - LEVEL

    @property
    def df(self) -> int:
        return self.scores.shape[1] - 1

    @property
    def n_blocks(self) -> int:
        return len(self.scores)

    def describe(self) -> str:
        """'Friedman chi2 = 9.31, df = 7, N = 6 datasets, p = 0.231; Nemenyi CD = 4.29 mean ranks'."""
        return (f"Friedman chi2 = {self.statistic:.2f}, df = {self.df}, N = {self.blocks}, p = {self.friedman_p:.3g}; "
                f"Nemenyi critical difference = {self.critical_difference:.2f} mean ranks")


def nemenyi_cd(strategies: int, blocks: int) -> float:
    """Demsar's (2006) critical difference: q_0.05 (studentized range over sqrt 2) x sqrt(k(k+1) / 6N)."""
    from scipy.stats import studentized_range

    q = studentized_range.ppf(LEVEL, strategies, np.inf) / np.sqrt(2)
    return float(q * np.sqrt(strategies * (strategies + 1) / (6 * blocks)))


def pool_stability(scores: pd.DataFrame, posthoc: str = "nemenyi") -> pd.DataFrame:
    """Which pairwise post-hoc verdicts depend on the pool (Benavoli, Corani & Mangili 2016): every pair's verdict
    (different at 0.05 or not) recomputed with each other strategy left out once. One row per pair: `different` in
    the full pool, `flips_without`, the strategies whose removal alone turns that verdict around, and beside them
    the pairwise Wilcoxon signed-rank test over the same blocks with Holm over all pairs (`wilcoxon_p`), whose
    statistic involves only the two strategies (those authors' recommendation)."""
    from itertools import combinations

    full = rank_test(scores, posthoc)
    columns = ["a", "b", "different", "flips_without", "depends_on_pool", "wilcoxon_p", "wilcoxon_different"]
    if full is None:
        return pd.DataFrame(columns=columns)
    names = list(full.ranks.index)
    reduced = {other: rank_test(full.scores.drop(columns=other), posthoc) for other in names}
    rows = []
    for a, b in combinations(names, 2):
        different = bool(full.pairwise_p.loc[a, b] < 1 - LEVEL)
        flips = [str(other) for other, test in reduced.items() if other not in (a, b) and test is not None
                 and bool(test.pairwise_p.loc[a, b] < 1 - LEVEL) != different]
        rows.append({"a": a, "b": b, "different": different, "flips_without": ", ".join(flips),
                     "depends_on_pool": bool(flips), "wilcoxon_p": _wilcoxon(full.scores[a], full.scores[b])})
    table = pd.DataFrame(rows, columns=columns)
    table["wilcoxon_p"] = adjust(table.wilcoxon_p.astype(float), "holm")
    table["wilcoxon_different"] = table.wilcoxon_p < 1 - LEVEL
    return table


def _wilcoxon(a: pd.Series, b: pd.Series) -> float:
    """Two-sided Wilcoxon signed-rank p-value of a - b over the blocks (zero differences split, Pratt-free); 1 when
    every difference is zero."""
    from scipy.stats import wilcoxon

    difference = (a - b).to_numpy(dtype=float)
    if not np.any(difference):
        return 1.0
    return float(wilcoxon(difference, zero_method="zsplit").pvalue)


def rank_test(scores: pd.DataFrame, posthoc: str = "nemenyi", unit: str = "blocks") -> RankTest | None:
    """Friedman test and post-hoc (Nemenyi, or Wilcoxon signed-rank with Holm as Benavoli et al.
    2016 recommend) over the blocks where every strategy ran; None with fewer than 2 such blocks or
    fewer than 3 strategies. Incomplete blocks are left out (and named in `note`); only when that
    leaves fewer than 2 blocks are the incomplete strategies left out instead."""
    import scikit_posthocs as sp
    from scipy import stats

    complete = scores.dropna(axis=0, how="any")
    note = ""
    if len(complete) < len(scores):
        if len(complete) >= 2:
            left = [" / ".join(map(str, i)) if isinstance(i, tuple) else str(i)
                    for i in scores.index.difference(complete.index)]
            note = (f"{len(left)} block(s) left out, not every strategy ran there: {', '.join(left[:5])}"
                    + (" ..." if len(left) > 5 else ""))
        else:
            complete = scores.dropna(axis=1, how="any")
            missing = sorted(set(scores.columns) - set(complete.columns))
            note = f"left out (missing from some blocks): {', '.join(map(str, missing))}" if missing else ""
    scores = complete
    if len(scores) < 2 or scores.shape[1] < 3:
        return None
    ranks = scores.rank(axis=1, ascending=False, method="average").mean().sort_values()
    if np.all(np.ptp(scores.to_numpy(), axis=1) == 0):
        friedman, statistic = 1.0, 0.0  # every block ties every strategy
    else:
        result = stats.friedmanchisquare(*[scores[c].to_numpy() for c in scores.columns])
        friedman, statistic = float(result.pvalue), float(result.statistic)
    if friedman >= 1 - LEVEL:
        pairwise = pd.DataFrame(1.0, index=scores.columns, columns=scores.columns)
    elif posthoc == "wilcoxon":
        melted = scores.reset_index(drop=True).melt(var_name="strategy", value_name="score", ignore_index=False)
        pairwise = sp.posthoc_wilcoxon(melted.reset_index(), val_col="score", group_col="strategy", p_adjust="holm",
                                       zero_method="zsplit")
    else:
        pairwise = sp.posthoc_nemenyi_friedman(scores.to_numpy())
        pairwise.index = pairwise.columns = scores.columns
    pairwise = pairwise.fillna(1.0)
    return RankTest(scores, ranks, friedman, pairwise.loc[ranks.index, ranks.index], posthoc,
                    f"{len(scores)} {unit}", note, statistic, nemenyi_cd(scores.shape[1], len(scores)))
