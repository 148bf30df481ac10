"""From a grid's run folders to the study's comparison: best setting per strategy, gains over FT
with intervals carrying seed and test-image variance, verdicts corrected for multiplicity,
BatchNorm controls, tuning budgets, win/tie/loss and ranks per protocol group, and the Friedman
test behind a critical-difference diagram.

Selection uses validation only: for every protocol x dataset x backbone x strategy x seed, the
tuned setting (learning rate, strategy parameters) with the best validation metric is kept;
test scores never take part in that choice. Runs are only ever compared inside one protocol
group: every config field whose role (core.config.ROLES) is protocol, data or engine is equal
inside a group, so runs on other data, another budget or another recipe are never pooled.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..core import runfiles
from ..core.config import (
    HELD_FIXED,
    METRICS,
    RunConfig,
    fields_with_role,
    identity_fields,
    improvement_sign,
    own_knobs,
)
from ..core.constants import BASELINE, DEFAULT_METRIC, PRACTICAL, ROPE
from ..core.fileio import read_json_dict_or_empty
from ..core.knobs import KNOBS
from . import stats
from .results import collect

CASE = ["dataset", "backbone"]
VERDICTS = ("better", "inside the noise", "worse", "seed variance unknown", "undefined", "no baseline")


class AnalysisWarning(UserWarning):
    """Something in the results folder limits the comparison (shown, never hidden)."""


def load_results(root: str | Path, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Finished runs below `root` (or in `table`, collected from it) with `protocol` and `arm` (what is
    compared) columns; warns about what is missing or mixed.

    `arm` names the strategy plus every variant field it reads that differs from what it resolves by
    default (e.g. "ft [bn_policy=freeze_stats]", the BatchNorm control); `strategy` stays the registry
    name, as in config.json. Repeated runs of one configuration count once (the newest).
    """
    _import_grid_modules(root)
    table = collect(root) if table is None else table
    if table.empty:
        warnings.warn(f"no run folders below {root}; run a grid first (python -m studylib grid ...)", AnalysisWarning,
                      stacklevel=2)
        return table
    unfinished = table[table.status != "finished"]
    if len(unfinished):
        warnings.warn(f"{len(unfinished)} of {len(table)} runs are not finished and are left out: "
                      f"{', '.join(unfinished.run.head(5))}", AnalysisWarning, stacklevel=2)
    done = table[table.status == "finished"].copy()
    if done.empty:  # nothing to group (a row-wise agg of no rows is not a Series)
        return done.assign(protocol=pd.Series(dtype=str), arm=pd.Series(dtype=str))
    done = _name_arms(done)
    done = _drop_repeats(done)
    keys = _keys(done, _grouping_columns(done))
    done["protocol"] = keys.map({key: f"P{i + 1}" for i, key in enumerate(sorted(keys.unique()))})
    if done.protocol.nunique() > 1:
        warnings.warn(f"runs from {done.protocol.nunique()} different protocols are mixed in {root}; they are "
                      f"compared only within each group ({describe_protocols(done)})", AnalysisWarning,
                      stacklevel=2)
    return done


def _import_grid_modules(root: str | Path) -> None:
    """The strategies a grid imported (its `imports:`): registered here too, so their knobs are compared."""
    from .plugins import import_recorded

    try:
        import_recorded(root)
    except Exception as err:  # a moved or broken file: say so, compare what can be compared
        warnings.warn(f"the grid's imports could not be imported here ({type(err).__name__}: {err}); runs of the "
                      "strategies they register are compared without their own settings", AnalysisWarning,
                      stacklevel=3)


def _grouping_columns(done: pd.DataFrame) -> list[str]:
    """Held-fixed fields, with resize_size as the side actually used, plus the resolved precision."""
    return [f for f in fields_with_role(*HELD_FIXED) if f in done] + [c for c in ("precision",) if c in done]


def _keys(done: pd.DataFrame, columns: list[str]) -> pd.Series:
    if not columns:
        return pd.Series("", index=done.index)
    return _as_text(done[columns]).agg("|".join, axis=1)


def _as_text(frame: pd.DataFrame, missing: str = "") -> pd.DataFrame:
    """Each value as the text that identifies it (28 and 28.0 alike; a missing value as `missing`)."""
    return frame.apply(lambda column: column.map(lambda v: missing if _missing(v) else str(_canonical(v))))


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _canonical(value) -> object:
    """28 and 28.0 (a column pandas read as float because old folders lacked the field) are one value."""
    if isinstance(value, (float, np.floating)) and np.isfinite(value) and float(value).is_integer():
        return int(value)
    return value


def _name_arms(done: pd.DataFrame) -> pd.DataFrame:
    """`arm`: the strategy plus every variant field it reads that differs from what it resolves by default
    ("ft [bn_policy=freeze_stats]", the BatchNorm control). results.run_config already resolved each 'auto'."""
    from ..training.strategies import STRATEGIES

    variants = [f for f in fields_with_role("method") if f != "strategy"]  # bn_policy, dropout, rgn_max_over...
    defaults, reads = {}, {}
    for name in done.strategy.unique():
        cls = STRATEGIES.get(name) if name in STRATEGIES else None
        resolved = cls.resolve(RunConfig(strategy=name)) if cls else RunConfig()
        defaults[name] = {f: getattr(resolved, f) for f in variants}
        reads[name] = set(cls.settings()) | {"bn_policy", "dropout"} if cls else set()  # unknown: name alone
    labels = []
    for row in done[["strategy"] + variants].itertuples(index=False):
        extra = [f"{name}={getattr(row, name)}" for name in variants
                 if name in reads[row.strategy] and getattr(row, name) != defaults[row.strategy][name]]
        labels.append(f"{row.strategy} [{', '.join(extra)}]" if extra else row.strategy)
    return done.assign(arm=labels)


def _drop_repeats(done: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: a grid re-run into new folders (or a run repeated by hand) must not
    give its strategy extra tries at the best validation score. The newest finished copy is kept."""
    fields = [f for f in identity_fields() if f in done] + [c for c in ("precision",) if c in done]
    text = _as_text(done[fields + [k for k in KNOBS if k in done]])
    # as the run hash: the fields, and only the knobs of the run's own strategy (FT ignores lp_epochs)
    identity = [tuple(row[c] for c in fields) + tuple((k, row[k]) for k in own_knobs(strategy) if k in row)
                for (_, row), strategy in zip(text.iterrows(), done.strategy)]
    order = done.assign(_mtime=[_mtime(p) for p in done.path], _identity=[str(key) for key in identity])
    order = order.sort_values("_mtime", kind="stable")
    kept = order.drop_duplicates(subset="_identity", keep="last").drop(columns=["_mtime", "_identity"])
    if len(kept) < len(done):
        warnings.warn(f"{len(done) - len(kept)} runs repeat the configuration of another run (a grid re-run into "
                      "new folders, or a repeated run); the newest of each is used", AnalysisWarning, stacklevel=2)
    return kept.sort_index()


def _mtime(path: str) -> float:
    try:
        return (Path(path) / runfiles.METRICS).stat().st_mtime
    except (OSError, TypeError):
        return 0.0


def protocol_names(done: pd.DataFrame) -> dict[str, str]:
    """'P1' -> 'medmnist_size=28': each protocol group named by the fields that set it apart."""
    text = _as_text(done[_grouping_columns(done)], missing="unknown")
    differing = [f for f in text if text[f].nunique() > 1]
    groups = text[differing].groupby(done.protocol).first()
    return {p: ", ".join(f"{f}={row[f]}" for f in differing) or p for p, row in groups.iterrows()}


def describe_protocols(done: pd.DataFrame) -> str:
    """'P1: medmnist_size=28; P2: medmnist_size=64': the fields that set the groups apart."""
    text = _as_text(done[_grouping_columns(done)], missing="unknown")
    differing = [f for f in text if text[f].nunique() > 1]
    if not differing:
        return "P1: every run shares one protocol"
    groups = text[differing].groupby(done.protocol).first()
    return "; ".join(f"{p}: " + ", ".join(f"{f}={row[f]}" for f in differing) for p, row in groups.iterrows())


def selection_metric(metric: str) -> str:
    """The validation metric that picks the tuned setting when the study compares `metric`: itself, or
    for the calibration metrics (measured on test only) balanced accuracy, as the runs selected epochs."""
    return metric if metric in METRICS else "balanced_accuracy"


def select_best(done: pd.DataFrame, metric: str = DEFAULT_METRIC) -> pd.DataFrame:
    """One row per protocol x dataset x backbone x strategy x seed: the best *validation* setting."""
    if done.empty:
        return done
    keys = ["protocol"] + CASE + ["arm", "seed"]
    by = selection_metric(metric)
    ranked = done.sort_values(f"val_{by}", ascending=by == "loss", kind="stable")
    return ranked.groupby(keys, sort=True).head(1).sort_values(keys).reset_index(drop=True)


def budgets(done: pd.DataFrame) -> pd.DataFrame:
    """Tuned settings tried per strategy (per case and seed; min and max over them) in each protocol:
    a strategy given more tries wins more often by selection alone."""
    from ..training.strategies import STRATEGIES

    if done.empty:
        return pd.DataFrame(columns=["protocol", "arm", "settings_min", "settings_max", "tuned"])
    rows = []
    for (protocol, arm), group in done.groupby(["protocol", "arm"]):
        name = group.strategy.iloc[0]
        own = (*(STRATEGIES.get(name).settings() if name in STRATEGIES else ("lr",)), "momentum")
        tuned = [f for f in fields_with_role("tuned") if f in own and f in group]
        per_cell = group.groupby(CASE + ["seed"])[tuned].apply(lambda g: len(g.drop_duplicates())) if tuned else \
            group.groupby(CASE + ["seed"]).size().clip(upper=1)
        swept = [f for f in tuned if group[f].nunique() > 1]
        rows.append({"protocol": protocol, "arm": arm, "settings_min": int(per_cell.min()),
                     "settings_max": int(per_cell.max()), "tuned": ", ".join(swept) or "none"})
    return pd.DataFrame(rows)


def accuracy_table(best: pd.DataFrame, metric: str = DEFAULT_METRIC) -> pd.DataFrame:
    """Mean and standard deviation over seeds of the test metric, per case x strategy."""
    column = f"test_{metric}"
    return (best.groupby(["protocol"] + CASE + ["arm"])[column].agg(["mean", "std", "count"]).reset_index())


def gain_summary(best: pd.DataFrame, metric: str = DEFAULT_METRIC, baseline: str = BASELINE,
                 n_boot: int = stats.N_BOOT, correction: str = "holm",
                 strategies: list[str] | None = None, rope: float = ROPE) -> pd.DataFrame:
    """Per protocol x case x strategy: mean paired improvement over `baseline` on the same seeds, its
    95% interval with both seed and test-image variance (stats.py says how and why), the number of
    seeds, the p-value before and after `correction` over the whole family of comparisons in the
    table, the verdict (from the corrected p-value) and whether the two ran under different
    BatchNorm policies. A protocol group without a plain `baseline` arm but with exactly one arm of
    that strategy (e.g. a grid run wholly with bn_policy=freeze_stats) compares with that arm.

    Args:
        best: select_best's table: each arm's selected run per protocol, case and seed.
        metric: the test metric compared (also recall:<class index>).
        baseline: the arm every gain is measured against.
        n_boot: test-image bootstrap resamples per gain.
        correction: multiplicity correction over the table's p-values: "holm" or "fdr_bh".
        strategies: arms to compare with the baseline; None: every other arm.
    """
    columns = ["protocol"] + CASE + ["arm", "baseline", "seeds", "gain", "low", "high", "interval", "p",
                                     "p_adjusted", "verdict", "verdict_uncorrected", "p_worse", "p_equivalent",
                                     "p_better", "practical", "seeds_needed", "design", "bn_policy", "bn_differs",
                                     "seed_sd", "test_var"]
    if best.empty:
        return pd.DataFrame(columns=columns)
    reader = _PredictionCache()
    keys = ["protocol"] + CASE
    rows = []
    for _protocol, group in best.groupby("protocol"):
        base_arm = _baseline_arm(group, baseline)
        base = group[group.arm == base_arm].set_index(keys + ["seed"])
        others = group[group.arm != base_arm]
        if strategies is not None:
            others = others[others.arm.isin(strategies)]
        for group_keys, runs in others.groupby(keys + ["arm"]):
            row = dict(zip(keys + ["arm"], group_keys), baseline=base_arm)
            cell = tuple(group_keys[:-1])
            pairs = [(run.path, base.loc[cell + (run.seed,)]) for run in runs.itertuples()
                     if cell + (run.seed,) in base.index]
            bn_base = pairs[0][1].bn_policy if pairs else ""
            row.update(bn_policy=f"{runs.bn_policy.iloc[0]} vs {bn_base or '?'}",
                       bn_differs=bool(pairs) and runs.bn_policy.iloc[0] != bn_base)
            if not pairs:
                rows.append({**row, "seeds": 0, "verdict_uncorrected": "no baseline"})
                continue
            try:
                result = stats.paired_gain([(reader(a), reader(b.path)) for a, b in pairs], metric, n_boot)
            except (ValueError, FileNotFoundError, KeyError) as err:  # one bad pair: that row, not the report
                rows.append({**row, "seeds": len(pairs), "verdict_uncorrected": "undefined", "design": str(err)[:80]})
                continue
            base_mean = float(np.mean([_score(metric, reader(b.path)) for _, b in pairs]))
            low, high = within_range(metric, base_mean, result.low, result.high)
            worse, equivalent, better = (stats.rope_probabilities(result.gain, result.se, result.df, rope)
                                         if result.seeds >= stats.MIN_SEEDS else (np.nan,) * 3)
            rows.append({**row, "seeds": result.seeds, "gain": result.gain, "low": low, "high": high,
                         "p": result.p if result.seeds >= stats.MIN_SEEDS else np.nan, "design": result.design,
                         "interval": interval_kind(result.seeds, result.design),
                         "verdict_uncorrected": _verdict(result.low, result.high, result.seeds),
                         "p_worse": worse, "p_equivalent": equivalent, "p_better": better,
                         "practical": _practical(worse, equivalent, better, result.seeds),
                         "seed_sd": float(np.std(result.per_seed, ddof=1)) if result.seeds > 1 else np.nan,
                         "test_var": result.test_var})
            if rows[-1]["practical"] in ("undecided", "seed variance unknown"):  # what a decision would take
                rows[-1]["seeds_needed"] = stats.seeds_needed(result.gain, rows[-1]["seed_sd"], result.test_var, rope)
    summary = pd.DataFrame(rows).reindex(columns=columns)
    summary["p_adjusted"] = stats.adjust(summary.p.astype(float), correction)
    summary["verdict"] = [_corrected(r) for r in summary.itertuples()]
    return summary


METRIC_RANGE = {"kappa": (-1.0, 1.0), "ece": (0.0, 1.0), "ece_mass": (0.0, 1.0), "brier": (0.0, 2.0)}  # else [0, 1]
UNBOUNDED = ("loss", "nll")


def within_range(metric: str, base_mean: float, low: float, high: float) -> tuple[float, float]:
    """A gain's interval cut to the gains the metric allows: a strategy cannot score below the metric's
    minimum, so a balanced-accuracy gain over a baseline at 0.6 is at least -0.6 (a t-interval can reach past).

    Args:
        metric: the gain's metric (its range: METRIC_RANGE, else [0, 1]; loss and nll unbounded).
        base_mean: the baseline's mean score.
        low: lower end of the gain's interval.
        high: upper end of the gain's interval.
    """
    if metric in UNBOUNDED or not np.isfinite(base_mean):
        return low, high
    lowest, highest = METRIC_RANGE.get(metric, (0.0, 1.0))
    sign = improvement_sign(metric)
    bounds = sorted((sign * (lowest - base_mean), sign * (highest - base_mean)))
    return (max(low, bounds[0]) if np.isfinite(low) else low, min(high, bounds[1]) if np.isfinite(high) else high)


def interval_kind(seeds: int, design: str) -> str:
    """What a gain's interval carries: a one-seed interval knows nothing of the seed-to-seed spread."""
    if seeds < 2:
        return "test images only"
    return "seeds" if design == "nested" else "seeds + test images"


def per_class_recall(best: pd.DataFrame, baseline: str = BASELINE, n_boot: int = stats.N_BOOT,
                     correction: str = "holm") -> pd.DataFrame:
    """Per protocol x case x strategy x class: the mean test recall over seeds and, for every arm but the
    baseline, its gain over the baseline with the gain table's interval, verdicts corrected over the
    strategies of one class (a family per case and class).

    Args:
        best: select_best's table: each arm's selected run per protocol, case and seed.
        baseline: the arm the gains are measured against.
        n_boot: test-image bootstrap resamples per gain.
        correction: "holm" or "fdr_bh", over the arms of one case and class.
    """
    columns = ["protocol"] + CASE + ["class", "arm", "recall", "seeds", "gain", "low", "high", "interval",
                                     "verdict"]
    rows = []
    reader = _PredictionCache()
    for keys, group in best.groupby(["protocol"] + CASE):
        names = run_classes(group.path.iloc[0])
        for c, name in enumerate(names):
            metric = f"recall:{c}"
            recall = {s: _mean_score(metric, runs.path, reader) for s, runs in group.groupby("arm")}
            gains = gain_summary(group, metric, baseline, n_boot, correction).set_index("arm")
            for strategy, value in recall.items():
                row = dict(zip(["protocol"] + CASE, keys), **{"class": name, "arm": strategy, "recall": value})
                if strategy in gains.index:
                    row.update(gains.loc[strategy, ["seeds", "gain", "low", "high", "interval", "verdict"]].to_dict())
                rows.append(row)
    return pd.DataFrame(rows).reindex(columns=columns)


def _mean_score(metric: str, paths, reader) -> float:
    """Mean of `metric` over runs, from their predictions; a run without readable predictions is left out."""
    scores = []
    for path in paths:
        try:
            scores.append(_score(metric, reader(path)))
        except (OSError, ValueError, KeyError):
            continue
    return float(np.nanmean(scores)) if np.isfinite(scores).any() else float("nan")


def _score(metric: str, predictions: stats.Predictions) -> float:
    return float(stats.weighted_scores(metric, predictions, np.ones((1, len(predictions.ids))))[0])


def run_classes(path: str | Path) -> list[str]:
    """The class names of a finished run (metrics.json), in label order."""
    return list(read_json_dict_or_empty(Path(path) / runfiles.METRICS).get("classes") or [])


def summed_confusions(best: pd.DataFrame) -> dict[tuple, dict[str, np.ndarray]]:
    """(protocol, dataset, backbone) -> strategy -> the test confusion matrix summed over the seeds."""
    out: dict[tuple, dict[str, np.ndarray]] = {}
    for keys, group in best.groupby(["protocol"] + CASE):
        for strategy, runs in group.groupby("arm"):
            matrices = [read_json_dict_or_empty(Path(p) / runfiles.METRICS).get("test_confusion") for p in runs.path]
            matrices = [np.asarray(m) for m in matrices if m]
            if matrices and len({m.shape for m in matrices}) == 1:
                out.setdefault(tuple(keys), {})[strategy] = np.sum(matrices, axis=0)
    return out


def _baseline_arm(group: pd.DataFrame, baseline: str) -> str:
    if baseline in set(group.arm):
        return baseline
    same = sorted(set(group.arm[group.strategy == baseline.split(" [")[0]]))
    return same[0] if len(same) == 1 else baseline


class _PredictionCache(dict):
    def __call__(self, path: str) -> stats.Predictions:
        if path not in self:
            self[path] = stats.Predictions.read(path)
        return self[path]


def _verdict(low: float, high: float, seeds: int) -> str:
    if seeds < stats.MIN_SEEDS:
        return "seed variance unknown"
    if not (np.isfinite(low) and np.isfinite(high)):
        return "undefined"
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "inside the noise"


def _practical(worse: float, equivalent: float, better: float, seeds: int) -> str:
    """The Bayesian decision: practically equivalent, better or worse where its posterior probability passes
    PRACTICAL; otherwise undecided (more seeds would tell)."""
    if seeds < stats.MIN_SEEDS or not np.isfinite(equivalent):
        return "seed variance unknown" if seeds < stats.MIN_SEEDS else "undefined"
    for name, probability in (("practically equivalent", equivalent), ("better", better), ("worse", worse)):
        if probability > PRACTICAL:
            return name
    return "undecided"


def _corrected(row) -> str:
    if row.verdict_uncorrected in ("no baseline", "seed variance unknown"):
        return row.verdict_uncorrected
    if row.verdict_uncorrected == "undefined" or not np.isfinite(row.gain) or not np.isfinite(row.p_adjusted):
        return "undefined"
    if row.p_adjusted < 1 - stats.LEVEL:
        return "better" if row.gain > 0 else "worse"
    return "inside the noise"


def bn_split(best: pd.DataFrame, metric: str = DEFAULT_METRIC, n_boot: int = stats.N_BOOT,
             correction: str = "holm", gains: pd.DataFrame | None = None) -> pd.DataFrame:
    """For each strategy whose BatchNorm policy differs from FT's, where the FT control under the
    strategy's policy ran: its gain over FT (the row of the gain table, `gains`) split into what
    BatchNorm explains (the control over FT) and what the strategy adds (the strategy over the
    control). The two parts are corrected together over every part of this table.

    Args:
        best: select_best's table: each arm's selected run per protocol, case and seed.
        metric: the test metric compared.
        n_boot: test-image bootstrap resamples per gain.
        correction: "holm" or "fdr_bh", over every part of this table.
        gains: gain_summary's table for `metric` (the totals); None: computed here.
    """
    if best.empty:
        return pd.DataFrame()
    gains = gain_summary(best, metric, BASELINE, n_boot, correction) if gains is None else gains
    parts, totals = [], []
    for protocol, within in best.groupby("protocol"):  # controls only count in their own protocol group
        ft_policy = within[within.arm == BASELINE].bn_policy
        for arm, group in within[within.strategy != BASELINE].groupby("arm"):
            policy = group.bn_policy.iloc[0]
            control = f"ft [bn_policy={policy}]"
            if ft_policy.empty or policy == ft_policy.iloc[0] or control not in set(within.arm):
                continue
            totals.append(gains[(gains.protocol == protocol) & (gains.arm == arm)]
                          .assign(part="total (over FT)", compared=f"{arm} - ft"))
            for part, (which, base) in {"BatchNorm (control over FT)": (control, BASELINE),
                                        "strategy (over the control)": (arm, control)}.items():
                rows = gain_summary(within, metric, base, n_boot, correction, strategies=[which])
                parts.append(rows[rows.baseline == base].assign(arm=arm, part=part, compared=f"{which} - {base}"))
    if not parts:
        return pd.DataFrame()
    split = pd.concat(parts, ignore_index=True)
    family = split.drop_duplicates(subset=["protocol"] + CASE + ["compared"])  # a control shared by two strategies
    adjusted = stats.adjust(family.p.astype(float), correction)  # one family: every distinct part here
    key = family.protocol + "|" + family.dataset + "|" + family.backbone + "|" + family.compared
    lookup = dict(zip(key, adjusted))
    split["p_adjusted"] = (split.protocol + "|" + split.dataset + "|" + split.backbone + "|"
                           + split.compared).map(lookup)
    split["verdict"] = [_corrected(r) for r in split.itertuples()]
    table = pd.concat(totals + [split], ignore_index=True)
    order = {"total (over FT)": 0, "BatchNorm (control over FT)": 1, "strategy (over the control)": 2}
    table = table.assign(_order=table.part.map(order)).sort_values(["protocol"] + CASE + ["arm", "_order"])
    return table[["protocol"] + CASE + ["arm", "part", "compared", "seeds", "gain", "low", "high", "p_adjusted",
                                        "verdict"]].reset_index(drop=True)


def win_tie_loss(summary: pd.DataFrame) -> pd.DataFrame:
    """Per protocol x strategy: in how many dataset x backbone cases it beats / ties / loses to the
    baseline (corrected verdicts), with a sentence."""
    if summary.empty:
        return summary
    counts = summary.pivot_table(index=["protocol", "arm"], columns="verdict", values="seeds", aggfunc="size",
                                 fill_value=0)
    counts = counts.reindex(columns=list(VERDICTS), fill_value=0).rename_axis(columns=None)  # no empty 'verdict' header
    counts["cases"] = counts.sum(axis=1)
    seeds = summary.groupby(["protocol", "arm"]).seeds.agg(["min", "max"])
    counts["seeds"] = [f"{a}" if a == b else f"{a}-{b}" for a, b in zip(seeds["min"], seeds["max"])]
    baselines = summary.groupby(["protocol", "arm"]).baseline.first()
    counts["sentence"] = [_sentence(p, s, r, baselines.get((p, s), BASELINE)) for (p, s), r in counts.iterrows()]
    return counts


def _sentence(protocol: str, strategy: str, r, baseline: str = BASELINE) -> str:
    from ..training.strategies import strategy_label

    strategy, baseline = strategy_label(strategy), strategy_label(baseline)
    n = r.cases - r["no baseline"]
    if n == 0:
        return f"{protocol} {strategy}: no case has a {baseline} run to compare with"
    if r["seed variance unknown"] == n:
        return (f"{protocol} {strategy}: {n} case(s), {r.seeds} seed(s) each: too few seeds for a verdict "
                f"(need {stats.MIN_SEEDS})")
    return (f"{protocol} {strategy} vs {baseline} over {n} case(s): better in {r.better}, worse in {r.worse}, "
            f"inside the noise in {r['inside the noise']}"
            + (f", too few seeds in {r['seed variance unknown']}" if r["seed variance unknown"] else ""))


def mean_ranks(table: pd.DataFrame, metric: str = DEFAULT_METRIC) -> pd.DataFrame:
    """Average rank of each strategy (1 = best mean test metric) over the cases of each protocol."""
    if table.empty:
        return pd.DataFrame(columns=["protocol", "arm", "mean rank", "cases"])
    ranks = table.groupby(["protocol"] + CASE)["mean"].rank(ascending=improvement_sign(metric) < 0, method="average")
    out = ranks.groupby([table.protocol, table.arm]).agg(["mean", "size"])
    out.columns = ["mean rank", "cases"]
    return out.reset_index().sort_values(["protocol", "mean rank"], kind="stable").reset_index(drop=True)


def datasets_are_blocks(cases: pd.DataFrame) -> bool:
    """Whether independent blocks are datasets (each the mean of its backbones) rather than dataset x backbone
    cases: when several datasets ran and some with several backbones, those backbones share the dataset's images,
    so its cases are not independent (Demsar 2006). `cases`: rows with dataset and backbone columns."""
    datasets = cases.dataset.nunique()
    return datasets >= 2 and cases.groupby(CASE).ngroups > datasets


def rank_tests(best: pd.DataFrame, metric: str = DEFAULT_METRIC, posthoc: str = "nemenyi") -> dict:
    """Per protocol: Friedman test and post-hoc over the strategies (stats.rank_test). Blocks must be
    independent (Demsar 2006): the datasets, each the mean over its backbones, when backbones share a
    dataset's images; else the dataset x backbone cases; a protocol with one case uses its seeds as
    blocks, and then the conclusion holds for that case only."""
    tests = {}
    sign = improvement_sign(metric)
    column = f"test_{metric}"
    for protocol, group in best.groupby("protocol"):
        plain = group[~group.arm.str.contains("[", regex=False)]
        group = plain if plain.arm.nunique() >= 3 else group  # controls and variants are not strategies
        cases = group.groupby(CASE).ngroups
        datasets = group.dataset.nunique()
        if datasets_are_blocks(group):
            per_case = group.pivot_table(index=CASE, columns="arm", values=column, aggfunc="mean")
            scores = per_case.groupby(level="dataset").agg(lambda cells: cells.mean(skipna=False))
            unit = f"datasets (each the mean of its backbones: {cases} cases)"
        elif cases >= 2:
            scores = group.pivot_table(index=CASE, columns="arm", values=column, aggfunc="mean")
            unit = "dataset x backbone cases" + (" of one dataset (not independent: read as descriptive)"
                                                 if datasets == 1 else "")
        else:
            scores = group.pivot_table(index="seed", columns="arm", values=column, aggfunc="mean")
            unit = "seeds of one case (its conclusion holds for this case only)"
        test = stats.rank_test(sign * scores, posthoc, unit)
        if test is not None:
            tests[protocol] = test
    return tests


@dataclass
class Study:
    """Everything the analysis derives from one results folder."""

    root: Path
    metric: str = DEFAULT_METRIC
    n_boot: int = stats.N_BOOT  # image resamples for the test-level variance of each gain
    runs: pd.DataFrame | None = None  # collect(root), when the caller already has it
    correction: str = "holm"  # multiplicity correction over all gains: holm or fdr_bh
    posthoc: str = "nemenyi"  # after the Friedman test: nemenyi or wilcoxon (with Holm)
    rope: float = ROPE  # gains within +-rope are practically equivalent (the Bayesian decision)
    done: pd.DataFrame = field(init=False)
    best: pd.DataFrame = field(init=False)
    notes: list[str] = field(init=False, default_factory=list)

    def __post_init__(self):
        if self.correction not in stats.CORRECTIONS:
            raise ValueError(f"correction={self.correction!r}; choose one of {', '.join(stats.CORRECTIONS)}")
        if self.posthoc not in ("nemenyi", "wilcoxon"):
            raise ValueError(f"posthoc={self.posthoc!r}; choose nemenyi or wilcoxon")
        self.root = Path(self.root)
        self.runs = collect(self.root) if self.runs is None else self.runs
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", AnalysisWarning)
            self.done = load_results(self.root, self.runs)
        self.notes = [str(w.message) for w in caught if issubclass(w.category, AnalysisWarning)]
        self.best = select_best(self.done, self.metric)
        self._cache: dict = {}
        self.notes += self._budget_notes()

    def cached(self, name: str, compute):
        if name not in self._cache:
            self._cache[name] = compute()
        return self._cache[name]

    @property
    def accuracy(self) -> pd.DataFrame:
        return accuracy_table(self.best, self.metric)

    @property
    def gains(self) -> pd.DataFrame:
        return self.cached("gains", lambda: gain_summary(self.best, self.metric, n_boot=self.n_boot,
                                                          correction=self.correction, rope=self.rope))

    @property
    def bn_split(self) -> pd.DataFrame:
        return self.cached("bn", lambda: bn_split(self.best, self.metric, self.n_boot, self.correction, self.gains))

    @property
    def rank_tests(self) -> dict:
        return self.cached("ranks", lambda: rank_tests(self.best, self.metric, self.posthoc))

    @property
    def budgets(self) -> pd.DataFrame:
        return budgets(self.done)

    @property
    def pool_stability(self) -> dict[str, pd.DataFrame]:
        """Per protocol: stats.pool_stability of the rank test's blocks (each pairwise verdict with every other
        strategy left out once)."""
        return self.cached("pool", lambda: {protocol: stats.pool_stability(test.scores, self.posthoc)
                                            for protocol, test in self.rank_tests.items()})

    @property
    def protocols(self) -> str:
        return describe_protocols(self.done) if not self.done.empty else ""

    def _budget_notes(self) -> list[str]:
        notes = []
        for protocol, group in self.budgets.groupby("protocol"):
            if group.settings_max.max() != group.settings_min.min():
                spread = ", ".join(f"{r.arm} {r.settings_min}"
                                   + (f"-{r.settings_max}" if r.settings_max != r.settings_min else "")
                                   for r in group.itertuples())
                notes.append(f"{protocol}: strategies had different tuning budgets (settings tried: {spread}); the "
                             "one with more tries can win by selection alone")
        return notes

    @property
    def classes(self) -> int | None:
        """The number of classes when every selected run has the same (figures mark chance only then)."""
        counts = self.best["n_classes"].dropna().unique() if "n_classes" in self.best else []
        return int(counts[0]) if len(counts) == 1 else None

    @property
    def bn_mixed(self) -> bool:
        gains = self.gains
        return bool(len(gains)) and bool(gains.bn_differs.fillna(False).any())

    def test_counts(self) -> dict[str, dict[str, int]]:
        """dataset -> test images per class, from the data report of one selected run of each dataset."""
        out = {}
        for dataset, runs in self.best.groupby("dataset"):
            counts = read_json_dict_or_empty(Path(runs.path.iloc[0]) / runfiles.DATA_REPORT).get("counts", {})
            test = counts.get("test") if isinstance(counts, dict) else None
            if isinstance(test, dict) and test:
                out[str(dataset)] = {str(c): int(n) for c, n in test.items()}
        return out

    @property
    def per_class(self) -> pd.DataFrame:
        return self.cached("per_class", lambda: per_class_recall(self.best, n_boot=self.n_boot,
                                                                 correction=self.correction))

    def example_run(self, strategy: str, needs: str = "") -> Path | None:
        """The first best-validation run of `strategy` (holding the file `needs`, for per-layer figures)."""
        rows = self.best[self.best.arm == strategy] if not self.best.empty else self.best
        paths = [Path(p) for p in rows.path if not needs or (Path(p) / needs).is_file()]
        return paths[0] if paths else None


def grid_study(grid_path: str | Path, out: str | Path, runs: pd.DataFrame | None = None,
               overrides: dict | None = None, **options) -> "Study":
    """The `Study` of exactly one grid's runs in `out`: other grids may have run into the same folder (the
    demo's and efficiency.yaml's do), and comparing only this grid's runs keeps its verdicts corrected
    over its own comparisons. `runs`: collect(out), when the caller already has it; `overrides`: the fields the
    grid ran with on top of its file (as run_grid's)."""
    from .grid import load_grid

    hashes = {cfg.run_hash() for cfg in load_grid(grid_path, overrides).runs}
    runs = collect(out) if runs is None else runs
    return Study(Path(out), runs=runs[runs.run_hash.isin(hashes)] if "run_hash" in runs else runs, **options)
