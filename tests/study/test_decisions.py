"""From verdicts to decisions: the signed-rank test across datasets, the probability of improvement, performance
profiles, the seeds a decision would take, and "which strategy for my data"."""
import json

import numpy as np
import pandas as pd
import pytest
from crafted import case
from scipy import stats as scipy_stats

from studylib.core.constants import PRACTICAL
from studylib.study import decisions, stats
from studylib.study.analysis import Study
from studylib.views.report import report_words


def gain_rows(gains, arm="lp_ft", backbones=("resnet50",)):
    """A gain table of one arm: one gain per dataset (and backbone)."""
    return pd.DataFrame([{"protocol": "P1", "dataset": f"d{i}", "backbone": b, "arm": arm, "gain": g}
                         for i, g in enumerate(gains) for b in backbones])


# --- across datasets --------------------------------------------------------------------------------------------
def test_the_signed_rank_test_across_datasets_decides_equivalence_betterness_and_nothing_from_noise():
    hair = [0.001, -0.001, 0.002, 0.0, 0.001, -0.002, 0.001, 0.0, -0.001, 0.001]
    table = pd.concat([gain_rows(hair, "same"), gain_rows([0.05, 0.052, 0.049, 0.048, 0.051, 0.05], "better"),
                       gain_rows([0.03, -0.02, 0.01], "noisy"), gain_rows([-0.05, -0.06, -0.04, -0.05], "worse")])
    out = decisions.across_cases(table, rope=0.01).set_index("arm")
    assert out.loc["same", "decision"] == "practically equivalent" and out.loc["same", "p_equivalent"] > PRACTICAL
    assert out.loc["better", "decision"] == "better" and out.loc["worse", "decision"] == "worse"
    assert out.loc["noisy", "decision"] == "undecided"
    assert max(out.loc["noisy", ["p_worse", "p_equivalent", "p_better"]]) < PRACTICAL
    probabilities = out[["p_worse", "p_equivalent", "p_better"]].sum(axis=1)
    assert np.allclose(probabilities, 1.0)


def test_backbones_sharing_a_dataset_are_one_block_and_too_few_blocks_decide_nothing():
    table = gain_rows([0.05, 0.06], backbones=("resnet50", "densenet121", "vgg19"))  # 6 cases, 2 datasets
    blocks = decisions.block_gains(table)
    assert len(blocks) == 2 and set(blocks.unit) == {"datasets"}
    row = decisions.across_cases(table).iloc[0]
    assert row.blocks == 2 and row.decision.startswith("too few datasets") and np.isnan(row.p_better)


# --- probability of improvement -----------------------------------------------------------------------------------
def best_table(scores: dict, metric="balanced_accuracy") -> pd.DataFrame:
    """select_best's shape: {(dataset, arm): [score per seed]}."""
    return pd.DataFrame([{"protocol": "P1", "dataset": d, "backbone": "b", "arm": arm, "seed": s,
                          f"test_{metric}": v} for (d, arm), values in scores.items() for s, v in enumerate(values)])


def test_probability_of_improvement_is_mann_whitney_u_over_the_pairs_averaged_over_cases():
    rng = np.random.default_rng(3)
    scores = {}
    for d in ("d0", "d1", "d2"):
        scores[(d, "ft")] = rng.normal(0.80, 0.02, 5).round(2)  # rounded: ties count one half
        scores[(d, "lp_ft")] = rng.normal(0.81, 0.02, 4).round(2)
    row = decisions.probability_of_improvement(best_table(scores), "balanced_accuracy", n_boot=500).iloc[0]
    oracle = np.mean([scipy_stats.mannwhitneyu(scores[(d, "lp_ft")], scores[(d, "ft")]).statistic / (4 * 5)
                      for d in ("d0", "d1", "d2")])
    assert row.poi == pytest.approx(oracle) and row.cases == 3 and row.runs == 12
    assert row.low <= row.poi <= row.high and row.high - row.low > 0


def test_probability_of_improvement_follows_the_metrics_direction_and_separated_runs_have_no_spread():
    scores = {("d0", "ft"): [0.10, 0.12, 0.11], ("d0", "lp_ft"): [0.05, 0.06, 0.04]}  # lower ECE: better
    row = decisions.probability_of_improvement(best_table(scores, "ece"), "ece", n_boot=200).iloc[0]
    assert (row.poi, row.low, row.high) == (1.0, 1.0, 1.0)


def test_the_performance_profile_is_the_share_of_cases_above_each_threshold():
    gains = gain_rows([0.03, -0.01, 0.02, 0.0])
    profile = decisions.performance_profile(gains, points=41)
    for row in profile.sample(10, random_state=0).itertuples():
        assert row.share == np.mean(np.array([0.03, -0.01, 0.02, 0.0]) > row.threshold)
    assert profile.share.iloc[0] == 1.0 and profile.share.iloc[-1] == 0.0


# --- seeds a decision would take -----------------------------------------------------------------------------------
def power_by_simulation(gain, sd, test_var, k, rope, draws=40_000):
    """The oracle: simulate k-seed experiments whose true gain and seed sd are the given ones (the seeds' mean gain
    normal, the test-image part V fixed), and count how often scipy's Student posterior passes 0.95 for one of
    worse, equivalent, better."""
    rng = np.random.default_rng(0)
    seed_var = sd ** 2 / k
    se = np.sqrt(seed_var + test_var)
    df = (seed_var + test_var) ** 2 / (seed_var ** 2 / (k - 1))
    means = rng.normal(gain, se, draws)
    worse = scipy_stats.t.cdf(-rope, df, means, se)
    better = scipy_stats.t.sf(rope, df, means, se)
    return float(np.mean(np.maximum(np.maximum(worse, better), 1 - worse - better) > PRACTICAL))


@pytest.mark.parametrize("gain, sd, test_var", [(0.002, 0.01, 1e-6), (0.03, 0.02, 1e-5), (-0.025, 0.03, 0.0)])
def test_seeds_needed_is_the_fewest_seeds_that_decide_with_80_percent_power(gain, sd, test_var):
    k = stats.seeds_needed(gain, sd, test_var, rope=0.01)
    assert np.isfinite(k) and k > 3
    assert power_by_simulation(gain, sd, test_var, int(k), 0.01) >= stats.POWER - 0.01
    assert power_by_simulation(gain, sd, test_var, int(k) - 1, 0.01) < stats.POWER + 0.01


def test_no_number_of_seeds_decides_when_the_test_set_is_too_noisy_and_one_seed_cannot_tell():
    assert stats.seeds_needed(0.002, 0.01, test_var=0.01 ** 2, rope=0.01) == float("inf")
    assert np.isnan(stats.seeds_needed(0.002, float("nan"), 0.0))


# --- which strategy for my data ------------------------------------------------------------------------------------
def with_costs(root, trainable):
    for run in (root / "runs").iterdir():
        metrics, config = (json.loads((run / name).read_text()) for name in ("metrics.json", "config.json"))
        metrics.update(trainable_params=trainable[config["strategy"]], wall_seconds=10.0, epochs_run=5)
        (run / "metrics.json").write_text(json.dumps(metrics))


def test_the_cheapest_strategy_practically_equivalent_to_the_best_is_named(tmp_path):
    seeds = tuple(range(100, 110))
    case(tmp_path, "tinycnn", 0.80, (0.001, -0.001, 0.002, 0.0, 0.001, -0.002, 0.001, 0.0, -0.001, 0.001),
         seeds=seeds)
    case(tmp_path, "tinycnn", 0.80, (-0.2,) * 10, seeds=seeds, strategy="lp")
    with_costs(tmp_path, {"ft": 1000, "lp_ft": 400, "lp": 10})
    study = Study(tmp_path, n_boot=200)
    table = decisions.study_which(study).set_index("arm")
    top = table.index[table.standing == "best"][0]
    assert top in ("ft", "lp_ft")
    assert table.loc["lp", "standing"] == "worse"  # 0.2 below: the cheapest of all, but not as good
    assert table.loc["lp_ft", "recommended"] and table.recommended.sum() == 1
    words = report_words(study)
    assert "is LP-FT (400 trainable parameters" in words
    assert "Which strategy for my data: on synthetic / tinycnn the cheapest strategy practically equivalent" in words \
        or "LP-FT scored best and is also the cheapest" in words


def test_not_enough_evidence_says_how_many_seeds_it_would_take(tmp_path):
    case(tmp_path, "tinycnn", 0.80, (0.05, 0.0, 0.025))  # +0.025 +- 0.025: undecided on 3 seeds
    study = Study(tmp_path, n_boot=200)
    row = decisions.study_which(study).set_index("arm").loc[lambda t: t.standing == "undecided"].iloc[0]
    assert np.isfinite(row.seeds_needed) and row.seeds_needed > 3
    words = report_words(study)
    assert "not enough evidence" in words and f"about {row.seeds_needed:.0f} seeds per strategy" in words
    gain = study.gains.iloc[0]  # the gain table says the same of the comparison with FT
    assert gain.practical == "undecided" and gain.seeds_needed == row.seeds_needed


def test_the_report_names_the_verdicts_that_flip_when_a_strategy_leaves_the_pool():
    from types import SimpleNamespace

    from studylib.study.stats import pool_stability
    from studylib.views.report import _pool_text

    rows = [{"ft": 0.9, "lp_ft": 0.8 if block < 8 else 0.7, "l2_sp": 0.7 if block < 8 else 0.8, "lp": 0.5}
            for block in range(12)]  # test_statistics' crafted pool: FT vs LP-FT depends on LP being there
    text = _pool_text(SimpleNamespace(pool_stability={"P1": pool_stability(pd.DataFrame(rows))}))
    assert "- FT and LP-FT cannot be told apart with every strategy in the pool, but differ without " in text
    assert "without L2-SP or LP; by the pairwise Wilcoxon signed-rank test (Holm), which uses only their own scores, "\
           "they differ" in text  # either one left out shrinks the critical difference enough


def test_the_recommendation_ignores_timing_noise_and_prefers_the_best_on_a_tie():
    table = pd.DataFrame({"arm": ["ft", "l2_sp", "lp"], "standing": ["best", "as good", "worse"],
                          "mean": [0.85, 0.84, 0.6], "trainable_params": [1000.0, 1000.0, 10.0],
                          "seconds_per_epoch": [1.0, 0.95, 0.2]})
    assert decisions._recommend(table.copy()).set_index("arm").recommended.to_dict() == \
        {"ft": True, "l2_sp": False, "lp": False}  # 5% faster is noise; LP is cheapest but worse
    fewer = table.assign(trainable_params=[1000.0, 400.0, 10.0])
    assert decisions._recommend(fewer).set_index("arm").loc["l2_sp", "recommended"]
    slower = table.assign(seconds_per_epoch=[1.0, 0.5, 0.2])
    assert decisions._recommend(slower).set_index("arm").loc["l2_sp", "recommended"]  # half the time is real
