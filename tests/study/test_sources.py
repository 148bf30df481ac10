"""Gain by source of weights: the paired gain of one checkpoint over another, per strategy, and its report section."""
import numpy as np
import pytest
from crafted import crafted_run, with_accuracy

from studylib.study.analysis import Study
from studylib.study.sources import RANDOM_INIT, source_gains, source_label
from studylib.views.report import report_words

LABELS = np.repeat([0, 1], [300, 100])
SEEDS = (684, 559, 629)
# test balanced accuracy per (source, strategy, seed): in-domain weights help LP a lot, FT a little
SCORES = {("none", "ft"): (0.70, 0.72, 0.71), ("none", "lp"): (0.60, 0.61, 0.59),
          ("pretrained/tinycnn-ham.pt", "ft"): (0.74, 0.75, 0.76),
          ("pretrained/tinycnn-ham.pt", "lp"): (0.80, 0.79, 0.81)}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    for (weights, strategy), scores in SCORES.items():
        for seed, score in zip(SEEDS, scores):
            crafted_run(root / source_label(weights), with_accuracy(LABELS, score), LABELS, weights=weights,
                        strategy=strategy, seed=seed)
    return Study(root, n_boot=200)


def test_source_labels():
    import pandas as pd

    from studylib.study.sources import source_labels

    assert source_label("none") == RANDOM_INIT
    assert source_label("outputs/pretrained/tinycnn-ham.pt") == "tinycnn-ham"
    assert source_label("IMAGENET1K_V2") == "IMAGENET1K_V2"
    two = source_labels(pd.Series(["a/best.pt", "b/best.pt", "none", "c/ham.pt"]))  # two files of one name
    assert list(two) == ["a/best.pt", "b/best.pt", RANDOM_INIT, "ham"]


def test_each_source_is_its_own_protocol_group(study):
    assert study.done.groupby("protocol").weights.nunique().eq(1).all()
    assert study.done.protocol.nunique() == 2


def test_gain_by_source_is_the_paired_difference_over_random_init(study):
    gains = source_gains(study.best, n_boot=200).set_index("arm")
    assert set(gains.source) == {"tinycnn-ham"} and set(gains.reference) == {RANDOM_INIT}
    for strategy in ("ft", "lp"):  # oracle: the mean over seeds of the per-seed differences
        expected = np.mean(np.subtract(SCORES[("pretrained/tinycnn-ham.pt", strategy)], SCORES[("none", strategy)]))
        assert gains.loc[strategy, "gain"] == pytest.approx(expected, abs=0.005)
        assert gains.loc[strategy, "seeds"] == 3
    assert gains.loc["lp", "verdict"] == "better"
    assert gains.loc["lp", "low"] > 0


def test_no_sources_no_table(study):
    one = study.best[study.best.weights == "none"]
    assert source_gains(one).empty


def test_the_report_says_what_each_source_is_worth(study):
    words = report_words(study)
    assert "## Gain by source of weights: test balanced accuracy over random init" in words
    assert "Starting from tinycnn-ham instead of random init: better for" in words
    assert "LP (+0.200" in words



def test_the_figure_marks_each_gain_and_fills_those_beyond_the_noise(study):
    from studylib.views.studyfigures import source_gains as draw

    table = source_gains(study.best, n_boot=200)
    figure = draw(table)
    axis = figure.axes[0]
    assert "over random init" in axis.get_xlabel() and "from tinycnn-ham" in axis.get_title()
    points = [line for line in axis.lines if line.get_marker() == "o"]
    filled = [line for line in points if line.get_markerfacecolor() != "white"]
    assert len(points) == len(table) and len(filled) == int(table.verdict.isin(["better", "worse"]).sum())
