"""Gain by source of weights: what starting from one checkpoint instead of another is worth, per strategy.

A grid with `weights:` as an axis (none, the synthetic source, an in-domain checkpoint, ImageNet where present)
puts each source in its own protocol group, so the strategy comparisons never pool sources. This compares the
sources themselves: for each strategy and case, the paired gain (same seed, so the same split and test images)
of each source over the reference source (random init when the grid has it), with the interval, test and
verdict of every other gain in the report.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..core.constants import DEFAULT_METRIC, ROPE
from . import stats
from .analysis import CASE, _grouping_columns, _keys, gain_summary

SOURCE_FIELDS = ("weights", "weights_keys", "weights_channels", "weights_sha256")  # what a source is
RANDOM_INIT = "random init"
COLUMNS = ["arm", *CASE, "source", "reference", "seeds", "gain", "low", "high", "p_adjusted", "verdict",
           "practical"]


def source_label(weights: object) -> str:
    """How a source reads in tables: 'random init', a weight set's name, or a checkpoint file's name."""
    text = str(weights)
    if text.lower() in ("none", "", "nan"):
        return RANDOM_INIT
    return Path(text).stem if ("/" in text or "\\" in text or "." in text) else text


def source_labels(weights: pd.Series) -> pd.Series:
    """source_label of each value; where two values would read alike (two files named best.pt in different
    folders), those keep their whole text, so two sources are never merged into one."""
    names = {value: source_label(value) for value in weights.astype(str).unique()}
    clashing = pd.Series(names).duplicated(keep=False)
    names = {value: value if clashing[value] else name for value, name in names.items()}
    return weights.astype(str).map(names)


def has_sources(best: pd.DataFrame) -> bool:
    return "weights" in best and best.weights.astype(str).nunique() > 1


def reference_source(best: pd.DataFrame) -> str:
    labels = source_labels(best.weights)
    return RANDOM_INIT if (labels == RANDOM_INIT).any() else labels.value_counts().index[0]


def source_gains(best: pd.DataFrame, metric: str = DEFAULT_METRIC, n_boot: int = stats.N_BOOT,
                 correction: str = "holm", rope: float = ROPE) -> pd.DataFrame:
    """Per strategy x case x source: the paired gain of that source over the reference source.

    Args:
        best: select_best's table (one selected run per protocol, case, strategy and seed).
        metric: the test metric compared.
        n_boot: test-image bootstrap resamples per gain.
        correction: multiplicity correction over the table's p-values ("holm" or "fdr_bh").
        rope: region of practical equivalence of the Bayesian decision.
    """
    if best.empty or not has_sources(best):
        return pd.DataFrame(columns=COLUMNS)
    rest = [c for c in _grouping_columns(best) if c not in SOURCE_FIELDS]  # what else sets protocols apart
    frame = best.assign(protocol=best.arm + "\x1f" + _keys(best, rest), arm=source_labels(best.weights))
    reference = reference_source(best)
    gains = gain_summary(frame, metric, baseline=reference, n_boot=n_boot, correction=correction, rope=rope)
    gains = gains.assign(source=gains.arm, arm=gains.protocol.str.split("\x1f").str[0], reference=reference)
    return gains[gains.seeds > 0].reindex(columns=COLUMNS).reset_index(drop=True)


def study_sources(study) -> pd.DataFrame:
    """source_gains of a Study, computed once."""
    return study.cached("sources", lambda: source_gains(study.best, study.metric, study.n_boot, study.correction,
                                                         study.rope))


def source_sentences(gains: pd.DataFrame, label) -> list[str]:
    """One sentence per source: for which strategies it is better, worse, or inside the noise, over the reference.

    Args:
        gains: source_gains' table.
        label: arm -> its display label (LP-FT for lp_ft).
    """
    lines = []
    for source, rows in gains.groupby("source", sort=False):
        parts = []
        for verdict in ("better", "worse"):
            hits = rows[rows.verdict == verdict]
            if len(hits):
                parts.append(f"{verdict} for " + ", ".join(f"{label(r.arm)} ({r.gain:+.3f} [{r.low:+.3f}, "
                                                           f"{r.high:+.3f}])" for r in hits.itertuples()))
        rest = rows[~rows.verdict.isin(("better", "worse"))]
        if len(rest):
            parts.append("inside the noise for " + ", ".join(label(s) for s in rest.arm))
        lines.append(f"Starting from {source} instead of {rows.reference.iloc[0]}: {'; '.join(parts)}.")
    return lines
