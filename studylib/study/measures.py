"""Beyond accuracy: why strategies differ (feature change per block), how well calibrated they are,
and how they behave with few labels, across the strategies of one results folder.

All three read the runs that the accuracy comparison selected (best validation setting per protocol
x case x strategy x seed), so they describe the same networks as the gain table.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core import runfiles
from ..core.config import CALIBRATION_METRICS, improvement_sign
from ..core.constants import DEFAULT_METRIC, N_BOOT
from ..training.strategies import strategy_label
from .analysis import CASE, _as_text, _grouping_columns, gain_summary

FEW_LABEL_FIELDS = ("train_fraction", "train_per_class")
CALIBRATION_SHOWN = ("ece", "brier", "nll")  # the comparison's metrics (ece_mass stays in metrics.json)


# --- feature change ----------------------------------------------------------------------------
def read_representations(best: pd.DataFrame) -> pd.DataFrame:
    """The selected network's rows of every run's representations.csv, with the run's keys (runs without one
    are left out: `missing_note` names them)."""
    frames = []
    for run in best.itertuples():
        path = Path(run.path) / runfiles.REPRESENTATIONS
        if not path.is_file():
            continue
        try:
            rows = pd.read_csv(path)
            rows = rows.loc[rows.selected.astype(bool), ["block", "cka", "rel_dist_init"]]
            rows = rows.astype({"cka": float, "rel_dist_init": float})
        except (ValueError, KeyError, AttributeError, pd.errors.ParserError, UnicodeDecodeError):
            continue  # a damaged file: that run has no feature change, like one without the file
        frames.append(rows.assign(protocol=run.protocol, dataset=run.dataset, backbone=run.backbone,
                                  arm=run.arm, seed=run.seed, order=range(len(rows))))
    columns = ["protocol"] + CASE + ["arm", "seed", "block", "order", "cka", "rel_dist_init"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def missing_note(best: pd.DataFrame) -> str:
    """A sentence naming selected runs without representations.csv ('' when every run has one)."""
    missing = [Path(p).name for p in best.path if not (Path(p) / runfiles.REPRESENTATIONS).is_file()] \
        if len(best) else []
    if not missing:
        return ""
    return (f"{len(missing)} of {len(best)} selected runs have no representations.csv (repr_images=0, or made by an "
            f"older studylib; e.g. {', '.join(missing[:3])}); feature change averages over the others. Rerun them "
            "with --overwrite to measure it.")


def feature_change(best: pd.DataFrame) -> pd.DataFrame:
    """Per protocol x case x strategy x block (input to output): CKA to the starting network and the
    relative weight distance, mean and sd over seeds."""
    rows = read_representations(best)
    keys = ["protocol"] + CASE + ["arm", "block"]
    if rows.empty:
        return pd.DataFrame(columns=keys + ["order", "cka", "cka_sd", "rel_dist_init", "seeds"])
    table = rows.groupby(keys, sort=False).agg(order=("order", "first"), cka=("cka", "mean"), cka_sd=("cka", "std"),
                                               rel_dist_init=("rel_dist_init", "mean"), seeds=("seed", "nunique"))
    return table.reset_index().sort_values(["protocol"] + CASE + ["arm", "order"], kind="stable")


def change_vs_gain(change: pd.DataFrame, gains: pd.DataFrame) -> pd.DataFrame:
    """Per protocol x case x strategy: CKA of the top backbone block and averaged over blocks, beside the
    paired gain over FT (FT itself at 0), to relate how much the features moved to what it bought."""
    keys = ["protocol"] + CASE + ["arm"]
    if change.empty:
        return pd.DataFrame(columns=keys + ["top_block", "cka_top", "cka_mean", "gain", "verdict"])
    ordered = change.sort_values("order")
    top = ordered.groupby(keys, sort=False).tail(1).set_index(keys)  # the top block's row, even when its CKA is NaN
    per = ordered.groupby(keys, sort=False).agg(cka_mean=("cka", "mean")).join(
        top[["block", "cka"]].rename(columns={"block": "top_block", "cka": "cka_top"})).reset_index()
    gain = gains[keys + ["gain", "verdict"]] if len(gains) else pd.DataFrame(columns=keys + ["gain", "verdict"])
    out = per.merge(gain, on=keys, how="left")
    baselines = set(zip(gains.protocol, gains.baseline)) if len(gains) else set()
    is_base = [(p, s) in baselines for p, s in zip(out.protocol, out.arm)]
    out.loc[is_base, ["gain", "verdict"]] = [0.0, "(baseline)"]
    return out.sort_values(["protocol"] + CASE + ["cka_top"], kind="stable").reset_index(drop=True)


def change_correlation(relation: pd.DataFrame) -> pd.DataFrame:
    """Per protocol x case: Spearman correlation across strategies of top-block CKA with the gain over FT
    (descriptive: one point per strategy)."""
    rows = []
    for keys, group in relation.dropna(subset=["cka_top", "gain"]).groupby(["protocol"] + CASE):
        varies = len(group) >= 3 and group.cka_top.nunique() > 1 and group.gain.nunique() > 1
        rho = _scipy_stats().spearmanr(group.cka_top, group.gain).statistic if varies else np.nan  # else undefined
        rows.append(dict(zip(["protocol"] + CASE, keys), strategies=len(group), spearman=float(rho)))
    return pd.DataFrame(rows, columns=["protocol"] + CASE + ["strategies", "spearman"])


# --- cost --------------------------------------------------------------------------------------
COSTS = {"trainable_params": "trainable parameters", "seconds_per_epoch": "seconds per epoch",
         "peak_memory_mb": "peak memory (MB)"}


def frontier(best: pd.DataFrame, metric: str = DEFAULT_METRIC) -> pd.DataFrame:
    """Per protocol x case x strategy: the mean test metric over seeds and the median of each cost (trainable
    parameters at most, wall seconds per epoch run, peak memory), and for each cost whether the strategy is on
    the Pareto frontier of its case: no other strategy scores at least as well for less of that cost (or better
    for as little)."""
    keys = ["protocol"] + CASE + ["arm"]
    if best.empty:
        return pd.DataFrame(columns=keys + ["mean"] + list(COSTS) + [f"frontier_{c}" for c in COSTS])
    frame = best.assign(seconds_per_epoch=pd.to_numeric(best.wall_seconds, errors="coerce")
                        / pd.to_numeric(best.epochs_run, errors="coerce").where(lambda e: e > 0))
    sign = improvement_sign(metric)
    table = frame.groupby(keys).agg(mean=(f"test_{metric}", "mean"),
                                    **{c: (c, "median") for c in COSTS if c in frame}).reset_index()
    for cost in COSTS:
        if cost not in table:
            table[cost] = np.nan
        table[f"frontier_{cost}"] = False
        for _, case in table.groupby(["protocol"] + CASE):
            for i, row in case.iterrows():
                if pd.isna(row[cost]) or pd.isna(row["mean"]):
                    continue
                others = case.drop(index=i).dropna(subset=[cost, "mean"])
                as_good = sign * others["mean"] >= sign * row["mean"]
                cheaper = others[cost] <= row[cost]
                strictly = (sign * others["mean"] > sign * row["mean"]) | (others[cost] < row[cost])
                table.loc[i, f"frontier_{cost}"] = not (as_good & cheaper & strictly).any()
    return table


# --- calibration -------------------------------------------------------------------------------
def calibration_table(best: pd.DataFrame) -> pd.DataFrame:
    """Mean (and sd) over seeds of each calibration metric, per protocol x case x strategy."""
    columns = [f"test_{m}" for m in CALIBRATION_METRICS if f"test_{m}" in best]
    if best.empty or not columns:
        return pd.DataFrame(columns=["protocol"] + CASE + ["arm"])
    table = best.groupby(["protocol"] + CASE + ["arm"])[columns].agg(["mean", "std"])
    table.columns = [f"{c.removeprefix('test_')}_{s}".replace("_mean", "") for c, s in table.columns]
    return table.reset_index()


def calibration_gains(best: pd.DataFrame, n_boot: int = N_BOOT, correction: str = "holm") -> pd.DataFrame:
    """Paired improvement over FT of ECE, Brier score and NLL (FT's minus the strategy's: positive is
    better calibrated), with the accuracy comparison's interval; each metric is its own family."""
    present = [m for m in CALIBRATION_SHOWN if f"test_{m}" in best]
    frames = [gain_summary(best, m, n_boot=n_boot, correction=correction).assign(metric=m) for m in present]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["metric"])


# --- few labels --------------------------------------------------------------------------------
def efficiency(best: pd.DataFrame, metric: str = DEFAULT_METRIC) -> pd.DataFrame:
    """Per setting (every held-fixed field but the labelled share) x case x strategy x labelled amount:
    mean test score over seeds with a 95% t-interval over seeds, and the mean number of training images.
    Runs subsampled by share (`train_fraction`, full data included) and by count (`train_per_class`) are
    two axes, never mixed on one. Empty unless some setting has at least two labelled amounts."""
    columns = ["setting"] + CASE + ["arm", "axis", "labelled", "mean", "low", "high", "seeds", "train_images",
                                    "protocols"]
    if best.empty or not any(f in best for f in FEW_LABEL_FIELDS):
        return pd.DataFrame(columns=columns)
    per_class = pd.to_numeric(best.get("train_per_class", 0), errors="coerce").fillna(0)
    share = pd.to_numeric(best.get("train_fraction", 1.0), errors="coerce").fillna(1.0)
    frame = best.assign(setting=_setting(best), axis=np.where(per_class > 0, "train_per_class", "train_fraction"),
                        labelled=np.where(per_class > 0, per_class, share),
                        train_images=pd.to_numeric(best.get("train_images", np.nan), errors="coerce"))
    varied = frame.groupby(["setting", "axis"]).labelled.transform("nunique") >= 2
    rows = []
    for keys, runs in frame[varied].groupby(["setting"] + CASE + ["arm", "axis", "labelled"]):
        scores = runs[f"test_{metric}"].astype(float).dropna()
        mean, k = float(scores.mean()), len(scores)
        half = float(_scipy_stats().t.ppf(0.975, k - 1) * scores.std() / np.sqrt(k)) if k >= 2 else np.nan
        rows.append(dict(zip(["setting"] + CASE + ["arm", "axis", "labelled"], keys), mean=mean,
                         low=mean - half, high=mean + half, seeds=k, train_images=runs.train_images.mean(),
                         protocols=",".join(sorted(runs.protocol.unique()))))
    return pd.DataFrame(rows, columns=columns)


def _setting(best: pd.DataFrame) -> pd.Series:
    columns = [c for c in _grouping_columns(best) if c not in FEW_LABEL_FIELDS]
    text = _as_text(best[columns]).agg("|".join, axis=1) if columns else pd.Series("", index=best.index)
    return text.map({key: f"S{i + 1}" for i, key in enumerate(sorted(text.unique()))})


def ranking_changes(table: pd.DataFrame, metric: str = DEFAULT_METRIC) -> pd.DataFrame:
    """Per setting x case x axis x labelled amount below the largest: each strategy's rank (1 = best mean)
    there and with the most labels, both among the strategies present at both (a missing run never
    shifts the others)."""
    keys = ["setting"] + CASE + ["axis"]
    columns = keys + ["labelled", "arm", "rank", "rank_full", "moved", "absent"]
    rows = []
    for group_keys, group in table.groupby(keys):
        top = group.labelled.max()
        full = group[group.labelled == top].set_index("arm")["mean"]
        for amount, at in group[group.labelled < top].groupby("labelled"):
            here = at.set_index("arm")["mean"]
            common = sorted(set(here.index) & set(full.index))
            absent = ", ".join(sorted(set(here.index) ^ set(full.index)))
            ascending = improvement_sign(metric) < 0
            rank = here[common].rank(ascending=ascending, method="min")
            rank_full = full[common].rank(ascending=ascending, method="min")
            rows += [dict(zip(keys, group_keys), labelled=amount, arm=s, rank=rank[s], rank_full=rank_full[s],
                          moved=rank[s] - rank_full[s], absent=absent) for s in common]
    return pd.DataFrame(rows, columns=columns)


def ranking_sentences(table: pd.DataFrame, metric: str = DEFAULT_METRIC,
                      gains: pd.DataFrame | None = None) -> list[str]:
    """Plain sentences: at each labelled amount below the largest, which strategies change place (by mean
    over seeds), and whether any gain over FT at that amount is beyond the noise (its protocol group's
    corrected verdicts, when `gains` and the protocol column are given)."""
    ranks = ranking_changes(table, metric)
    several = ranks.setting.nunique() > 1
    sentences = []
    for keys, group in ranks.groupby(["setting"] + CASE + ["axis", "labelled"]):
        setting, dataset, backbone, axis, amount = keys
        top = table[(table.setting == setting) & (table.dataset == dataset) & (table.backbone == backbone)
                    & (table.axis == axis)].labelled.max()
        where = f"{dataset} / {backbone}" + (f" ({setting})" if several else "")
        moved = group[group.moved != 0].sort_values("rank")
        if moved.empty:
            order = group.sort_values("rank").arm.map(strategy_label)
            text = f"at {_share(amount, axis)} the ranking is the one with {_share(top, axis)} ({' > '.join(order)})"
        else:
            changes = ", ".join(f"{strategy_label(r.arm)} {int(r.rank_full)} -> {int(r.rank)}"
                                for r in moved.itertuples())
            text = (f"at {_share(amount, axis)} the ranking changes from the one with {_share(top, axis)} "
                    f"({changes}; ranks of the mean over seeds)")
        absent = group.absent.iloc[0]
        sentences.append(f"{where}: {text}" + (f"; not ranked, missing at one of the two: {absent}" if absent else "")
                         + _noise_note(table, gains, keys) + ".")
    return sentences


def _noise_note(table: pd.DataFrame, gains: pd.DataFrame | None, keys: tuple) -> str:
    """Whether any gain over FT at this labelled amount has a verdict, from that amount's protocol group."""
    if gains is None or gains.empty or "protocols" not in table:
        return ""
    setting, dataset, backbone, axis, amount = keys
    rows = table[(table.setting == setting) & (table.dataset == dataset) & (table.backbone == backbone)
                 & (table.axis == axis) & (table.labelled == amount)]
    protocols = set(",".join(rows.protocols).split(","))
    here = gains[gains.protocol.isin(protocols) & (gains.dataset == dataset) & (gains.backbone == backbone)]
    decided = here[here.verdict.isin(["better", "worse"])]
    if decided.empty:
        return "; no gain over FT at this amount is beyond the noise"
    return "; beyond the noise at this amount: " + ", ".join(f"{strategy_label(r.arm)} {r.verdict}"
                                                             for r in decided.itertuples())


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


def _scipy_stats():
    from scipy import stats  # on first use: scipy.stats costs half a second at every start
    return stats
