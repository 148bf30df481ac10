"""The figures of a study, listed once: what each is called, the words under it, and the explorer's view of it.

The report and the analysis notebook draw every entry that has something to show (`report.study_figures`),
the explorer offers every entry with a `view` as a dropdown choice; both read titles, captions and readings
from here, so a figure's name and its explanation cannot drift apart between them.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StudyFigure:
    """title: the heading ({metric} and {where} are filled in); reading: a key of report.HOW_TO_READ (the
    two sentences on how to read it) or, when empty, `caption`, one sentence; view: the explorer's name for
    it ('' when the report alone shows it)."""

    title: str
    caption: str = ""
    reading: str = ""
    view: str = ""


FIGURES: dict[str, StudyFigure] = {  # key -> figure, in report order; the key names the PNG
    "which_strategy": StudyFigure("Which strategy for my data: each strategy against the best", reading="which",
                                  view="which strategy for my data"),
    "gain_heatmap": StudyFigure(
        "Gain in test {metric} over FT per dataset x backbone",
        "Each cell is a strategy's mean gain over FT on one dataset x backbone (blue: better, red: worse); a ~ "
        "marks gains without a verdict (inside the noise after correction, or too few seeds).", view="gain over FT"),
    "critical_difference": StudyFigure("Critical-difference diagram ({where})", reading="cd",
                                       view="critical-difference diagram"),
    "source_gains": StudyFigure("Gain by source of weights: test {metric} over {where}", reading="sources"),
    "performance_profile": StudyFigure("Performance profile of the gains in test {metric} over FT",
                                       reading="profile", view="performance profile"),
    "accuracy": StudyFigure(
        "Mean test {metric} per strategy (+- sd over seeds)",
        "Mean test score of each strategy over seeds with the seed-to-seed sd; the dashed line is what guessing "
        "scores.", view="accuracy per strategy"),
    "recall_per_class": StudyFigure(
        "Test recall per class and strategy",
        "Mean test recall of each class per strategy over seeds: which classes a strategy gains or loses on.",
        view="recall per class"),
    "confusion": StudyFigure(
        "Test confusion matrices summed over seeds ({where})",
        "Counts of test images by true (rows) and predicted (columns) class, added over the seeds of each "
        "strategy's selected runs; the colour is the share of the true class."),
    "auto_rgn_block_lr": StudyFigure(
        "Auto-RGN: per-block learning rate over epochs",
        "Auto-RGN's learning rate per block and epoch in one run: each tensor's rate follows its relative gradient "
        "norm, so the map changes from epoch to epoch."),
    "unfreezing_timeline": StudyFigure(
        "Trainable blocks per epoch",
        "Which blocks trained in each epoch, one run per strategy: gradual unfreezing adds a block per stage, LP-FT "
        "trains the head alone first."),
    "cost_frontier": StudyFigure(
        "Cost against accuracy: the frontier",
        "One point per strategy and case: its mean test score against the median of each cost (trainable "
        "parameters, seconds per epoch, peak memory). Ringed points are on the case's frontier for that cost: no "
        "other strategy scores as well for less; the grey steps join them.",
        view="cost frontier"),
    "cka_by_block": StudyFigure("Feature change per block (CKA to the starting network)", reading="cka",
                                view="feature change per block"),
    "cka_vs_gain": StudyFigure("Feature change against the gain over FT", reading="relation",
                               view="feature change vs gain"),
    "calibration_gains": StudyFigure("Calibration: improvement over FT", reading="calibration",
                                     view="calibration vs FT"),
    "labelled_fraction": StudyFigure("Test score against the labelled fraction", reading="fraction",
                                     view="labelled fraction"),
}

STUDY_VIEWS = tuple(key for key, figure in FIGURES.items() if figure.view)  # the explorer's study views, in order
