"""The report's words: a headline paragraph and a methods paragraph, written from the results and the
configs of one study, so the report opens like the results section of a paper."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..study import stats
from ..study.analysis import Study, protocol_names
from ..training.strategies import strategy_label as label


def _values(series: pd.Series) -> str:
    """'1e-3' or '1e-3, 1e-4' from the distinct values of a config column."""
    values = sorted({v for v in series.dropna().tolist()}, key=str)
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values) or "?"


def _gain(row) -> str:
    return f"{row.gain:+.3f} [{row.low:+.3f}, {row.high:+.3f}], {int(row.seeds)} paired seeds"


def _where(row, study: Study) -> str:
    several = study.done.protocol.nunique() > 1
    return f"{row.dataset} / {row.backbone}" + (f", {protocol_names(study.done)[row.protocol]}" if several else "")


def headline(study: Study) -> str:
    """What was compared, on what, with how many seeds, and what wins where (with the intervals)."""
    done = study.done
    if done.empty:
        return "No finished runs yet."
    strategies = [s for s in done.strategy.unique() if s != "ft"]
    cases = done[["dataset", "backbone"]].drop_duplicates()
    seeds = done.seed.nunique()
    text = (f"{len(strategies)} fine-tuning strategies ({', '.join(label(s) for s in sorted(strategies))}) were "
            f"compared with full fine-tuning (FT) on {len(cases)} dataset x backbone case(s) "
            f"({', '.join(f'{d} / {b}' for d, b in cases.itertuples(index=False))}), {seeds} seed(s) each, "
            f"{len(done)} finished runs. Gains are paired over the seeds both arms ran, with 95% intervals that "
            f"carry seed and test-image variance; verdicts are corrected with {stats.CORRECTIONS[study.correction]} "
            f"over every comparison.")
    gains = study.gains.dropna(subset=["gain"]) if len(study.gains) else study.gains
    if gains.empty:
        return text + " No gain over FT could be computed (FT and another strategy must share seeds)."
    decided = gains[gains.verdict.isin(["better", "worse"])]
    if len(decided):
        parts = [f"{label(r.strategy)} {r.verdict} than FT on {_where(r, study)} ({_gain(r)})"
                 for r in decided.sort_values("gain", ascending=False).itertuples()]
        text += " Beyond the noise: " + "; ".join(parts) + "."
    else:
        text += " No strategy differs from FT beyond the noise."
    best, worst = gains.loc[gains.gain.idxmax()], gains.loc[gains.gain.idxmin()]
    text += (f" The largest mean gain is {label(best.strategy)}'s on {_where(best, study)} ({_gain(best)}), the "
             f"largest loss {label(worst.strategy)}'s on {_where(worst, study)} ({_gain(worst)}).")
    if gains.seeds.min() < stats.MIN_SEEDS:
        text += f" Cases with fewer than {stats.MIN_SEEDS} paired seeds get no verdict."
    return text


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
    return (f"Data: {_values(done.dataset)}{images}. Networks: {_values(done.backbone)} from weights "
            f"{_values(done.weights)}, a new linear head. Training: {_values(done.optimizer)}, learning rate "
            f"{_values(done.lr)}, {_values(done.schedule)} schedule, batch {_values(done.batch_size)}, at most "
            f"{_values(done.max_epochs)} epochs with early stopping after {_values(done.patience)} epochs without "
            f"validation improvement, {_values(done.image_size)} px crops of images resized to "
            f"{_values(done.resize_size)} px, {'with' if done.augment.astype(bool).any() else 'no'} augmentation. Seeds: {_values(done.seed)}. "
            + (f"Tuned per strategy on validation: {', '.join(tuned)}. " if tuned else "")
            + f"Each run kept its best epoch on validation {_values(done.select_metric)} and was scored on test "
            f"once; the setting compared is each strategy's best on validation {study.metric.replace('_', ' ')}.")
