"""A report that names what it measured: the metric in every heading, intervals that say what they carry,
words that follow the signs, per-class recall, and figures readable at any number of cases."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from crafted import LABELS, case, churned, crafted_run, with_accuracy
from PIL import Image

from studylib.study.analysis import Study
from studylib.views import prose
from studylib.views.report import report_words, write_report
from studylib.views.runfigures import DPI, MIN_FONT_KEY


def with_data_reports(root):
    """Each crafted run gets the data report a real run writes (test images per class)."""
    counts = {"train": {"a": 600, "b": 200}, "val": {"a": 150, "b": 50},
              "test": {"a": int((LABELS == 0).sum()), "b": int((LABELS == 1).sum())}}
    for run in (root / "runs").iterdir():
        (run / "data_report.json").write_text(json.dumps({"counts": counts}))
    return root


def headings(markdown: str) -> list[str]:
    return [line[3:] for line in markdown.splitlines() if line.startswith("## ")]


@pytest.mark.slow  # seconds in-process: out of the quick suite
@pytest.mark.parametrize("metric, name", [("balanced_accuracy", "balanced accuracy"), ("accuracy", "accuracy")])
def test_every_heading_and_the_headline_name_the_metric_and_the_test_balance(tmp_path, metric, name):
    case(tmp_path, "tinycnn", 0.80, (0.03, 0.032, 0.029))
    markdown = report_words(Study(with_data_reports(tmp_path), metric, n_boot=50))  # the words; figures: catalogue
    scored = [h for h in headings(markdown) if h.startswith(("Test ", "Gain", "Win", "Ranks", "Mean"))
              and "per class" not in h and "confusion" not in h]
    assert len(scored) >= 4 and all(f"test {name}" in h.lower() for h in scored), scored
    opening = markdown.split("\n## ")[0]
    assert f"scored by test {name} (test images per class: tinycnn" not in opening  # datasets, not backbones
    assert f"scored by test {name} (test images per class: synthetic: a 1500, b 500 (3.0:1))" in opening
    assert f"Gains in test {name} are paired" in opening
    assert "Test accuracy (mean" not in markdown or metric == "accuracy"


def test_a_one_seed_case_prints_no_interval_as_if_it_covered_seed_variance(tmp_path):
    case(tmp_path, "tinycnn", 0.80, (0.05,), seeds=(684,))
    study = Study(with_data_reports(tmp_path), n_boot=50)
    assert list(study.gains.interval) == ["test images only"]
    text = prose.headline(study)
    assert re.search(r"\+0\.050 \[\+0\.0\d\d, \+0\.0\d\d\] \(test images only\), 1 paired seed\b", text)
    assert "a case with one seed has an interval of test-image variance only" in text
    assert "1 seed each" in text
    markdown = report_words(study)
    assert "test images only" in markdown.split("## Gain in test")[1].split("## ")[0]


def test_the_words_follow_the_signs_of_the_gains(tmp_path):
    positive = tmp_path / "positive"
    case(positive, "tinycnn", 0.80, (0.02, 0.021, 0.019))
    case(positive, "tinycnn", 0.80, (0.04, 0.041, 0.039), strategy="lp")
    text = prose.headline(Study(positive, n_boot=50))
    assert "Every mean gain is positive: the largest is LP's" in text and "loss" not in text
    mixed = tmp_path / "mixed"
    case(mixed, "tinycnn", 0.80, (0.02, 0.021, 0.019))
    case(mixed, "tinycnn", 0.80, (-0.065, -0.06, -0.07), strategy="lp")
    text = prose.headline(Study(mixed, n_boot=50))
    assert re.search(r"The largest mean gain is LP-FT's .*\(\+0\.0\d\d .*the largest mean loss LP's .*\(-0\.065", text)
    negative = tmp_path / "negative"
    case(negative, "tinycnn", 0.80, (-0.02, -0.021, -0.019))
    text = prose.headline(Study(negative, n_boot=50))
    assert "No strategy gained on average: the largest mean loss is LP-FT's" in text and "largest mean gain" not in text


def test_seeds_are_counted_per_case(tmp_path):
    case(tmp_path, "tinycnn", 0.80, (0.02, 0.021, 0.019))
    case(tmp_path, "resnet18", 0.80, (0.02,), seeds=(684,))
    assert "1-3 seeds per case" in prose.headline(Study(tmp_path, n_boot=50))


@pytest.mark.slow  # seconds in-process: out of the quick suite
def test_per_class_recall_shows_where_a_gain_comes_from(tmp_path):
    case(tmp_path, "tinycnn", 0.80, (0.03, 0.032, 0.029))  # all of the gain on the minority class b
    study = Study(with_data_reports(tmp_path), n_boot=200)
    table = study.per_class.set_index(["class", "arm"])
    assert table.loc[("a", "ft"), "recall"] == pytest.approx(0.80, abs=1e-3)
    assert table.loc[("b", "lp_ft"), "recall"] == pytest.approx(0.80 + 2 * np.mean([0.03, 0.032, 0.029]), abs=2e-3)
    assert table.loc[("b", "lp_ft"), "gain"] == pytest.approx(2 * np.mean([0.03, 0.032, 0.029]), abs=2e-3)
    assert table.loc[("b", "lp_ft"), "verdict"] == "better" and table.loc[("a", "lp_ft"), "gain"] == pytest.approx(0)
    markdown = write_report(tmp_path, n_boot=50)[0].read_text()
    section = markdown.split("## Test recall per class")[1].split("\n## ")[0]
    assert re.search(r"LP-FT .*0\.800 .*0\.86\d \(\+0\.06\d \[\+0\.0\d+, \+0\.0\d+\] better\)", section)
    assert "figures/recall_per_class.png" in markdown and "figures/confusion_0.png" in markdown
    assert "Test confusion matrices summed over seeds (synthetic / tinycnn)" in markdown


@pytest.mark.slow  # seconds in-process: out of the quick suite
def test_an_eighteen_case_study_has_figures_under_2000_px_and_no_template_text(tmp_path):
    labels = LABELS[::10]
    datasets = ("synthetic", "synthetic_source", "chest_xray_pneumonia", "brain_tumor_mri", "nct_crc_he", "ham10000")
    for d, dataset in enumerate(datasets):
        for backbone in ("resnet50", "densenet121", "vgg19"):
            for strategy, gain in (("ft", 0.0), ("lp_ft", 0.02 * (d - 2))):
                correct = with_accuracy(labels, 0.8) if strategy == "ft" else churned(labels, 0.8, gain, 0)
                crafted_run(tmp_path / dataset, correct, labels, dataset=dataset, backbone=backbone, strategy=strategy)
    markdown_path, html_path = write_report(tmp_path, n_boot=20)
    for png in (tmp_path / "figures").glob("*.png"):
        with Image.open(png) as image:
            assert image.width < 2000, (png.name, image.size)
            # at its own size (the page never shrinks it) its smallest text is at least 9 pt on screen
            assert float(image.info[MIN_FONT_KEY]) * DPI / 96 >= 9, (png.name, image.info[MIN_FONT_KEY])
    assert "{r." not in markdown_path.read_text() and "{" not in html_path.read_text().split("<style>")[0]
    page = html_path.read_text()
    assert "`" not in page and "*better*" not in page and "<code>seeds</code>" in page  # Markdown rendered
    assert "<pre>" not in page  # prose wraps; only tables (in their own scrolling box) may be wider than the page


@pytest.mark.slow  # seconds in-process: out of the quick suite
def test_backbones_of_one_dataset_are_one_friedman_block_and_the_report_prints_the_statistic(tmp_path):
    from scipy.stats import friedmanchisquare, studentized_range
    labels = LABELS[::10]
    rng = np.random.default_rng(5)
    for dataset in ("synthetic", "synthetic_source", "chest_xray_pneumonia", "brain_tumor_mri"):
        for backbone in ("resnet50", "densenet121", "vgg19"):
            base = 0.7 + 0.1 * rng.random()
            for strategy, gain in (("ft", 0.0), ("lp_ft", 0.03), ("lp", -0.05 + 0.1 * rng.random())):
                correct = with_accuracy(labels, base) if strategy == "ft" else churned(labels, base, gain, 0)
                crafted_run(tmp_path / dataset, correct, labels, dataset=dataset, backbone=backbone, strategy=strategy)
    study = Study(tmp_path, n_boot=20)
    [test] = study.rank_tests.values()
    per_case = study.best.pivot_table(index=["dataset", "backbone"], columns="arm",
                                      values="test_balanced_accuracy")
    by_dataset = per_case.groupby(level="dataset").mean()
    assert test.n_blocks == 4 and test.blocks.startswith("4 datasets (each the mean of its backbones: 12 cases)")
    expected = friedmanchisquare(*[by_dataset[c] for c in by_dataset])
    assert test.statistic == pytest.approx(expected.statistic) and test.friedman_p == pytest.approx(expected.pvalue)
    assert test.critical_difference == pytest.approx(studentized_range.ppf(0.95, 3, np.inf) / np.sqrt(2)
                                                     * np.sqrt(3 * 4 / (6 * 4)))
    markdown = report_words(study)
    assert re.search(rf"Friedman chi2 = {test.statistic:.2f}, df = 2, N = 4 datasets .*p = .*; Nemenyi critical "
                     rf"difference = {test.critical_difference:.2f} mean ranks", markdown)


def test_a_gain_interval_never_leaves_what_the_metric_allows():
    from studylib.study.analysis import within_range
    assert within_range("balanced_accuracy", 0.6, -0.9, 0.5) == (-0.6, 0.4)
    assert within_range("kappa", 0.2, -1.5, 0.5) == (-1.2, 0.5)
    assert within_range("ece", 0.1, -0.3, 0.2) == (-0.3, 0.1)  # lower is better: FT's ece minus the strategy's
    assert within_range("loss", 0.5, -9.0, 9.0) == (-9.0, 9.0)


def test_runs_outside_any_comparison_are_listed_apart_not_counted(tmp_path):
    case(tmp_path, "tinycnn", 0.80, (0.02, 0.021, 0.019))
    crafted_run(tmp_path / "pretraining", with_accuracy(LABELS, 0.6), LABELS, dataset="synthetic_source",
                strategy="ft", backbone="resnet18")
    crafted_run(tmp_path / "lonely", with_accuracy(LABELS, 0.6), LABELS, strategy="lp", backbone="vgg19")
    text = prose.headline(Study(tmp_path, n_boot=20))
    assert text.startswith("1 fine-tuning strategy (LP-FT) was compared with full fine-tuning (FT) on 1 dataset x "
                           "backbone case (synthetic / tinycnn), 3 seeds each, 6 finished runs")
    assert ("Not part of any comparison: 1 run(s) of synthetic / vgg19 (LP: no FT run to compare with); 1 run(s) of "
            "synthetic_source / resnet18 (FT: FT alone).") in text


@pytest.mark.slow  # seconds in-process: out of the quick suite
def test_the_win_tie_loss_table_has_no_stray_header(tmp_path):
    case(tmp_path, "tinycnn", 0.80, (0.03, 0.032, 0.029))
    from studylib.views.report import _html, _sections

    study = Study(tmp_path, n_boot=20)
    page = _html(study, _sections(study), [])  # the page's tables, without drawing its figures
    table = page.split("Win / tie / loss")[1].split("</table>")[0]
    assert "<th>verdict</th>" not in table and "<th></th>" not in table  # an empty column in the browser
