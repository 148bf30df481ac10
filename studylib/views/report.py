"""A self-contained report of a grid: headline tables and figures as Markdown and HTML (PNGs inlined)."""
from __future__ import annotations

import base64
import html
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ..core import runfiles
from ..core.config import metric_name
from ..core.constants import DEFAULT_METRIC, ROPE
from ..core.fileio import atomic_write
from ..core.outfolder import claim_folder
from ..study import analysis, decisions, measures, sources, stats
from ..study.analysis import Study
from ..study.results import failures
from ..training.strategies import strategy_label as label
from . import decisionfigures, measurefigures, prose, runfigures, studyfigures
from .catalogue import FIGURES

# How to read each part, in two sentences; the report, the analysis notebook and the README use these.
HOW_TO_READ = {
    "gains": ("Each row is a strategy's improvement over FT on the same case and the same seeds (for loss, FT's "
              "loss minus the strategy's), averaged over the seeds (`seeds` of them); [low, high] is its 95% "
              "t-interval before any correction: over the per-seed gains when each seed had its own test set "
              "(`design` nested), with the test-image bootstrap variance added when seeds shared test images "
              "(crossed, partly shared). The verdict comes from p-values corrected for every "
              "comparison in the table ({correction}): *better* or *worse* only when the corrected p < 0.05, *seed "
              "variance unknown* with fewer than {min_seeds} seeds, and `bn_differs` flags a pair that ran under "
              "different BatchNorm policies. `practical` is the Bayesian decision beside it (the correlated t-test's "
              "posterior of the gain): *practically equivalent* when the gain lies within +-{rope} of FT with "
              "probability `p_equivalent` > 0.95, *better* or *worse* when it lies beyond that band with "
              "probability > 0.95, else *undecided*: inside the noise is not the same as equivalent. For an "
              "undecided gain, `seeds_needed` is how many seeds per strategy would decide it (80% chance) if its "
              "mean and seed-to-seed spread stayed as observed (inf: more seeds alone would not; the test set's "
              "noise is too large for the ROPE)."),
    "bn": ("When a strategy ran under another BatchNorm policy than FT and the FT control under that policy ran "
           "too, its gain over FT is split into the control's gain over FT (what BatchNorm explains) and the "
           "strategy's gain over the control (what the strategy adds). The total is the gain table's row; the two "
           "parts have their own intervals, with verdicts corrected over every part in this table."),
    "wtl": ("Counts of the corrected verdicts over the dataset x backbone cases of each protocol group; groups are "
            "never added together, because their runs differ in data, budget or recipe. A strategy that is "
            "'inside the noise' everywhere has not been shown to differ from FT, which is not the same as being "
            "equal to it."),
    "cd": ("Strategies are ranked within each block (1 = best) and placed at their mean rank; a horizontal bar "
           "joins strategies that the post-hoc test cannot tell apart at 0.05 after a Friedman test over all of "
           "them (Demsar 2006); when the Friedman test finds no difference, no post-hoc is read and one bar joins "
           "all. Few blocks make wide bars: with fewer than about 10 cases, a bar over everything means 'not "
           "enough cases', not 'no difference'. Blocks must be independent: when several backbones ran on one dataset "
           "they share its images, so each dataset is one block (the mean over its backbones)."),
    "cka": ("Each line is a strategy; each point is how similar a block's output on held-out validation images is "
            "to the same block's output before fine-tuning (debiased linear CKA: 1 = unchanged up to rotation and "
            "scale, 0 = unrelated), mean over seeds. A block's output depends on every block below it, so CKA is "
            "cumulative (only blocks below the lowest trained one stay at 1); LP-FT's authors predict it changes "
            "the features less than FT, because the head it starts from is already fitted."),
    "relation": ("One row per strategy: CKA of the top backbone block and averaged over blocks, beside the gain over "
                 "FT from the gain table. The Spearman correlation across strategies (of top-block CKA with the "
                 "gain) is descriptive, one point per strategy, not a test: negative means the strategies whose top "
                 "features moved more gained more here, positive that keeping them paid."),
    "calibration": ("Expected calibration error (top-label, equal-width bins), Brier score and negative "
                    "log-likelihood on test; lower is better for all three. The gains are FT's value minus the "
                    "strategy's (positive: better calibrated) with the same intervals and correction as accuracy, "
                    "each metric its own family."),
    "fraction": ("Each line is a strategy's test score, mean over seeds with its 95% interval over seeds, as the "
                 "labelled share of the training split grows (log axis; validation and test untouched; smaller "
                 "shares are subsets of larger ones; selection and early stopping use the full validation split at "
                 "every share). Lines that cross are where the ranking changes; whether a difference at one share is "
                 "beyond the noise is in that share's gain table (its own protocol group)."),
    "per_class": ("Each cell is a class's recall on test (the share of its test images recognised), mean over seeds; "
                  "for every strategy but FT, in brackets its paired gain over FT with the gain table's 95% interval "
                  "and, where the corrected verdict is one, better or worse (each case and class is its own family). "
                  "Balanced accuracy is the mean of these recalls; a class a strategy sacrifices shows here first."),
    "budget": ("Settings tried per strategy (per case and seed) before the best on validation was kept. Unequal "
               "budgets favour the strategy with more tries, so compare strategies with equal counts."),
    "which": ("For each protocol group (label budget and recipe), modality and backbone, the strategy with the best "
              "mean test score, and every other strategy's paired gain over it on the same seeds: `p_equivalent` is "
              "the posterior probability that it lies within +-{rope} of the best (the correlated t-test of the gain "
              "table), `p_worse` that it is worse beyond that, on the group's least favourable case. A strategy is "
              "*as good* when p_equivalent (or p(better)) > 0.95 on every case; the cheapest of those and the best, "
              "by trainable parameters then seconds per epoch, is `recommended`. *undecided* means more evidence is "
              "needed: `seeds_needed` is how many seeds per strategy would decide it (80% chance) if the mean "
              "difference and the seed-to-seed spread stayed as observed (inf: more seeds alone would not, the test "
              "set's own noise is too large). Costs within 10% in seconds per epoch count as equal (timing noise); "
              "on a tie the best itself is recommended."),
    "across": ("Beyond single cases: the Bayesian signed-rank test (Benavoli et al. 2014, 2017; baycomp) on each "
               "strategy's mean gain over FT per independent block (a dataset when several backbones share its "
               "images) gives p(worse), p(practically equivalent: within +-{rope}), p(better) for the pool of "
               "datasets; a decision needs one of them above 0.95 and at least 3 blocks. It answers 'does this "
               "strategy beat FT on data like these', where the per-case table answers 'on this data set'."),
    "poi": ("The probability of improvement (Agarwal et al. 2021): in each case, the chance that a run of the "
            "strategy scores above a run of FT (ties one half), averaged over the cases; 0.5 means no tendency. "
            "[low, high] is a 95% stratified-bootstrap interval: each arm's seeds resampled within each case. With 3 "
            "seeds a case can only give 0, 1/9, ... 1, so read it over many cases."),
    "sources": ("Each source of weights (a grid's weights: axis) against the reference source, for the same strategy, "
                "case and seed (so the same split and test images): the paired gain, its 95% interval and the "
                "{correction}-corrected verdict, as in the gain table. It says what a checkpoint (in-domain "
                "pretraining, the synthetic source, ImageNet) is worth on this data for each strategy; the strategies "
                "themselves are compared within one source only (each source is its own protocol group)."),
    "pool": ("Each pairwise verdict of the post-hoc test beside the rank diagram was recomputed with every other "
             "strategy left out once (Benavoli, Corani & Mangili 2016: mean-rank tests compare A and B through the "
             "others). A verdict that flips when a strategy leaves the pool depends on which strategies were "
             "compared, not only on A and B: prefer the pairwise gains (and, across cases, the signed-rank test) "
             "for it."),
    "profile": ("Each line is a strategy: for every threshold t on the x axis, the share of cases whose mean gain over "
                "FT is above t. A line that stays high further right gains more often and by more; where it crosses "
                "0.5 is its median gain over the cases, and its value at t = 0 the share of cases it gained at all "
                "(means, without the noise: the gain table has the intervals)."),
    "frontier": ("Mean test score over seeds beside the median of each cost per run: trainable parameters (the most "
                 "in any epoch), wall seconds per epoch run and peak memory, all as measured on the machine that "
                 "ran it. A strategy is on a cost's frontier when no other strategy of its case scores as well for "
                 "less of that cost; the means ignore the noise, so read them with the gain table's verdicts."),
}


def study_figures(study: Study) -> dict[str, Path]:
    """Write the headline figures of `study` (catalogue.FIGURES, in its order) into ROOT/figures; returns
    title -> PNG path."""
    return {title: path for _, title, path in _drawn(study)}


def _drawn(study: Study) -> list[tuple[str, str, Path]]:
    """(catalogue key, title, PNG) of every figure drawn for `study`."""
    out, made = study.root / "figures", []

    def keep(key: str, draw, where: str = "", suffix: str = "") -> None:
        """Draw one figure into ROOT/figures and record (key, title, PNG).

        Args:
            key: the figure's catalogue key (FIGURES); also the PNG's name.
            draw: draws the figure into the PNG path it is given and returns the figure.
            where: what fills the title's {where} (a protocol or a case).
            suffix: added to the file name, to tell several figures of one key apart.
        """
        title = FIGURES[key].title.format(metric=metric_name(study.metric), where=where)
        made.append((key, title, out / f"{key}{suffix}.png"))
        plt.close(draw(made[-1][2]))

    if study.best.empty:
        return made
    if len(decisions.study_which(study)):
        keep("which_strategy", lambda p: decisionfigures.which_strategy(decisions.study_which(study), p, study.metric,
                                                                        study.rope))
    keep("gain_heatmap", lambda p: studyfigures.gain_heatmap(
        study.gains, p, title=f"gain in test {metric_name(study.metric)} over FT (~: no verdict: inside the noise "
                              "or too few seeds)"))
    for protocol, test in study.rank_tests.items():
        keep("critical_difference", lambda p, t=test: studyfigures.cd_diagram(t, p), protocol, f"_{protocol}")
    by_source = sources.study_sources(study)
    if len(by_source):
        keep("source_gains", lambda p: studyfigures.source_gains(by_source, p, study.metric),
             by_source.reference.iloc[0])
    if len(study.gains) and study.gains.groupby(["protocol", "arm"]).size().max() >= decisionfigures.MIN_CASES:
        keep("performance_profile", lambda p: decisionfigures.performance_profile(
            decisions.performance_profile(study.gains), p, study.metric))
    keep("accuracy", lambda p: studyfigures.accuracy_bars(study.accuracy, p, study.metric, study.classes))
    if len(study.per_class):
        keep("recall_per_class", lambda p: studyfigures.recall_bars(study.per_class, p))
    for number, ((protocol, dataset, backbone), matrices) in enumerate(analysis.summed_confusions(study.best).items()):
        classes = analysis.run_classes(study.example_run(next(iter(matrices))) or "")
        several = study.done.protocol.nunique() > 1
        where = f"{dataset} / {backbone}" + (f", {protocol}" if several else "")
        keep("confusion", lambda p, m=matrices, c=classes, w=where: studyfigures.confusion_grid(
            m, c or [str(i) for i in range(len(next(iter(m.values()))))], f"{w}: test images, all seeds", p),
            where, f"_{number}")
    rgn = study.example_run("auto_rgn", runfiles.LAYERS)
    if rgn is not None:
        keep("auto_rgn_block_lr", lambda p: runfigures.block_lr_heatmap(rgn, "lr", p))
    timeline = {s: study.example_run(s, runfiles.LAYERS) for s in ("gu_last_first", "gu_first_last", "lp_ft")}
    timeline = {s: r for s, r in timeline.items() if r is not None}
    if timeline:
        keep("unfreezing_timeline", lambda p: studyfigures.unfreezing_timeline(timeline, p))
    keep("cost_frontier", lambda p: studyfigures.cost_frontier(measures.frontier(study.best, study.metric), p,
                                                               study.metric))
    change = measures.study_change(study)
    if len(change):
        keep("cka_by_block", lambda p: measurefigures.cka_by_block(change, p))
        keep("cka_vs_gain", lambda p: measurefigures.change_vs_gain(measures.study_relation(study), p,
                                                                        study.metric))
    calibration = measures.study_calibration_gains(study)
    if len(calibration):
        keep("calibration_gains", lambda p: measurefigures.calibration_gains(calibration, p))
    fraction = measures.study_efficiency(study)
    if len(fraction):
        keep("labelled_fraction", lambda p: measurefigures.labelled_fraction(fraction, study.metric, p))
    return made


def write_report(root: str | Path, metric: str = DEFAULT_METRIC, n_boot: int = stats.N_BOOT,
                 runs: pd.DataFrame | None = None, correction: str = "holm",
                 overwrite: bool = False, rope: float = ROPE, posthoc: str = "nemenyi") -> tuple[Path, Path]:
    """ROOT/report.md (figures linked) and ROOT/report.html (self-contained); `runs`: collect(root) if known.
    A report.md or report.html there that studylib did not write is refused unless `overwrite`.

    Args:
        root: the grid folder; report.md, report.html and figures/ are written there.
        metric: the test metric compared (default balanced_accuracy).
        n_boot: test-image bootstrap resamples for each gain's interval.
        runs: the runs table collect(root) returns, when the caller has it; None: collected here.
        correction: multiplicity correction over the gains: "holm" or "fdr_bh".
        overwrite: write even where report.md or report.html were not written by studylib.
        rope: gains within +-rope of the metric are practically equivalent (the Bayesian decisions).
        posthoc: after the Friedman test: "nemenyi" or "wilcoxon" (pairwise signed-rank with Holm).
    """
    claim_folder(root, "grid", overwrite, "the report folder")
    study = Study(Path(root), metric, n_boot, runs, correction=correction, rope=rope, posthoc=posthoc)
    sections = _sections(study)
    figures = _drawn(study)
    markdown = _markdown(study, sections, figures)
    page = _html(study, sections, figures)
    atomic_write(study.root / "report.md", markdown)
    atomic_write(study.root / "report.html", page)
    return study.root / "report.md", study.root / "report.html"


def report_words(study: Study) -> str:
    """The report's Markdown without drawing a figure: headline, methods, notes and every table section, as
    write_report writes them (a quick look, or a test of the words)."""
    return _markdown(study, _sections(study), [])


def reading(part: str, study: Study | None = None) -> str:
    """The two sentences on how to read `part` (gains, bn, wtl, cd, budget)."""
    correction = stats.CORRECTIONS[study.correction if study else "holm"]
    return HOW_TO_READ[part].format(correction=correction, min_seeds=stats.MIN_SEEDS,
                                    rope=study.rope if study else ROPE)


# the notebook's narrower gain table: what fits beside the prompt at 1024 px (the report has every column)
GAIN_COLUMNS_SHORT = ["protocol", "dataset", "backbone", "arm", "seeds", "gain", "low", "high", "p_adjusted", "verdict",
                      "practical"]
WHICH_COLUMNS_SHORT = ["modality", "backbone", "arm", "seeds", "mean", "gain_vs_best", "p_equivalent", "standing",
                       "seeds_needed", "trainable_params", "recommended"]
GAIN_COLUMNS = ["protocol", "dataset", "backbone", "arm", "baseline", "seeds", "gain", "low", "high", "interval",
                "p", "p_adjusted", "verdict", "p_equivalent", "practical", "seeds_needed", "design", "bn_differs"]


def per_class_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per case and strategy, one column per class: 'recall' or 'recall (gain [low, high])'."""
    def cell(row) -> str:
        if pd.isna(row.gain):
            return f"{row.recall:.3f}"
        mark = {"better": " better", "worse": " worse"}.get(row.verdict, "")
        return f"{row.recall:.3f} ({row.gain:+.3f} [{row.low:+.3f}, {row.high:+.3f}]{mark})"
    frame = table.assign(cell=[cell(r) for r in table.itertuples()])
    wide = frame.pivot_table(index=["protocol", "dataset", "backbone", "arm"], columns="class", values="cell",
                             aggfunc="first", sort=False)
    return wide.reset_index().rename_axis(columns=None)


def _sections(study: Study) -> dict[str, tuple[pd.DataFrame | str, str]]:
    """Title -> (table or text, how to read it)."""
    sections: dict[str, tuple[pd.DataFrame | str, str]] = {}
    if study.best.empty:
        return {"Nothing to compare yet": ("no finished runs in this folder", "")}
    if study.done.protocol.nunique() > 1:
        sections["Protocol groups (compared separately)"] = (study.protocols, "")
    name = metric_name(study.metric)
    sections.update(_decision_sections(study))
    sections[f"Test {name} (mean, sd over seeds; each strategy at its best validation setting)"] = \
        (study.accuracy.sort_values(["protocol", "dataset", "backbone", "mean"],
                                    ascending=[True, True, True, False]).round(4), "")
    gains = study.gains
    if not gains.empty:
        sections[f"Gain in test {name} over FT: 95% interval (the interval column says what it carries), verdict"] = \
            (gains[GAIN_COLUMNS].sort_values(["protocol", "dataset", "backbone", "gain"],
                                             ascending=[True, True, True, False]).round(4), reading("gains", study))
        if len(study.bn_split):
            sections["BatchNorm or strategy? The gain over FT split by the BatchNorm control"] = \
                (study.bn_split.round(4), reading("bn", study))
        elif study.bn_mixed:
            sections["BatchNorm is not held constant"] = (
                "Some strategies ran under another BatchNorm policy than FT (bn_differs); their gains mix the "
                "strategy with the BatchNorm policy. Run the control (params/paper_bn.yaml: FT with "
                "bn_policy=freeze_stats and freeze) to split them.", "")
        wtl = analysis.win_tie_loss(gains).reset_index()
        columns = ["protocol", "arm", "cases", "better", "inside the noise", "worse", "seed variance unknown",
                   "seeds"]
        sections[f"Win / tie / loss against FT in test {name}, per protocol group"] = \
            (wtl[columns], reading("wtl", study))
        sections.update(_pooled_sections(study))
    sections.update(_source_sections(study))
    ranks = analysis.mean_ranks(study.accuracy, study.metric).round(2)
    tests = study.rank_tests
    for protocol in sorted(study.done.protocol.unique()):
        if protocol not in tests:
            sections[f"Mean rank of test {name} over dataset x backbone cases ({protocol})"] = \
                (ranks[ranks.protocol == protocol], "")
            continue
        test = tests[protocol]
        posthoc = "Nemenyi" if test.posthoc == "nemenyi" else "Wilcoxon signed-rank with Holm"
        sections[f"Ranks of test {name} over {test.blocks} ({protocol})"] = (
            test.ranks.round(2).rename("mean rank").reset_index(),
            f"{test.describe()}; post-hoc {posthoc}" + (" (read only after a rejection)"
            if not test.rejected else "") + (f"; {test.note}" if test.note else "") + ". " + reading("cd", study))
    flagged = _pool_text(study)
    if flagged:
        sections["Does a verdict depend on the pool of strategies?"] = (flagged, reading("pool", study))
        pairs = pd.concat([t.assign(protocol=p) for p, t in study.pool_stability.items()], ignore_index=True)
        sections["Every pair: the post-hoc in the pool beside the pairwise Wilcoxon signed-rank test (Holm)"] = (
            pairs[["protocol", "a", "b", "different", "depends_on_pool", "flips_without", "wilcoxon_p",
                   "wilcoxon_different"]].round(4), "")
    if len(study.per_class):
        sections["Test recall per class: mean over seeds, gain over FT [95% interval]"] = \
            (per_class_table(study.per_class), reading("per_class", study))
    sections.update(_beyond_sections(study))
    cost = measures.frontier(study.best, study.metric)
    if cost[list(measures.COSTS)].notna().any().any():
        sections[f"Cost and test {name}: who is on the frontier"] = (_frontier_text(cost), reading("frontier", study))
    sections["Tuning budget per strategy"] = (study.budgets, reading("budget", study))
    failed = failures(study.runs)
    if len(failed):
        sections["Runs that did not finish"] = (failed, "")
    return sections


def _decision_sections(study: Study) -> dict[str, tuple[pd.DataFrame | str, str]]:
    """Which strategy for my data: one sentence per group, then the evidence behind it."""
    table = decisions.study_which(study)
    if table.empty:
        return {}
    names = analysis.protocol_names(study.done)
    sentences = [decisions.recommendation(group, metric_name(study.metric), study.rope, names)
                 for _, group in table.groupby(["protocol", "modality", "backbone"], sort=False)]
    shown = table.round({"mean": 4, "gain_vs_best": 4, "p_worse": 3, "p_equivalent": 3, "seconds_per_epoch": 2})
    return {"Which strategy for my data": ("\n".join(f"- {s}" for s in sentences), reading("which", study)),
            "Which strategy for my data: the evidence": (shown, "")}


def _pooled_sections(study: Study) -> dict[str, tuple[pd.DataFrame | str, str]]:
    """Across the cases: the signed-rank decisions and the probability of improvement over FT."""
    sections: dict[str, tuple[pd.DataFrame | str, str]] = {}
    across = decisions.study_across(study)
    if len(across) and across.p_equivalent.notna().any():
        sections["Across datasets: better than FT, practically equivalent, or worse? (Bayesian signed-rank)"] = \
            (across.round(4), reading("across", study))
    elif len(across):
        most = int(across.blocks.max())
        sections["Across datasets (Bayesian signed-rank)"] = (
            f"Not computed: a strategy has at most {most} independent "
            f"{across.unit.iloc[0] if most != 1 else across.unit.iloc[0].rstrip('s')} here and the test needs "
            f"{decisions.MIN_BLOCKS}; the per-case decisions above hold for their own data only.", "")
    improvement = decisions.study_improvement(study)
    if len(improvement):
        sections["Probability of improvement over FT (a run of the strategy above a run of FT)"] = \
            (improvement.round(3), reading("poi", study))
    return sections


def _source_sections(study: Study) -> dict[str, tuple[pd.DataFrame | str, str]]:
    """With weights as a grid axis: what each source of weights is worth over the reference, per strategy."""
    table = sources.study_sources(study)
    if table.empty:
        return {}
    name = metric_name(study.metric)
    return {f"Gain by source of weights: test {name} over {table.reference.iloc[0]}":
            ("\n".join(f"- {s}" for s in sources.source_sentences(table, label)), reading("sources", study)),
            "Gain by source of weights: every strategy and case": (table.round(4), "")}


def _pool_text(study: Study) -> str:
    """A line per pairwise verdict that flips when another strategy leaves the pool, or '' when none is tested."""
    lines = []
    for protocol, table in study.pool_stability.items():
        several = len(study.pool_stability) > 1
        for row in table[table.depends_on_pool].itertuples():
            said, flipped = ("differ", "cannot be told apart") if row.different else ("cannot be told apart", "differ")
            without = " or ".join(label(s) for s in row.flips_without.split(", "))
            pairwise = "differ" if row.wilcoxon_different else "cannot be told apart"
            lines.append(f"- {label(row.a)} and {label(row.b)} {said} with every strategy in the pool, but "
                         f"{flipped} without {without}; by the pairwise Wilcoxon signed-rank test (Holm), which "
                         f"uses only their own scores, they {pairwise} (p = {row.wilcoxon_p:.3g})"
                         + (f" ({protocol})" if several else ""))
        if not len(table[table.depends_on_pool]) and len(table):
            lines.append(f"- {protocol}: no pairwise verdict changes when any one strategy is left out "
                         f"({len(table)} pairs checked)")
    return "\n".join(lines)


def _frontier_text(cost: pd.DataFrame) -> pd.DataFrame:
    """The frontier table with one readable column naming the costs on whose frontier a strategy is."""
    on = [", ".join(name for c, name in measures.COSTS.items() if row[f"frontier_{c}"]) or "-"
          for _, row in cost.iterrows()]
    shown = cost.drop(columns=[f"frontier_{c}" for c in measures.COSTS]).assign(on_the_frontier_of=on)
    return shown.round({"mean": 4, "seconds_per_epoch": 2, "peak_memory_mb": 0})


def _beyond_sections(study: Study) -> dict[str, tuple[pd.DataFrame | str, str]]:
    """Feature change against the gain, calibration, and the ranking across labelled fractions."""
    sections: dict[str, tuple[pd.DataFrame | str, str]] = {}
    relation = measures.study_relation(study)
    if len(relation):
        rho = measures.change_correlation(relation)
        several = relation.protocol.nunique() > 1
        text = "; ".join(f"{r.dataset} / {r.backbone}" + (f" ({r.protocol})" if several else "")
                         + f": Spearman {r.spearman:+.2f} over {r.strategies} strategies"
                         for r in rho.itertuples() if pd.notna(r.spearman))
        note = measures.missing_note(study.best)
        sections["Feature change and the gain over FT"] = (
            relation.round(4),
            reading("relation", study) + (f" Here: {text}." if text else "") + (f" {note}" if note else ""))
    table = measures.calibration_table(study.best)
    gains = measures.study_calibration_gains(study)
    if len(gains):
        sections["Calibration on test (mean, sd over seeds)"] = (table.round(4), reading("calibration", study))
        columns = ["metric", "protocol", "dataset", "backbone", "arm", "seeds", "gain", "low", "high",
                   "p_adjusted", "verdict"]
        sections["Calibration: improvement over FT, 95% interval, corrected verdict"] = (gains[columns].round(4), "")
    fraction = measures.study_efficiency(study)
    if len(fraction):
        sentences = measures.ranking_sentences(fraction, study.metric, study.gains)
        sections["Where the ranking changes with fewer labels"] = (
            "\n".join(f"- {s}" for s in sentences), reading("fraction", study))
    return sections


def labelled(table: pd.DataFrame, study: Study | None = None) -> pd.DataFrame:
    """Strategy labels (LP-FT, G-LF) instead of registry ids and, with several protocol groups, each group named
    by what sets it apart, for tables people read."""
    out = table.reset_index(drop=True)
    if study is not None and "protocol" in out and study.done.protocol.nunique() > 1:
        out["protocol"] = out.protocol.map(analysis.protocol_names(study.done))
    for column in ("arm", "baseline", "a", "b"):
        if column in out:
            out[column] = out[column].map(label)
    return out


def _markdown(study: Study, sections: dict, figures: list[tuple[str, str, Path]]) -> str:
    lines = ([f"# studylib report: {study.root.resolve().name}", ""]
             + [line for p in _opening(study) for line in (p, "")])
    lines += [f"> {note}" for note in study.notes]
    for title, (body, how) in sections.items():
        text = f"```text\n{labelled(body, study).to_string(index=False)}\n```" if isinstance(body, pd.DataFrame) \
            else body
        lines += [f"## {title}", ""] + ([f"*How to read it:* {how}", ""] if how else []) + [text, ""]
    for key, title, path in figures:
        how = figure_reading(key, study)
        lines += [f"## {title}", ""] + ([f"*How to read it:* {how}", ""] if how else []) + \
            [f"![{title}]({path.relative_to(study.root)})", ""]
    return "\n".join(lines)


def figure_reading(key: str, study: Study | None = None) -> str:
    """The words under a catalogued figure: its reading (two sentences) or its caption."""
    figure = FIGURES[key]
    return reading(figure.reading, study) if figure.reading else figure.caption


def _opening(study: Study) -> list[str]:
    """The headline and methods paragraphs."""
    return [prose.headline(study)] + ([f"Methods. {prose.methods(study)}"] if not study.done.empty else [])


def _html(study: Study, sections: dict, figures: list[tuple[str, str, Path]]) -> str:
    """The page: the Markdown parts rendered (escaped: nothing in a run folder becomes markup), every figure at its
    own size (its smallest text stays at least 9 pt; a figure wider than the page scrolls by itself, as a wide
    table does), so the page never scrolls sideways."""
    parts = [f"<h1>studylib report: {html.escape(study.root.resolve().name)}</h1>"]
    parts += [_rendered(paragraph) for paragraph in _opening(study)]
    parts += [f"<div class='note'>{_rendered(note)}</div>" for note in study.notes]
    for key, title, path in figures:
        data = base64.b64encode(path.read_bytes()).decode()
        how = figure_reading(key, study)
        how = _how_box(how)
        parts.append(f"<h2>{html.escape(title)}</h2>{how}<div class='wide'>"
                     f"<img alt='{html.escape(title)}' src='data:image/png;base64,{data}'></div>")
    for title, (body, how) in sections.items():
        if isinstance(body, pd.DataFrame):
            content = ("<div class='wide'>"
                       + labelled(body, study).to_html(classes="table", na_rep="missing", index=False)
                       + "</div>")  # a wide table scrolls by itself, the page keeps its width
        else:
            content = _rendered(body)
        how = _how_box(how)
        parts.append(f"<h2>{html.escape(title)}</h2>{how}{content}")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;overflow-wrap:anywhere}"
             "img{max-width:none}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:3px 6px;overflow-wrap:normal}"
             "pre{white-space:pre-wrap}.wide{overflow-x:auto;max-width:100%}.note{background:#fff3cd;padding:0 6px}"
             ".how{color:#333;background:#eef4fb;padding:0 6px}code{background:#f3f3f3;padding:0 2px}")
    # the first bytes are how `core.outfolder` knows the page is studylib's: keep them
    return f"<!doctype html><html><head><meta charset='utf-8'><title>studylib report</title><meta name='viewport' " \
           f"content='width=device-width, initial-scale=1'><style>{style}</style>" \
           f"</head><body>{''.join(parts)}</body></html>"


def _how_box(how: str) -> str:
    """The "How to read it" box of a figure or section ("" when there is nothing to read)."""
    return f"<div class='how'>{_rendered('**How to read it:** ' + how)}</div>" if how else ""


def _rendered(markdown: str) -> str:
    """Markdown (the words' `code`, *emphasis* and - lists) as HTML, any HTML in it escaped."""
    import mistune

    return mistune.create_markdown(escape=True)(markdown)
