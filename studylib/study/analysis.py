"""From a grid's run folders to the study's comparison: best setting per strategy, gains over FT,
paired bootstrap intervals, win/tie/loss counts and mean ranks.

Selection uses validation only: for every dataset x backbone x strategy x seed, the
hyper-parameter setting (learning rate, strategy parameters) with the best validation metric
is kept; test scores never take part in that choice.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.config import fields_with_role
from .results import collect

CASE = ["dataset", "backbone"]
# Fields that define the protocol: runs that differ here are not comparable and are grouped apart.
PROTOCOL_FIELDS = fields_with_role("protocol")


class AnalysisWarning(UserWarning):
    """Something in the results folder limits the comparison (shown, never hidden)."""


def load_results(root: str | Path, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Finished runs below `root` (or in `table`, collected from it) with a `protocol` column;
    warns about what is missing or mixed."""
    table = collect(root) if table is None else table
    if table.empty:
        warnings.warn(f"no run folders below {root}; run a grid first (python -m studylib grid ...)", AnalysisWarning)
        return table
    unfinished = table[table.status != "finished"]
    if len(unfinished):
        warnings.warn(f"{len(unfinished)} of {len(table)} runs are not finished and are left out: "
                      f"{', '.join(unfinished.run.head(5))}", AnalysisWarning)
    done = table[table.status == "finished"].copy()
    if done.empty:  # nothing to group (a row-wise agg of no rows is not a Series)
        return done.assign(protocol=pd.Series(dtype=str))
    present = [f for f in PROTOCOL_FIELDS if f in done]
    done["protocol"] = done[present].astype(str).agg("|".join, axis=1).map(_protocol_names(done, present))
    if done.protocol.nunique() > 1:
        warnings.warn(f"runs from {done.protocol.nunique()} different protocols are mixed in {root}; they are "
                      "grouped separately (column 'protocol')", AnalysisWarning)
    return done


def _protocol_names(done: pd.DataFrame, fields: list[str]) -> dict[str, str]:
    keys = done[fields].astype(str).agg("|".join, axis=1).unique()
    return {key: f"P{i + 1}" for i, key in enumerate(sorted(keys))}


def select_best(done: pd.DataFrame, metric: str = "balanced_accuracy") -> pd.DataFrame:
    """One row per protocol x dataset x backbone x strategy x seed: the best *validation* setting."""
    if done.empty:
        return done
    keys = ["protocol"] + CASE + ["strategy", "seed"]
    ranked = done.sort_values(f"val_{metric}", ascending=metric == "loss", kind="stable")
    return ranked.groupby(keys, sort=True).head(1).sort_values(keys).reset_index(drop=True)


def accuracy_table(best: pd.DataFrame, metric: str = "balanced_accuracy") -> pd.DataFrame:
    """Mean and standard deviation over seeds of the test metric, per case x strategy."""
    column = f"test_{metric}"
    return (best.groupby(["protocol"] + CASE + ["strategy"])[column].agg(["mean", "std", "count"]).reset_index())


def paired_gains(best: pd.DataFrame, metric: str = "balanced_accuracy", baseline: str = "ft") -> pd.DataFrame:
    """Per seed: test metric of each strategy minus the baseline's on the same case and seed.

    A case without a baseline run gets no gain (NaN), never a made-up one.
    """
    column = f"test_{metric}"
    base = best[best.strategy == baseline].set_index(["protocol"] + CASE + ["seed"])[column]
    rows = best[best.strategy != baseline].copy()
    index = pd.MultiIndex.from_frame(rows[["protocol"] + CASE + ["seed"]])
    rows["baseline"] = base.reindex(index).to_numpy()
    rows["gain"] = rows[column] - rows["baseline"]
    return rows[["protocol"] + CASE + ["strategy", "seed", column, "baseline", "gain", "path"]]


def bootstrap_gain(strategy_runs: list[Path], baseline_runs: list[Path], n_boot: int = 1000,
                   seed: int = 0) -> tuple[float, float, float]:
    """Mean paired gain in test balanced accuracy over seeds and its 95% bootstrap interval.

    Each seed's strategy and baseline runs share one test split, so test images are resampled
    jointly (paired), within each seed, and the per-seed differences are averaged.
    """
    rng = np.random.default_rng(seed)
    point, draws = [], np.zeros(n_boot)
    for run_a, run_b in zip(strategy_runs, baseline_runs):
        a, b = _predictions(run_a), _predictions(run_b)
        if not a.id.equals(b.id):
            raise ValueError(f"{run_a} and {run_b} were tested on different images; compare runs of one split")
        labels = a.label.to_numpy()
        correct_a, correct_b = (a.pred == a.label).to_numpy(), (b.pred == b.label).to_numpy()
        everything = np.arange(len(labels))[None, :]
        point.append(_bacc(labels, correct_a, everything)[0] - _bacc(labels, correct_b, everything)[0])
        index = rng.integers(0, len(labels), (n_boot, len(labels)))
        draws += _bacc(labels, correct_a, index) - _bacc(labels, correct_b, index)
    draws /= len(point)
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(np.mean(point)), float(low), float(high)


def _predictions(run: Path) -> pd.DataFrame:
    return pd.read_csv(Path(run) / "predictions.csv").sort_values("id").reset_index(drop=True)


def _bacc(labels: np.ndarray, correct: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Balanced accuracy of each row of resampled indices (classes absent from a draw are skipped)."""
    drawn_labels, drawn_correct = labels[index], correct[index]
    recalls = []
    for c in np.unique(labels):
        member = drawn_labels == c
        with np.errstate(invalid="ignore", divide="ignore"):
            recalls.append((member & drawn_correct).sum(1) / member.sum(1))
    return np.nanmean(np.stack(recalls), axis=0)


def gain_summary(best: pd.DataFrame, metric: str = "balanced_accuracy", baseline: str = "ft",
                 n_boot: int = 1000) -> pd.DataFrame:
    """Per case x strategy: mean paired gain over the baseline, its 95% CI, and a verdict.

    The interval comes from the paired bootstrap over test images (balanced accuracy); for other
    metrics it is computed over seeds only (t-free percentile of per-seed gains).
    """
    gains = paired_gains(best, metric, baseline)
    base_paths = best[best.strategy == baseline].set_index(["protocol"] + CASE + ["seed"]).path
    rows = []
    for keys, group in gains.groupby(["protocol"] + CASE + ["strategy"]):
        row = dict(zip(["protocol"] + CASE + ["strategy"], keys), seeds=len(group))
        valid = group.dropna(subset=["gain"])
        if valid.empty:
            rows.append({**row, "gain": np.nan, "low": np.nan, "high": np.nan, "verdict": "no baseline"})
            continue
        if metric == "balanced_accuracy":
            baseline_runs = [base_paths[(keys[0], keys[1], keys[2], s)] for s in valid.seed]
            gain, low, high = bootstrap_gain(list(valid.path), baseline_runs, n_boot)
        else:
            gain, (low, high) = valid.gain.mean(), np.percentile(valid.gain, [2.5, 97.5])
        rows.append({**row, "gain": gain, "low": low, "high": high, "verdict": _verdict(low, high)})
    return pd.DataFrame(rows)


def _verdict(low: float, high: float) -> str:
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "inside the noise"


def win_tie_loss(summary: pd.DataFrame) -> pd.DataFrame:
    """Per strategy: in how many dataset x backbone cases it beats / ties / loses to the baseline."""
    if summary.empty:
        return summary
    counts = summary.pivot_table(index="strategy", columns="verdict", values="gain", aggfunc="size", fill_value=0)
    for column in ("better", "inside the noise", "worse", "no baseline"):
        if column not in counts:
            counts[column] = 0
    counts = counts[["better", "inside the noise", "worse", "no baseline"]]
    counts["cases"] = counts.sum(axis=1)
    counts["sentence"] = [f"{s} beats FT in {r.better} of {r.cases - r['no baseline']} cases "
                          f"(loses {r.worse}, {r['inside the noise']} inside the noise)"
                          for s, r in counts.iterrows()]
    return counts


def mean_ranks(table: pd.DataFrame) -> pd.Series:
    """Average rank of each strategy (1 = best mean test metric) over dataset x backbone cases."""
    if table.empty:
        return pd.Series(dtype=float)
    ranks = table.groupby(["protocol"] + CASE)["mean"].rank(ascending=False, method="average")
    return ranks.groupby(table.strategy).mean().sort_values().rename("mean rank")


@dataclass
class Study:
    """Everything the analysis derives from one results folder."""

    root: Path
    metric: str = "balanced_accuracy"
    n_boot: int = 1000
    runs: pd.DataFrame | None = None  # collect(root), when the caller already has it
    done: pd.DataFrame = field(init=False)
    best: pd.DataFrame = field(init=False)
    notes: list[str] = field(init=False, default_factory=list)

    def __post_init__(self):
        self.root = Path(self.root)
        self.runs = collect(self.root) if self.runs is None else self.runs
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", AnalysisWarning)
            self.done = load_results(self.root, self.runs)
        self.notes = [str(w.message) for w in caught if issubclass(w.category, AnalysisWarning)]
        self.best = select_best(self.done, self.metric)

    @property
    def accuracy(self) -> pd.DataFrame:
        return accuracy_table(self.best, self.metric)

    @property
    def gains(self) -> pd.DataFrame:
        if not hasattr(self, "_gains"):
            self._gains = gain_summary(self.best, self.metric, n_boot=self.n_boot)
        return self._gains

    def example_run(self, strategy: str) -> Path | None:
        """The first best-validation run of `strategy` (for per-layer figures)."""
        rows = self.best[self.best.strategy == strategy] if not self.best.empty else self.best
        return Path(rows.path.iloc[0]) if len(rows) else None
