"""The report's words: a headline paragraph and a methods paragraph, written from the results and the
configs of one study, so the report opens like the results section of a paper."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.config import metric_name
from ..core.constants import BASELINE
from ..study import decisions, stats
from ..study.analysis import Study, protocol_names
from ..training.strategies import strategy_label as label


def _values(series: pd.Series) -> str:
    """'1e-3' or '1e-3, 1e-4' from the distinct values of a config column."""
    values = sorted({v for v in series.dropna().tolist()}, key=str)
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values) or "?"


def _gain(row) -> str:
    only = " (test images only)" if getattr(row, "interval", "") == "test images only" else ""
    seeds = int(row.seeds)
    return f"{row.gain:+.3f} [{row.low:+.3f}, {row.high:+.3f}]{only}, {seeds} paired seed{'s' if seeds != 1 else ''}"


def _where(row, study: Study) -> str:
    several = study.done.protocol.nunique() > 1
    return f"{row.dataset} / {row.backbone}" + (f", {protocol_names(study.done)[row.protocol]}" if several else "")


def _seeds(done: pd.DataFrame) -> str:
    """'3 seeds each' or '1-3 seeds per case': counted per dataset x backbone, not over the folder."""
    per_case = done.groupby(["dataset", "backbone"]).seed.nunique()
    low, high = int(per_case.min()), int(per_case.max())
    return f"{high} seed{'s' if high != 1 else ''} each" if low == high else f"{low}-{high} seeds per case"


def class_balance(study: Study) -> str:
    """'chest_xray: NORMAL 234, PNEUMONIA 390 (1.7:1)' per dataset, from a run's data report."""
    parts = []
    for dataset, counts in study.test_counts().items():
        values = [n for n in counts.values() if n]
        ratio = f" ({max(values) / min(values):.1f}:1)" if values else ""
        parts.append(f"{dataset}: " + ", ".join(f"{c} {n}" for c, n in counts.items()) + ratio)
    return "; ".join(parts)


def headline(study: Study) -> str:
    """What was compared, on what, with how many seeds, and what wins where (with the intervals)."""
    done = study.done
    if done.empty:
        return "No finished runs yet."
    name = metric_name(study.metric)
    done, apart = _compared(done)
    if done.empty:
        return f"No comparison yet: {apart}."
    strategies = [s for s in done.arm.unique() if s != BASELINE]
    cases = done[["dataset", "backbone"]].drop_duplicates()
    gains = study.gains.dropna(subset=["gain"]) if len(study.gains) else study.gains
    one_seed = len(gains) and (gains.interval == "test images only").any()
    balance = class_balance(study)
    one = len(strategies) == 1
    text = (f"{len(strategies)} fine-tuning strateg{'y' if one else 'ies'} "
            f"({', '.join(label(s) for s in sorted(strategies))}) {'was' if one else 'were'} "
            f"compared with full fine-tuning (FT) on {len(cases)} dataset x backbone "
            f"case{'s' if len(cases) != 1 else ''} "
            f"({', '.join(f'{d} / {b}' for d, b in cases.itertuples(index=False))}), {_seeds(done)}, "
            f"{len(done)} finished runs, scored by test {name}" + (f" (test images per class: {balance})" if balance
                                                                   else "") +
            f". Gains in test {name} are paired over the seeds both arms ran, with 95% intervals that carry seed and "
            "test-image variance" + ("; a case with one seed has an interval of test-image variance only, marked so"
                                     if one_seed else "") +
            f"; verdicts are corrected with {stats.CORRECTIONS[study.correction]} over every comparison.")
    if gains.empty:
        return text + " No gain over FT could be computed (FT and another strategy must share seeds)."
    decided = gains[gains.verdict.isin(["better", "worse"])]
    if len(decided):
        parts = [f"{label(r.arm)} {r.verdict} than FT on {_where(r, study)} ({_gain(r)})"
                 for r in decided.sort_values("gain", ascending=False).itertuples()]
        text += " Beyond the noise: " + "; ".join(parts) + "."
    else:
        text += " No strategy differs from FT beyond the noise."
    text += " " + _extremes(gains, study)
    if gains.seeds.min() < stats.MIN_SEEDS:
        text += f" Cases with fewer than {stats.MIN_SEEDS} paired seeds get no verdict."
    decision = decisions.headline(decisions.study_which(study), protocols=protocol_names(study.done))
    return text + (f" {decision}" if decision else "") + (f" Not part of any comparison: {apart}." if apart else "")


def _compared(done: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The runs of cases that hold FT and another strategy, and a phrase for the rest (a pretraining
    run, a case without FT): they are listed apart, never counted in the headline."""
    arms = done.groupby(["protocol", "dataset", "backbone"]).arm.agg(lambda s: set(s))
    compared = arms[arms.map(lambda s: BASELINE in s and len(s) > 1)].index
    keys = pd.MultiIndex.from_frame(done[["protocol", "dataset", "backbone"]])
    inside = keys.isin(compared)
    rest = done[~inside]
    apart = "; ".join(f"{len(g)} run(s) of {d} / {b} ({', '.join(sorted(map(label, set(g.arm))))}: "
                      + ("no FT run to compare with" if BASELINE not in set(g.arm) else "FT alone") + ")"
                      for (d, b), g in rest.groupby(["dataset", "backbone"]))
    return done[inside], apart


def _extremes(gains: pd.DataFrame, study: Study) -> str:
    """The largest mean gain and the largest loss, in words that follow their signs."""
    up, down = gains[gains.gain > 0], gains[gains.gain < 0]
    best = up.loc[up.gain.idxmax()] if len(up) else None
    worst = down.loc[down.gain.idxmin()] if len(down) else None

    def said(row) -> str:
        return f"{label(row.arm)}'s on {_where(row, study)} ({_gain(row)})"
    if best is not None and worst is not None:
        return f"The largest mean gain is {said(best)}, the largest mean loss {said(worst)}."
    if best is not None:
        smallest = up.loc[up.gain.idxmin()]
        return f"Every mean gain is positive: the largest is {said(best)}, the smallest {said(smallest)}."
    if worst is not None:
        mildest = down.loc[down.gain.idxmax()]
        return f"No strategy gained on average: the largest mean loss is {said(worst)}, the smallest {said(mildest)}."
    return "Every mean gain is zero."


def methods(study: Study) -> str:
    """Data, networks, training protocol, tuning and selection, read from the runs' configs."""
    done = study.done
    if done.empty:
        return ""
    images = ""
    if {"train_images", "val_images", "test_images"} <= set(done):
        sizes = done.groupby("dataset")[["train_images", "val_images", "test_images"]].agg(["min", "max"])

        def span(row, split):
            low, high = row[(f"{split}_images", "min")], row[(f"{split}_images", "max")]
            return f"{low:.0f}" if low == high else f"{low:.0f}-{high:.0f}"

        images = " (" + "; ".join(f"{d}: {span(r, 'train')} / {span(r, 'val')} / {span(r, 'test')} train / validation "
                                  "/ test images" for d, r in sizes.iterrows()
                                  if np.isfinite(r.to_numpy(dtype=float)).all()) + ")"
    tuned = [f for f in ("lr", "lpft_lr_factor", "l2sp_alpha", "l1sp_alpha") if f in done and done[f].nunique() > 1]
    adapted = done.weights_channels.replace("", np.nan).dropna() if "weights_channels" in done else pd.Series()
    channels = (f" (weights_channels {_values(adapted)}: how a 1-channel checkpoint's first convolution is spread "
                "over R, G and B)" if len(adapted) else "")
    return (f"Data: {_values(done.dataset)}{images}. Networks: {_values(done.backbone)} from weights "
            f"{_values(done.weights)}{channels}, a new linear head. Training: {_values(done.optimizer)}, learning rate "
            f"{_values(done.lr)}, {_values(done.schedule)} schedule, batch {_values(done.batch_size)}, at most "
            f"{_values(done.max_epochs)} epochs with early stopping after {_values(done.patience)} epochs without "
            f"validation improvement, {_values(done.image_size)} px crops of images resized to "
            f"{_values(done.resize_size)} px, {'with' if done.augment.astype(bool).any() else 'no'} augmentation. "
            f"Seeds: {_values(done.seed)}. "
            + (f"Tuned per strategy on validation: {', '.join(tuned)}. " if tuned else "")
            + f"Each run kept its best epoch on validation {_values(done.select_metric)} and was scored on test "
            f"once; the setting compared is each strategy's best on validation {metric_name(study.metric)}.")
