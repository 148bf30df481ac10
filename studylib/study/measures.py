"""Beyond accuracy: why strategies differ (feature change per block), how well calibrated they are,
and how they behave with few labels, across the strategies of one results folder.

All three read the runs that the accuracy comparison selected (best validation setting per protocol
x case x strategy x seed), so they describe the same networks as the gain table.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from ..core.config import CALIBRATION_METRICS
from ..training.strategies import strategy_label
from .analysis import CASE, _as_text, _grouping_columns, gain_summary

FEW_LABEL_FIELDS = ("train_fraction", "train_per_class")
CALIBRATION_SHOWN = ("ece", "brier", "nll")  # the comparison's metrics (ece_mass stays in metrics.json)


# --- feature change ----------------------------------------------------------------------------
def read_representations(best: pd.DataFrame) -> pd.DataFrame:
    """The selected network's rows of every run's representations.csv, with the run's keys."""
    frames = []
    for run in best.itertuples():
        path = Path(run.path) / "representations.csv"
        if not path.is_file():
            continue
        rows = pd.read_csv(path)
        rows = rows[rows.selected.astype(bool)]
        frames.append(rows.assign(protocol=run.protocol, dataset=run.dataset, backbone=run.backbone,
                                  strategy=run.strategy, seed=run.seed, order=range(len(rows))))
    columns = ["protocol"] + CASE + ["strategy", "seed", "block", "order", "cka", "rel_dist_init"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def feature_change(best: pd.DataFrame) -> pd.DataFrame:
    """Per protocol x case x strategy x block (input to output): CKA to the starting network and the
    relative weight distance, mean and sd over seeds."""
    rows = read_representations(best)
    keys = ["protocol"] + CASE + ["strategy", "block"]
    if rows.empty:
        return pd.DataFrame(columns=keys + ["order", "cka", "cka_sd", "rel_dist_init", "seeds"])
    table = rows.groupby(keys, sort=False).agg(order=("order", "first"), cka=("cka", "mean"), cka_sd=("cka", "std"),
                                               rel_dist_init=("rel_dist_init", "mean"), seeds=("seed", "nunique"))
    return table.reset_index().sort_values(["protocol"] + CASE + ["strategy", "order"], kind="stable")


def change_vs_gain(change: pd.DataFrame, gains: pd.DataFrame) -> pd.DataFrame:
    """Per protocol x case x strategy: CKA of the top backbone block and averaged over blocks, beside the
    paired gain over FT (FT itself at 0), to relate how much the features moved to what it bought."""
    keys = ["protocol"] + CASE + ["strategy"]
    if change.empty:
        return pd.DataFrame(columns=keys + ["top_block", "cka_top", "cka_mean", "gain", "verdict"])
    ordered = change.sort_values("order")
    per = ordered.groupby(keys, sort=False).agg(top_block=("block", "last"), cka_top=("cka", "last"),
                                                cka_mean=("cka", "mean")).reset_index()
    gain = gains[keys + ["gain", "verdict"]] if len(gains) else pd.DataFrame(columns=keys + ["gain", "verdict"])
    out = per.merge(gain, on=keys, how="left")
    is_base = ~out.strategy.isin(gains.strategy) if len(gains) else out.strategy == "ft"
    out.loc[is_base, ["gain", "verdict"]] = [0.0, "(baseline)"]
    return out.sort_values(["protocol"] + CASE + ["cka_top"], kind="stable").reset_index(drop=True)


def change_correlation(relation: pd.DataFrame) -> pd.DataFrame:
    """Per protocol x case: Spearman correlation across strategies of top-block CKA with the gain over FT
    (descriptive: one point per strategy)."""
    rows = []
    for keys, group in relation.dropna(subset=["cka_top", "gain"]).groupby(["protocol"] + CASE):
        rho = scipy_stats.spearmanr(group.cka_top, group.gain).statistic if len(group) >= 3 else np.nan
        rows.append(dict(zip(["protocol"] + CASE, keys), strategies=len(group), spearman=float(rho)))
    return pd.DataFrame(rows, columns=["protocol"] + CASE + ["strategies", "spearman"])


# --- calibration -------------------------------------------------------------------------------
def calibration_table(best: pd.DataFrame) -> pd.DataFrame:
    """Mean (and sd) over seeds of each calibration metric, per protocol x case x strategy."""
    columns = [f"test_{m}" for m in CALIBRATION_METRICS if f"test_{m}" in best]
    if best.empty or not columns:
        return pd.DataFrame(columns=["protocol"] + CASE + ["strategy"])
    table = best.groupby(["protocol"] + CASE + ["strategy"])[columns].agg(["mean", "std"])
    table.columns = [f"{c.removeprefix('test_')}_{s}".replace("_mean", "") for c, s in table.columns]
    return table.reset_index()


def calibration_gains(best: pd.DataFrame, n_boot: int = 300, correction: str = "holm") -> pd.DataFrame:
    """Paired improvement over FT of ECE, Brier score and NLL (FT's minus the strategy's: positive is
    better calibrated), with the accuracy comparison's interval; each metric is its own family."""
    present = [m for m in CALIBRATION_SHOWN if f"test_{m}" in best]
    frames = [gain_summary(best, m, n_boot=n_boot, correction=correction).assign(metric=m) for m in present]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["metric"])


# --- few labels --------------------------------------------------------------------------------
def labelled_axis(done: pd.DataFrame) -> str:
    """The few-labels field the runs vary: train_per_class (k-shot) or train_fraction."""
    per_class = pd.to_numeric(done.get("train_per_class", pd.Series(0, index=done.index)), errors="coerce").fillna(0)
    return "train_per_class" if (per_class > 0).any() else "train_fraction"


def efficiency(best: pd.DataFrame, metric: str = "balanced_accuracy") -> pd.DataFrame:
    """Per setting (every held-fixed field but the labelled share) x case x strategy x labelled share:
    mean test score over seeds with a 95% t-interval over seeds. Empty unless the share varies."""
    columns = ["setting"] + CASE + ["strategy", "labelled", "mean", "low", "high", "seeds"]
    if best.empty or not any(f in best for f in FEW_LABEL_FIELDS):
        return pd.DataFrame(columns=columns)
    axis = labelled_axis(best)
    frame = best.assign(labelled=pd.to_numeric(best[axis], errors="coerce"), setting=_setting(best))
    frame = frame[frame.labelled > 0] if axis == "train_per_class" else frame
    if frame.groupby("setting").labelled.nunique().max() < 2:
        return pd.DataFrame(columns=columns)
    rows = []
    for keys, runs in frame.groupby(["setting"] + CASE + ["strategy", "labelled"]):
        scores = runs[f"test_{metric}"].astype(float).dropna()
        mean, k = float(scores.mean()), len(scores)
        half = float(scipy_stats.t.ppf(0.975, k - 1) * scores.std() / np.sqrt(k)) if k >= 2 else np.nan
        rows.append(dict(zip(["setting"] + CASE + ["strategy", "labelled"], keys), mean=mean, low=mean - half,
                         high=mean + half, seeds=k))
    return pd.DataFrame(rows, columns=columns).assign(axis=axis)


def _setting(best: pd.DataFrame) -> pd.Series:
    columns = [c for c in _grouping_columns(best) if c not in FEW_LABEL_FIELDS]
    text = _as_text(best[columns]).agg("|".join, axis=1) if columns else pd.Series("", index=best.index)
    return text.map({key: f"S{i + 1}" for i, key in enumerate(sorted(text.unique()))})


def ranking_changes(table: pd.DataFrame, improvement_sign: int = 1) -> pd.DataFrame:
    """Per setting x case x labelled share: each strategy's rank (1 = best mean) and its rank with the most
    labels, so where the ranking of strategies changes can be read (and said) directly."""
    if table.empty:
        return pd.DataFrame(columns=["setting"] + CASE + ["labelled", "strategy", "rank", "rank_full", "moved"])
    ranks = table.assign(rank=table.groupby(["setting"] + CASE + ["labelled"])["mean"]
                         .rank(ascending=improvement_sign < 0, method="min"))
    full = ranks.loc[ranks.groupby(["setting"] + CASE + ["strategy"]).labelled.idxmax()]
    ranks = ranks.merge(full[["setting"] + CASE + ["strategy", "rank"]].rename(columns={"rank": "rank_full"}),
                        on=["setting"] + CASE + ["strategy"])
    ranks["moved"] = ranks["rank"] - ranks["rank_full"]
    return ranks[["setting"] + CASE + ["labelled", "strategy", "rank", "rank_full", "moved"]]


def ranking_sentences(table: pd.DataFrame, improvement_sign: int = 1) -> list[str]:
    """Plain sentences: at each share below the largest, which strategies change place."""
    ranks = ranking_changes(table, improvement_sign)
    sentences = []
    for keys, group in ranks.groupby(["setting"] + CASE):
        top = group.labelled.max()
        order_full = group[group.labelled == top].sort_values("rank").strategy.tolist()
        for share, at in group[group.labelled < top].groupby("labelled"):
            moved = at[at.moved != 0].sort_values("rank")
            where = f"{keys[1]} / {keys[2]}" + (f" ({keys[0]})" if ranks.setting.nunique() > 1 else "")
            label = _share(share, table.axis.iloc[0])
            if moved.empty:
                sentences.append(f"{where}: at {label} the ranking is the same as with {_share(top, table.axis.iloc[0])} "
                                 f"({' > '.join(map(strategy_label, order_full))}).")
                continue
            changes = ", ".join(f"{strategy_label(r.strategy)} {int(r.rank_full)} -> {int(r.rank)}"
                                for r in moved.itertuples())
            sentences.append(f"{where}: at {label} the ranking changes from the one with "
                             f"{_share(top, table.axis.iloc[0])} ({changes}; rank by mean over seeds).")
    return sentences


def _share(value: float, axis: str) -> str:
    return f"{int(value)} images per class" if axis == "train_per_class" else f"{value:.0%} of the labels"


# --- one study's measurements, computed once --------------------------------------------------
def study_change(study) -> pd.DataFrame:
    return study.cached("feature_change", lambda: feature_change(study.best))


def study_relation(study) -> pd.DataFrame:
    return study.cached("change_vs_gain", lambda: change_vs_gain(study_change(study), study.gains))


def study_calibration_gains(study) -> pd.DataFrame:
    return study.cached("calibration_gains", lambda: calibration_gains(study.best, study.n_boot, study.correction))


def study_efficiency(study) -> pd.DataFrame:
    return study.cached("efficiency", lambda: efficiency(study.best, study.metric))
