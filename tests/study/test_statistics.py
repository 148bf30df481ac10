"""The statistics behind every verdict, pinned against independent computations on crafted runs:
scikit-learn for every weighted metric, a slow hand-written version of the interval's definition,
a t-test, the Holm and Friedman formulas, and verdicts on cases built to be noisy or consistent."""
import json

import numpy as np
import pandas as pd
import pytest
from crafted import LABELS, case, churned, crafted_run, predictions, with_accuracy
from scipy import stats as scipy_stats
from sklearn.metrics import balanced_accuracy_score

from studylib.study import analysis, stats
from studylib.study.analysis import Study
from studylib.training.metrics import classification_metrics
from studylib.views.report import report_words


@pytest.mark.parametrize("classes", [2, 3, 5])
def test_weighted_metrics_equal_scikit_learn_on_resampled_images(classes):
    rng = np.random.default_rng(classes)
    n = 80
    labels = rng.choice(classes, n, p=np.r_[0.6, np.full(classes - 1, 0.4 / (classes - 1))])  # imbalanced
    logits = rng.normal(size=(n, classes)) + 1.5 * np.eye(classes)[labels]
    probs = np.round(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), 2)  # rounding makes ties
    probs /= probs.sum(1, keepdims=True)
    p = stats.Predictions(np.arange(n).astype(str), labels, probs)
    counts = rng.multinomial(n, np.full(n, 1 / n), size=6)
    for metric in ("accuracy", "balanced_accuracy", "macro_f1", "kappa", "auroc", "macro_ap", "loss"):
        got = stats.weighted_scores(metric, p, counts)
        for row, draw in zip(got, counts):
            index = np.repeat(np.arange(n), draw)
            expected = classification_metrics(labels[index], probs[index])
            expected["loss"] = float(np.mean(-np.log(probs[index, labels[index]])))
            assert row == pytest.approx(expected[metric], abs=1e-12), metric


# --- the interval against a slow, independent implementation of its definition --------------------
def slow_interval(pairs, n_boot, rng):
    """The definition in stats.py written out with scikit-learn, for seeds that share their test images:
    per-seed gains; variance s^2/k + the variance of the mean gain under one shared image resample;
    Welch-Satterthwaite degrees of freedom; a t-interval and its two-sided p-value."""
    def bacc(p, index):
        return balanced_accuracy_score(p.labels[index], p.preds[index])

    everything = np.arange(len(pairs[0][0].labels))
    per_seed = np.array([bacc(a, everything) - bacc(b, everything) for a, b in pairs])
    k = len(per_seed)
    draws = []
    for _ in range(n_boot):
        index = rng.integers(0, len(everything), len(everything))
        draws.append(np.mean([bacc(a, index) - bacc(b, index) for a, b in pairs]))
    seed_var, test_var = per_seed.var(ddof=1) / k, np.var(draws, ddof=1)
    se = np.sqrt(seed_var + test_var)
    df = (seed_var + test_var) ** 2 / (seed_var ** 2 / (k - 1))
    half = scipy_stats.t.ppf(0.975, df) * se
    return per_seed.mean() - half, per_seed.mean() + half, 2 * scipy_stats.t.sf(abs(per_seed.mean()) / se, df)


def test_interval_matches_an_independent_computation_of_its_definition():
    labels = np.r_[np.zeros(150, int), np.ones(50, int)]  # imbalanced: balanced accuracy != accuracy
    pairs = [(predictions(labels, churned(labels, 0.7, g, 8)), predictions(labels, with_accuracy(labels, 0.7)))
             for g in (0.06, -0.02, 0.04)]
    result = stats.paired_gain(pairs, "balanced_accuracy", n_boot=2000, seed=1)
    low, high, p = slow_interval(pairs, 600, np.random.default_rng(2))
    assert result.gain == pytest.approx(np.mean([0.06, -0.02, 0.04]), abs=1e-9)  # the mean over seeds
    assert result.seeds == 3 and result.per_seed == pytest.approx([0.06, -0.02, 0.04], abs=1e-9)
    assert result.design == "crossed"
    assert result.low == pytest.approx(low, abs=0.003) and result.high == pytest.approx(high, abs=0.003)
    assert result.p == pytest.approx(p, abs=0.01)
    assert result.low < 0 < result.high


def test_three_seeds_that_agree_in_sign_are_not_enough_by_themselves():
    """Per-seed gains of +0.5, +4 and +8 points: a percentile bootstrap over 3 seeds calls this better
    (all seeds positive); a t-test over the seeds gives p = 0.19, and so must studylib."""
    pairs = [(predictions(LABELS, with_accuracy(LABELS, 0.7 + g)), predictions(LABELS, with_accuracy(LABELS, 0.7)))
             for g in (0.005, 0.04, 0.08)]
    result = stats.paired_gain(pairs, "balanced_accuracy", n_boot=200)
    assert result.low < 0 < result.high
    assert result.p == pytest.approx(scipy_stats.ttest_1samp([0.005, 0.04, 0.08], 0).pvalue, abs=0.01)


def test_seeds_sharing_their_test_images_do_not_shrink_the_test_level_variance():
    """The same pair three times (no seed variance, one test set): the interval is one pair's, not
    narrower by sqrt(3) as if each seed had its own test images."""
    labels = LABELS[::4]
    pair = (predictions(labels, churned(labels, 0.8, 0.02, 30)), predictions(labels, with_accuracy(labels, 0.8)))
    one, three = (stats.paired_gain([pair], "balanced_accuracy", 2000),
                  stats.paired_gain([pair] * 3, "balanced_accuracy", 2000))
    assert three.se == pytest.approx(one.se, rel=0.1) and three.design == "crossed"
    def renamed(prefix):
        ids = np.array([f"{prefix}{i}" for i in range(len(labels))])
        return (stats.Predictions(ids, pair[0].labels, pair[0].probs),
                stats.Predictions(ids, pair[1].labels, pair[1].probs))

    nested = stats.paired_gain([renamed("a"), renamed("b"), renamed("c")], "balanced_accuracy", 2000)
    assert nested.design == "nested"  # identical per-seed gains: the test-level variance of three own test sets
    assert nested.se == pytest.approx(one.se / np.sqrt(3), rel=0.15)
    partly = stats.paired_gain([pair, pair, renamed("c")], "balanced_accuracy", 2000)
    assert partly.design == "partly shared"
    # two seeds share their images, the third has its own: between one test set and three
    assert one.se / np.sqrt(3) < partly.se < one.se


def test_a_strong_effect_survives_holm_over_a_paper_sized_family():
    pairs = [(predictions(LABELS, churned(LABELS, 0.7, g, 20)), predictions(LABELS, with_accuracy(LABELS, 0.7)))
             for g in (0.05, 0.055, 0.048)]
    strong = stats.paired_gain(pairs, "balanced_accuracy", n_boot=200).p
    family = pd.Series([strong] + [0.5] * 125)  # 7 strategies x 18 cases
    assert stats.adjust(family, "holm")[0] < 0.01


def test_a_run_against_itself_gains_exactly_nothing():
    labels = LABELS[::10]
    p = predictions(labels, with_accuracy(labels, 0.7))
    result = stats.paired_gain([(p, p)] * 3, "macro_f1", n_boot=200)
    assert result.gain == result.low == result.high == 0.0 and result.p == 1.0


def test_pairs_tested_on_different_images_are_refused():
    a = predictions(LABELS[:10], np.ones(10, bool))
    b = stats.Predictions(np.array([f"x{i}" for i in range(10)]), a.labels, a.probs)
    with pytest.raises(ValueError, match="different images"):
        stats.paired_gain([(a, b)], "accuracy", n_boot=10)


def test_holm_matches_the_step_down_formula():
    p = pd.Series([0.01, 0.04, 0.03, np.nan])
    adjusted = stats.adjust(p, "holm")
    # sorted: 0.01*3 = 0.03; 0.03*2 = 0.06; 0.04*1 = 0.04 -> max(0.06, 0.04) = 0.06 (monotone)
    assert adjusted[:3].tolist() == pytest.approx([0.03, 0.06, 0.06]) and np.isnan(adjusted[3])


@pytest.mark.parametrize("method", ["holm", "fdr_bh"])
def test_adjusted_p_values_match_statsmodels(method):
    from statsmodels.stats.multitest import multipletests

    p = np.random.default_rng(3).uniform(0, 0.2, 40) ** 2
    p[[3, 9]] = p[5]  # ties
    ours = stats.adjust(pd.Series(p), method).to_numpy()
    np.testing.assert_allclose(ours, multipletests(p, method=method)[1])


def test_friedman_matches_its_formula():
    rng = np.random.default_rng(0)
    scores = pd.DataFrame(rng.normal(size=(8, 4)) + [0, 0.5, 1.0, 1.5], columns=list("abcd"))
    test = stats.rank_test(scores)
    n, k = scores.shape
    ranks = scores.rank(axis=1, ascending=False)
    chi2 = 12 * n / (k * (k + 1)) * ((ranks.mean() ** 2).sum() - k * (k + 1) ** 2 / 4)
    assert test.friedman_p == pytest.approx(scipy_stats.chi2.sf(chi2, k - 1))
    assert test.ranks.index[0] == "d" and test.ranks["d"] == pytest.approx(ranks.mean()["d"])
    assert (np.diag(test.pairwise_p) == 1).all() and test.pairwise_p.shape == (4, 4)
    assert stats.rank_test(scores.iloc[:1]) is None  # one block: nothing to test


# --- verdicts on crafted run folders ------------------------------------------------------------
def test_large_seed_variance_is_inside_the_noise_and_consistent_gains_are_not(tmp_path):
    case(tmp_path, "noisy", 0.80, (0.04, -0.015, 0.035))  # the example: +4.0, -1.5, +3.5 points
    case(tmp_path, "steady", 0.80, (0.03, 0.032, 0.029))
    gains = Study(tmp_path, n_boot=300).gains.set_index("backbone")
    assert gains.loc["noisy", "verdict"] == "inside the noise"
    assert gains.loc["noisy", "low"] < 0 < gains.loc["noisy", "high"]
    assert gains.loc["steady", "verdict"] == "better" and gains.loc["steady", "low"] > 0.015
    assert (gains.seeds == 3).all()
    assert gains.loc["noisy", "gain"] == pytest.approx((0.04 - 0.015 + 0.035) / 3, abs=1e-9)
    assert gains.loc["steady", "p_adjusted"] >= gains.loc["steady", "p"]  # Holm over the family of two


def test_test_image_noise_alone_is_not_enough_for_a_verdict(tmp_path):
    """One seed, one level of resampling: a small, real-looking gain gets no verdict (seed variance unknown)."""
    case(tmp_path, "one", 0.80, (0.05,), seeds=(684,))
    gains = Study(tmp_path, n_boot=300).gains
    assert gains.verdict.tolist() == ["seed variance unknown"] and gains.seeds.tolist() == [1]
    assert gains.low.iloc[0] > 0  # the interval alone would have claimed it
    assert "too few seeds" in analysis.win_tie_loss(gains).sentence.iloc[0]


def test_multiplicity_correction_can_overturn_a_marginal_verdict(tmp_path):
    for i in range(6):  # six marginal comparisons: each barely significant before correction
        case(tmp_path, f"case{i}", 0.80, (0.011, 0.012, 0.010), churn=14)
    gains = Study(tmp_path, n_boot=300).gains
    assert (gains.p_adjusted >= gains.p).all()
    assert (gains.verdict_uncorrected == "better").sum() > (gains.verdict == "better").sum()


@pytest.mark.slow  # seconds in-process: out of the quick suite
def test_runs_of_different_data_or_budget_are_never_pooled_and_the_report_names_the_groups(tmp_path):
    case(tmp_path, "tinycnn", 0.80, (0.03, 0.032, 0.029), medmnist_size=28)
    case(tmp_path, "tinycnn", 0.70, (-0.05, -0.06, -0.04), medmnist_size=64)
    study = Study(tmp_path, n_boot=300)
    assert study.done.protocol.nunique() == 2 and any("medmnist_size" in note for note in study.notes)
    assert len(study.best) == 12  # 2 protocols x 2 strategies x 3 seeds: nothing picked across groups
    verdicts = study.gains.set_index("protocol").verdict
    assert sorted(verdicts) == ["better", "worse"]
    markdown = report_words(study)
    assert "Protocol groups" in markdown and "medmnist_size=28" in markdown and "medmnist_size=64" in markdown


@pytest.mark.slow  # seconds in-process: out of the quick suite
def test_batchnorm_is_flagged_and_split_by_the_control(tmp_path):
    case(tmp_path, "tinycnn", 0.80, (0.05, 0.052, 0.049))  # lp_ft (freeze_stats) over ft (train)
    for seed in (684, 559, 629):  # the control: FT with frozen statistics, most of the gain
        crafted_run(tmp_path, with_accuracy(LABELS, 0.84), LABELS, seed=seed, bn_policy="freeze_stats")
    study = Study(tmp_path, n_boot=200)
    assert set(study.best.arm) == {"ft", "lp_ft", "ft [bn_policy=freeze_stats]"}
    row = study.gains.set_index("arm").loc["lp_ft"]
    assert row.bn_differs and row.bn_policy == "freeze_stats vs train"
    split = study.bn_split.set_index("part")
    assert split.loc["total (over FT)", "gain"] == pytest.approx(0.0503, abs=1e-3)
    assert split.loc["BatchNorm (control over FT)", "gain"] == pytest.approx(0.04, abs=1e-9)
    assert split.loc["strategy (over the control)", "gain"] == pytest.approx(0.0103, abs=1e-3)
    assert "BatchNorm or strategy?" in report_words(study)


def test_old_runs_with_auto_batchnorm_are_resolved_from_the_registry(tmp_path):
    case(tmp_path, "tinycnn", 0.80, (0.03, 0.03, 0.03), bn_policy="auto")
    done = analysis.load_results(tmp_path)
    assert set(zip(done.strategy, done.bn_policy)) == {("ft", "train"), ("lp_ft", "freeze_stats")}


def test_unequal_tuning_budgets_are_reported_and_warned(tmp_path):
    case(tmp_path, "tinycnn", 0.80, (0.03, 0.03, 0.03))
    for seed in (684, 559, 629):  # LP-FT gets two more learning rates than FT
        for lr in (1e-2, 1e-4):
            crafted_run(tmp_path, with_accuracy(LABELS, 0.7), LABELS, seed=seed, strategy="lp_ft", lr=lr, val=0.1)
    study = Study(tmp_path, n_boot=100)
    budgets = study.budgets.set_index("arm")
    assert budgets.loc["lp_ft", "settings_max"] == 3 and budgets.loc["ft", "settings_max"] == 1
    assert budgets.loc["lp_ft", "tuned"] == "lr"
    assert any("different tuning budgets" in note for note in study.notes)


def test_the_shipped_paper_grid_gives_every_strategy_the_same_budget():
    from collections import Counter

    from studylib.core.templates import shipped_grid
    from studylib.study.grid import load_grid

    runs = load_grid(shipped_grid("paper_lr")).runs
    cell = Counter((c.strategy) for c in runs if c.dataset == runs[0].dataset and c.backbone == runs[0].backbone
                   and c.seed == runs[0].seed)
    assert len(set(cell.values())) == 1, cell


def test_ranks_use_cases_as_blocks_and_fall_back_to_seeds_for_one_case(tmp_path):
    for i, gains in enumerate([(0.03, 0.02, 0.04), (0.01, 0.02, 0.0), (0.05, 0.03, 0.04)]):
        case(tmp_path, f"b{i}", 0.8, gains)
        case(tmp_path, f"b{i}", 0.8, tuple(g - 0.02 for g in gains), strategy="lp")
    tests = Study(tmp_path, n_boot=50).rank_tests
    assert tests["P1"].blocks.startswith("3 dataset x backbone cases") and tests["P1"].ranks.index[0] == "lp_ft"
    one = tmp_path / "one"
    case(one, "b0", 0.8, (0.03, 0.02, 0.04))
    case(one, "b0", 0.8, (0.01, 0.0, 0.02), strategy="lp")
    assert "seeds of one case" in Study(one, n_boot=50).rank_tests["P1"].blocks


def test_old_folders_are_read_as_what_they_ran_and_repeats_count_once(tmp_path):
    case(tmp_path, "tinycnn", 0.80, (0.03, 0.03, 0.03))
    old = crafted_run(tmp_path, with_accuracy(LABELS, 0.8), LABELS, strategy="auto_rgn")
    config = json.loads((old / "config.json").read_text())
    del config["dropout"], config["rgn_max_over"]  # written before these fields existed: dropout trained
    config["bn_policy"] = "auto"
    (old / "config.json").write_text(json.dumps(config))
    again = tmp_path / "runs" / "again"  # the same FT configuration run a second time (a re-run grid)
    crafted_run(tmp_path / "x", with_accuracy(LABELS, 0.9), LABELS, seed=684).rename(again)
    study = Study(tmp_path, n_boot=50)
    assert "auto_rgn [dropout=train]" in set(study.done.arm)
    assert (study.done.bn_policy[study.done.strategy == "auto_rgn"] == "freeze").all()
    assert len(study.done[(study.done.arm == "ft") & (study.done.seed == 684)]) == 1
    assert any("repeat the configuration" in note for note in study.notes)


def test_variant_fields_a_strategy_does_not_read_never_rename_it(tmp_path):
    case(tmp_path, "tinycnn", 0.80, (0.03, 0.03, 0.03), rgn_max_over="backbone")
    study = Study(tmp_path, n_boot=50)
    assert set(study.best.arm) == {"ft", "lp_ft"} and (study.gains.verdict == "better").all()


def test_a_grid_run_wholly_under_another_batchnorm_policy_still_has_its_baseline(tmp_path):
    case(tmp_path, "tinycnn", 0.80, (0.03, 0.03, 0.03), bn_policy="freeze_stats")
    gains = Study(tmp_path, n_boot=50).gains
    assert gains.baseline.tolist() == ["ft [bn_policy=freeze_stats]"] and gains.verdict.tolist() == ["better"]
    assert not gains.bn_differs.iloc[0]


def test_rank_test_leaves_out_incomplete_cases_and_reads_no_post_hoc_without_a_rejection():
    scores = pd.DataFrame({"a": [0.9, 0.8, 0.7, 0.6], "b": [0.8, 0.7, 0.6, np.nan], "c": [0.7, 0.6, 0.5, 0.4]})
    test = stats.rank_test(scores)
    assert len(test.scores) == 3 and "1 block(s) left out" in test.note and list(test.ranks.index) == ["a", "b", "c"]
    flat = stats.rank_test(pd.DataFrame({"a": [1, 2, 3.0], "b": [3, 1, 2.0], "c": [2, 3, 1.0]}))
    assert not flat.rejected and (flat.pairwise_p == 1).all().all()


def test_integer_fields_missing_from_old_folders_do_not_split_a_protocol(tmp_path):
    case(tmp_path, "tinycnn", 0.80, (0.03, 0.03, 0.03))
    for run in list((tmp_path / "runs").glob("*-lp_ft-*")):
        config = json.loads((run / "config.json").read_text())
        del config["medmnist_size"], config["max_steps_per_epoch"]  # pandas then reads both columns as float
        (run / "config.json").write_text(json.dumps(config))
    assert analysis.load_results(tmp_path).protocol.nunique() == 1


def test_runs_in_other_precisions_are_kept_and_grouped_apart(tmp_path):
    case(tmp_path, "tinycnn", 0.80, (0.03, 0.03, 0.03))
    case(tmp_path / "gpu", "tinycnn", 0.80, (0.03, 0.03, 0.03))
    for run in (tmp_path / "gpu" / "runs").iterdir():
        (run / "env.json").write_text(json.dumps({"amp": "torch.bfloat16"}))
        run.rename(tmp_path / "runs" / f"gpu-{run.name}")
    study = Study(tmp_path, n_boot=50)
    assert len(study.done) == 12 and study.done.protocol.nunique() == 2
    assert not any("repeat" in note for note in study.notes) and "precision=bfloat16" in study.protocols


def test_batchnorm_split_only_where_the_control_ran(tmp_path):
    case(tmp_path, "tinycnn", 0.80, (0.05, 0.052, 0.049))
    for seed in (684, 559, 629):
        crafted_run(tmp_path, with_accuracy(LABELS, 0.84), LABELS, seed=seed, bn_policy="freeze_stats")
    case(tmp_path, "tinycnn", 0.70, (0.05, 0.05, 0.05), medmnist_size=64)  # another protocol, no control
    split = Study(tmp_path, n_boot=50).bn_split
    assert set(split.protocol) == {"P1"} and len(split) == 3


def test_an_ft_run_recorded_with_another_lp_epochs_is_a_repeat_not_a_second_try(tmp_path):
    """FT never reads lp_epochs (the run hash leaves it out): two FT folders that differ only there are one
    configuration run twice, counted once, not two settings to pick the better validation score from."""
    crafted_run(tmp_path / "a", with_accuracy(LABELS, 0.70), LABELS, val=0.70, lp_epochs=3)
    crafted_run(tmp_path / "b", with_accuracy(LABELS, 0.75), LABELS, val=0.75, lp_epochs=5)
    crafted_run(tmp_path / "c", with_accuracy(LABELS, 0.75), LABELS, val=0.75, strategy="lp_ft", lp_epochs=3)
    crafted_run(tmp_path / "d", with_accuracy(LABELS, 0.75), LABELS, val=0.75, strategy="lp_ft", lp_epochs=5)
    with pytest.warns(analysis.AnalysisWarning, match="1 runs repeat the configuration"):
        done = analysis.load_results(tmp_path)
    assert len(done[done.strategy == "ft"]) == 1 and len(done[done.strategy == "lp_ft"]) == 2  # LP-FT reads it
    assert analysis.budgets(done).set_index("arm").loc["lp_ft", "tuned"] == "lp_epochs"


# --- practical equivalence (the Bayesian decision beside the verdict) -------------------------------------------
def test_rope_probabilities_are_the_student_posterior_of_the_gain():
    from scipy.stats import t

    worse, equivalent, better = stats.rope_probabilities(0.004, 0.003, 4, rope=0.01)
    assert better == pytest.approx(t.sf((0.01 - 0.004) / 0.003, 4))
    assert worse == pytest.approx(t.cdf((-0.01 - 0.004) / 0.003, 4))
    assert worse + equivalent + better == pytest.approx(1.0)


def test_equal_within_a_hair_on_many_seeds_is_practically_equivalent_and_noise_decides_nothing(tmp_path):
    seeds = tuple(range(100, 110))
    hair = (0.001, -0.001, 0.002, 0.0, 0.001, -0.002, 0.001, 0.0, -0.001, 0.001)
    case(tmp_path / "same", "tinycnn", 0.80, hair, seeds=seeds)
    case(tmp_path / "better", "tinycnn", 0.80, (0.05, 0.052, 0.049))
    case(tmp_path / "noisy", "tinycnn", 0.80, (0.03, -0.02, 0.01))
    decisions = {name: Study(tmp_path / name, n_boot=200).gains.set_index("arm").loc["lp_ft"]
                 for name in ("same", "better", "noisy")}
    assert decisions["same"].practical == "practically equivalent" and decisions["same"].p_equivalent > 0.95
    assert decisions["same"].verdict == "inside the noise"  # what the frequentist verdict alone can say
    assert decisions["better"].practical == "better" and decisions["better"].p_better > 0.95
    assert decisions["noisy"].practical == "undecided" and max(
        decisions["noisy"][["p_worse", "p_equivalent", "p_better"]]) < 0.95


def test_a_nemenyi_verdict_that_flips_when_a_strategy_leaves_the_pool_is_flagged():
    """A leads everywhere; B is second in 8 of 12 blocks, C in the other 4; D is always last. With four strategies
    A - B (mean ranks 1 and 2.33) is inside Nemenyi's critical difference (1.35); without D the difference is the
    same and the critical difference shrinks (0.96): a verdict on A vs B that depends on D being in the pool."""
    rows = []
    for block in range(12):
        b_second = block < 8
        rows.append({"A": 0.9, "B": 0.8 if b_second else 0.7, "C": 0.7 if b_second else 0.8, "D": 0.5})
    scores = pd.DataFrame(rows)
    table = stats.pool_stability(scores).set_index(["a", "b"])
    row = table.loc[("A", "B")]
    assert not row.different and row.depends_on_pool and "D" in row.flips_without.split(", ")
    assert table.loc[("A", "D")].different and not table.loc[("A", "D")].depends_on_pool  # robust: any pool
    # the pairwise Wilcoxon test uses only A's and B's scores: A above B on all 12 blocks, 2 / 2^12 before Holm
    assert row.wilcoxon_different and row.wilcoxon_p == pytest.approx(min(1.0, 6 * 2 / 2 ** 12))
