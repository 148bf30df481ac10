"""From verdicts to decisions: what the comparison says a researcher should do.

- Across cases (Benavoli et al. 2017, JMLR 18(77), baycomp): the Bayesian signed-rank test on the per-block mean
  gains over FT gives p(worse), p(practically equivalent), p(better) for the whole pool of datasets, with the same
  region of practical equivalence (ROPE) as the per-case decision. Blocks are the rank tests' (a dataset is one
  block when several backbones share its images).
- Probability of improvement (Agarwal et al. 2021, rliable): per case, P(a run of the strategy scores above a run of
  FT) (ties count one half), averaged over the cases, with a stratified-bootstrap interval (seeds resampled within
  each case).
- Performance profile of the paired gains: the share of cases whose mean gain over FT is above t, for every t.
- Which strategy for my data: per protocol group (the label budget and recipe) x modality x backbone, the strategies
  not worse than the best (practically equivalent to it or better, on every case of the group) and the cheapest
  among them; where the evidence does not allow it, how many seeds it would take (`seeds_needed`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.config import improvement_sign
from ..core.constants import BASELINE, PRACTICAL, ROPE
from . import stats
from .analysis import CASE, datasets_are_blocks, gain_summary
from .measures import frontier

MIN_BLOCKS = 3  # fewer independent blocks: the signed-rank posterior is mostly its prior, no decision is claimed
POSTERIOR_SAMPLES = 20000  # Dirichlet draws of the signed-rank posterior (about 0.15 s per test)


def modality(dataset: str) -> str:
    """'chest X-ray' for chest_xray_pneumonia: the registry's modality up to its bracket; a user's folder, manifest
    or unregistered dataset is its own modality."""
    from ..data.datasets import DATASETS

    if dataset not in DATASETS or dataset in ("folder", "csv", "npz"):
        return str(dataset)
    return DATASETS.get(dataset).modality.split(" (")[0]


# --- across cases: the Bayesian signed-rank test ----------------------------------------------------------------
def block_gains(gains: pd.DataFrame) -> pd.DataFrame:
    """Per protocol x arm x block: the mean gain over the baseline. A block is a dataset (the mean of its backbones)
    when several backbones ran on one dataset, as in analysis.rank_tests: cases that share images are not
    independent."""
    rows = []
    for (protocol, arm), group in gains.dropna(subset=["gain"]).groupby(["protocol", "arm"]):
        if datasets_are_blocks(group):  # the rank tests' blocks: a dataset's backbones share its images
            per_block, unit = group.groupby("dataset").gain.mean(), "datasets"
        else:
            per_block, unit = group.set_index(CASE).gain, "cases"
        rows += [{"protocol": protocol, "arm": arm, "block": block, "gain": gain, "unit": unit}
                 for block, gain in per_block.items()]
    return pd.DataFrame(rows, columns=["protocol", "arm", "block", "gain", "unit"])


def signed_rank(block_gain: np.ndarray, rope: float = ROPE, seed: int = 0) -> tuple[float, float, float]:
    """(p worse, p practically equivalent, p better) of the Bayesian signed-rank test (Benavoli et al. 2014, ICML)
    on per-block gains over the baseline, through baycomp."""
    from baycomp import SignedRankTest

    gain = np.asarray(block_gain, dtype=float)
    # baycomp compares x with y; x = the strategy, y = the baseline (the gain below it), left = x better
    better, equivalent, worse = SignedRankTest.probs(gain, np.zeros_like(gain), rope, nsamples=POSTERIOR_SAMPLES,
                                                     random_state=seed)
    return float(worse), float(equivalent), float(better)


def decide(worse: float, equivalent: float, better: float) -> str:
    """practically equivalent, better or worse where its posterior probability passes PRACTICAL, else undecided."""
    if not np.isfinite(equivalent):
        return "undefined"
    for name, probability in (("practically equivalent", equivalent), ("better", better), ("worse", worse)):
        if probability > PRACTICAL:
            return name
    return "undecided"


def across_cases(gains: pd.DataFrame, rope: float = ROPE) -> pd.DataFrame:
    """Per protocol x arm: the signed-rank test over the independent blocks of the gain table, and its decision
    ('too few blocks' with fewer than MIN_BLOCKS)."""
    columns = ["protocol", "arm", "blocks", "unit", "mean_gain", "p_worse", "p_equivalent", "p_better", "decision"]
    rows = []
    for (protocol, arm), group in block_gains(gains).groupby(["protocol", "arm"]):
        row = {"protocol": protocol, "arm": arm, "blocks": len(group), "unit": group.unit.iloc[0],
               "mean_gain": float(group.gain.mean())}
        if len(group) < MIN_BLOCKS:
            rows.append({**row, "decision": f"too few {row['unit']} (need {MIN_BLOCKS})"})
            continue
        worse, equivalent, better = signed_rank(group.gain.to_numpy(), rope)
        rows.append({**row, "p_worse": worse, "p_equivalent": equivalent, "p_better": better,
                     "decision": decide(worse, equivalent, better)})
    return pd.DataFrame(rows, columns=columns)


# --- probability of improvement and performance profiles --------------------------------------------------------
def improvement_probability(a: np.ndarray, b: np.ndarray) -> float:
    """P(a run of a scores above a run of b), ties one half: the Mann-Whitney U of a over b, divided by n_a n_b."""
    a, b = np.asarray(a, dtype=float)[:, None], np.asarray(b, dtype=float)[None, :]
    return float(np.mean((a > b) + 0.5 * (a == b)))


def probability_of_improvement(best: pd.DataFrame, metric: str, baseline: str = BASELINE, n_boot: int = 2000,
                               seed: int = 0) -> pd.DataFrame:
    """Per protocol x arm: the probability of improvement over `baseline` averaged over the cases both ran (Agarwal
    et al. 2021), with a 95% stratified-bootstrap interval (each arm's seeds resampled within each case).

    Args:
        best: select_best's table: each arm's selected run per protocol, case and seed.
        metric: the test metric (lower-is-better metrics are turned so that higher is an improvement).
        baseline: the arm compared with.
        n_boot: stratified-bootstrap resamples.
        seed: seed of the resampling.
    """
    columns = ["protocol", "arm", "cases", "runs", "poi", "low", "high"]
    if best.empty:
        return pd.DataFrame(columns=columns)
    rng = np.random.default_rng(seed)
    sign, column = improvement_sign(metric), f"test_{metric}"
    rows = []
    for protocol, group in best.groupby("protocol"):
        scores = {key: sign * cell[column].dropna().to_numpy(dtype=float)
                  for key, cell in group.groupby(CASE + ["arm"])}
        for arm in sorted(set(group.arm) - {baseline}):
            cases = [case for case in {k[:-1] for k in scores} if len(scores.get((*case, arm), ())) and
                     len(scores.get((*case, baseline), ()))]
            if not cases:
                continue
            pairs = [(scores[(*case, arm)], scores[(*case, baseline)]) for case in sorted(cases)]
            point = np.mean([improvement_probability(a, b) for a, b in pairs])
            draws = np.mean([_resampled(a, b, n_boot, rng) for a, b in pairs], axis=0)
            low, high = np.percentile(draws, [2.5, 97.5])
            rows.append({"protocol": protocol, "arm": arm, "cases": len(cases),
                         "runs": sum(len(a) for a, _ in pairs), "poi": point, "low": low, "high": high})
    return pd.DataFrame(rows, columns=columns)


def _resampled(a: np.ndarray, b: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """The probability of improvement under n_boot resamples of a's and b's runs (with replacement)."""
    ra = a[rng.integers(0, len(a), (n_boot, len(a)))][:, :, None]
    rb = b[rng.integers(0, len(b), (n_boot, len(b)))][:, None, :]
    return ((ra > rb) + 0.5 * (ra == rb)).mean((1, 2))


def performance_profile(gains: pd.DataFrame, points: int = 101) -> pd.DataFrame:
    """Per protocol x arm x threshold t: the share of cases whose mean gain over the baseline is above t; the
    thresholds span every gain in the table."""
    valid = gains.dropna(subset=["gain"])
    if valid.empty:
        return pd.DataFrame(columns=["protocol", "arm", "threshold", "share", "cases"])
    low, high = float(valid.gain.min()), float(valid.gain.max())
    margin = max(high - low, 1e-3) * 0.05
    thresholds = np.linspace(min(low, 0.0) - margin, max(high, 0.0) + margin, points)
    frames = []
    for (protocol, arm), group in valid.groupby(["protocol", "arm"]):
        share = (group.gain.to_numpy()[None, :] > thresholds[:, None]).mean(1)
        frames.append(pd.DataFrame({"protocol": protocol, "arm": arm, "threshold": thresholds, "share": share,
                                    "cases": len(group)}))
    return pd.concat(frames, ignore_index=True)


# --- which strategy for my data -----------------------------------------------------------------------------------
def _cases(best: pd.DataFrame) -> pd.DataFrame:
    return best.assign(modality=best.dataset.map(modality))


def which_strategy(best: pd.DataFrame, metric: str, rope: float = ROPE, n_boot: int = stats.N_BOOT) -> pd.DataFrame:
    """Per protocol group x modality x backbone x arm: its mean test score over the group's cases, its comparison with
    the best arm there (the posterior probabilities, on every case), its costs, and whether it is the recommendation.

    The best arm has the highest mean over the cases every arm of the group ran; an arm is `as_good` when on every
    case its paired gain over the best is practically equivalent or better (posterior > PRACTICAL), `worse` when on
    some case it is worse, else `undecided`, with `seeds_needed` for its closest undecided case. Among the as-good arms
    (the best included) the cheapest in trainable parameters, then seconds per epoch, is `recommended`.

    Args:
        best: select_best's table: each arm's selected run per protocol, case and seed.
        metric: the test metric compared.
        rope: gains within +-rope of the best are practically equivalent.
        n_boot: test-image bootstrap resamples per paired gain.
    """
    columns = ["protocol", "modality", "backbone", "arm", "cases", "seeds", "mean", "gain_vs_best", "p_worse",
               "p_equivalent", "standing", "seeds_needed", "trainable_params", "seconds_per_epoch", "recommended"]
    if best.empty:
        return pd.DataFrame(columns=columns)
    sign, column = improvement_sign(metric), f"test_{metric}"
    frames = []
    for (protocol, kind, backbone), group in _cases(best).groupby(["protocol", "modality", "backbone"]):
        means = group.pivot_table(index="dataset", columns="arm", values=column, aggfunc="mean").dropna(axis=1)
        if means.shape[1] < 2:
            continue
        top = (sign * means.mean()).idxmax()
        versus = gain_summary(group[group.arm.isin(means.columns)], metric, top, n_boot, rope=rope)
        rows = [_standing(arm, top, versus[versus.arm == arm], rope) for arm in means.columns]
        table = pd.DataFrame(rows).assign(protocol=protocol, modality=kind, backbone=backbone, cases=len(means),
                                          mean=[float(means[arm].mean()) for arm in means.columns])
        seeds = group.groupby("arm").seed.nunique()
        table["seeds"] = table.seeds.fillna(table.arm.map(seeds))
        # the costs of this group's runs only: another backbone or dataset costs something else
        cost = frontier(group[group.dataset.isin(means.index)], metric).groupby("arm")[
            ["trainable_params", "seconds_per_epoch"]].median()
        for name in ("trainable_params", "seconds_per_epoch"):
            table[name] = table.arm.map(cost[name]).astype(float)
        frames.append(_recommend(table))
    return pd.concat(frames, ignore_index=True).reindex(columns=columns) if frames else pd.DataFrame(columns=columns)


def _standing(arm: str, top: str, versus: pd.DataFrame, rope: float) -> dict:
    """One arm's comparison with the best arm of its group, over the group's cases."""
    if arm == top:
        return {"arm": arm, "seeds": np.nan, "gain_vs_best": 0.0, "standing": "best", "seeds_needed": np.nan}
    decisions = set(versus.practical)
    standing = ("worse" if "worse" in decisions else
                "as good" if len(versus) and decisions <= {"practically equivalent", "better"} else "undecided")
    open_cases = versus[~versus.practical.isin(["practically equivalent", "better", "worse"])]
    needed = [stats.seeds_needed(r.gain, r.seed_sd, r.test_var, rope) for r in open_cases.itertuples()]
    known = [k for k in needed if not np.isnan(k)]  # a case without a seed sd (one seed) cannot be planned for
    return {"arm": arm, "seeds": versus.seeds.min(), "gain_vs_best": float(versus.gain.mean()),
            "p_worse": float(versus.p_worse.max()), "p_equivalent": float(versus.p_equivalent.min()),
            "standing": standing,
            # the group's decision needs every open case decided: the seeds of the hardest one
            "seeds_needed": max(known) if known and standing == "undecided" else np.nan}


TIME_TIE = 1.1  # seconds per epoch within 10% of the fastest are a tie: wall-clock time is noisy


def _recommend(table: pd.DataFrame) -> pd.DataFrame:
    """Mark the cheapest arm among the best and the arms as good as it: fewest trainable parameters, then seconds
    per epoch (within TIME_TIE of the fastest counts as a tie), then the best arm itself, then the higher mean."""
    candidates = table[table.standing.isin(["best", "as good"])].copy()
    params = candidates.trainable_params
    if params.notna().any():
        candidates = candidates[params == params.min()]
    seconds = candidates.seconds_per_epoch
    if seconds.notna().any():
        candidates = candidates[seconds <= TIME_TIE * seconds.min()]
    order = candidates.assign(is_best=candidates.standing == "best").sort_values(["is_best", "mean"],
                                                                                 ascending=[False, False])
    table["recommended"] = table.arm == order.arm.iloc[0]
    return table


def where(group: pd.DataFrame, protocols: dict[str, str] | None = None) -> str:
    """'dermoscopy / resnet50', and the protocol group's name ('weights=none') where `protocols` names several."""
    text = f"{group.modality.iloc[0]} / {group.backbone.iloc[0]}"
    return f"{text} ({protocols[group.protocol.iloc[0]]})" if protocols and len(protocols) > 1 else text


def recommendation(group: pd.DataFrame, metric_label: str, rope: float = ROPE,
                   protocols: dict[str, str] | None = None) -> str:
    """One sentence per group of which_strategy's table: the cheapest as-good strategy, or 'not enough evidence'
    with the seeds it would take. `protocols`: analysis.protocol_names, to tell groups of one case apart."""
    from ..training.strategies import strategy_label as label

    where_ = where(group, protocols)
    top = group[group.standing == "best"].iloc[0]
    good = group[group.standing == "as good"]
    pick = group[group.recommended].iloc[0]
    if len(good):
        others = ", ".join(label(a) for a in good.arm)
        cost = _cost_words(pick)
        return (f"On {where_}: {label(top.arm)} scored best ({metric_label} {top['mean']:.3f}); "
                f"{others} {'is' if len(good) == 1 else 'are'} practically equivalent to it or better (within or "
                f"above the ROPE with probability > {PRACTICAL}); the cheapest of {label(top.arm)} and "
                f"{'this' if len(good) == 1 else 'these'} is {label(pick.arm)}{cost}.")
    open_arms = group[group.standing == "undecided"]
    if open_arms.empty:
        return (f"On {where_}: {label(top.arm)} scored best ({metric_label} {top['mean']:.3f}) and every other "
                "strategy is worse beyond the ROPE.")
    finite = open_arms[np.isfinite(open_arms.seeds_needed.astype(float))]
    stuck = open_arms[open_arms.seeds_needed.astype(float) == np.inf]
    text = (f"On {where_}: {label(top.arm)} scored best ({metric_label} {top['mean']:.3f}), but there is not enough "
            f"evidence to say which strategies are as good: {len(open_arms)} of {len(group) - 1} comparisons with it "
            "are undecided.")
    if len(finite):
        closest = finite.loc[finite.seeds_needed.astype(float).idxmin()]
        text += (f" {label(closest.arm)} ({closest.gain_vs_best:+.3f}) would take about {closest.seeds_needed:.0f} "
                 f"seeds per strategy to decide with {stats.POWER:.0%} probability ({closest.seeds:.0f} now), if its "
                 "mean difference and seed-to-seed spread stay as observed.")
    if len(stuck):
        names = ", ".join(label(a) for a in stuck.arm)
        text += (f" {names} (within {stuck.gain_vs_best.abs().max():.3f} of it) would not be decided by more seeds "
                 f"alone: the test set's own noise is too large for a ROPE of +-{rope:g} (a larger test set, or a "
                 "wider ROPE if that is what matters, would).")
    no_sd = open_arms[open_arms.seeds_needed.isna()]
    if len(no_sd):
        text += f" Run at least {stats.MIN_SEEDS} seeds to measure the seed-to-seed spread of the others."
    return text


def headline(table: pd.DataFrame, most: int = 3, protocols: dict[str, str] | None = None) -> str:
    """The decisions in the report's opening paragraph: a short sentence per group (at most `most` groups, else a
    count), naming the cheapest strategy as good as the best, or saying the evidence is not enough and what it
    would take. `protocols`: analysis.protocol_names, to tell groups of one case apart."""
    from ..training.strategies import strategy_label as label

    groups = [group for _, group in table.groupby(["protocol", "modality", "backbone"], sort=False)]
    if not groups:
        return ""
    if len(groups) > most:
        cheaper = sum(bool((g.recommended & (g.standing == "as good")).any()) for g in groups)
        best_cheapest = sum(bool((g.standing == "as good").any() and (g.recommended & (g.standing == "best")).any())
                            for g in groups)
        return (f"Which strategy for my data: in {cheaper} of {len(groups)} modality x backbone groups a cheaper "
                f"strategy is practically equivalent to the best, in {best_cheapest} the best is also the cheapest "
                "of those as good as it, and in the rest the evidence names none; the section of that name lists "
                "each.")
    parts = []
    for group in groups:
        where_ = where(group, protocols)
        top, pick = group[group.standing == "best"].arm.iloc[0], group[group.recommended].arm.iloc[0]
        if (group.standing == "as good").any():
            parts.append(f"on {where_} the cheapest strategy practically equivalent to the best ({label(top)}) is "
                         f"{label(pick)}" if pick != top else
                         f"on {where_} {label(top)} scored best and is also the cheapest of those as good as it")
            continue
        open_arms = group[group.standing == "undecided"]
        if open_arms.empty:
            parts.append(f"on {where_} {label(top)} is better than every other strategy beyond the ROPE")
            continue
        needed = open_arms.seeds_needed.astype(float)
        finite = open_arms[np.isfinite(needed)]
        stuck = int((needed == np.inf).sum())
        said = [f"{label(r.arm)} vs {label(top)} would be decided ({stats.POWER:.0%} chance) at about "
                f"{r.seeds_needed:.0f} seeds per strategy"
                for r in finite.sort_values("seeds_needed").head(1).itertuples()]
        if stuck:
            said.append(f"{stuck} comparison{'s' if stuck > 1 else ''} need{'' if stuck > 1 else 's'} a larger test "
                        "set (its noise exceeds the ROPE), not more seeds")
        parts.append(f"on {where_} there is not enough evidence to name a strategy as good as the best ({label(top)})"
                     + (": " + ", and ".join(said) if said else ""))
    return "Which strategy for my data: " + "; ".join(parts) + "."


def _cost_words(row) -> str:
    parts = []
    if np.isfinite(row.trainable_params):
        parts.append(f"{row.trainable_params:,.0f} trainable parameters")
    if np.isfinite(row.seconds_per_epoch):
        parts.append(f"{row.seconds_per_epoch:.1f} s per epoch")
    return f" ({', '.join(parts)})" if parts else ""


# --- cached on a Study, as measures.study_* are -------------------------------------------------------------------
def study_which(study) -> pd.DataFrame:
    """which_strategy of an analysis.Study, computed once."""
    return study.cached("which", lambda: which_strategy(study.best, study.metric, study.rope, study.n_boot))


def study_across(study) -> pd.DataFrame:
    """across_cases of an analysis.Study's gain table, computed once."""
    return study.cached("across", lambda: across_cases(study.gains, study.rope))


def study_improvement(study) -> pd.DataFrame:
    """probability_of_improvement of an analysis.Study, computed once."""
    return study.cached("poi", lambda: probability_of_improvement(study.best, study.metric))
