"""Collect run folders into one tidy results table (python -m studylib report)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..core import runfiles
from ..core.config import CALIBRATION_METRICS, METRICS
from ..core.fileio import (
    CorruptFileError,
    atomic_write,
    read_json_dict,
    read_json_dict_or_empty,
)
from ..training.rundir import RunDir


def find_runs(root: str | Path) -> list[Path]:
    """Every folder below `root` that holds a config.json (a run, finished or not)."""
    return sorted(p.parent for p in Path(root).rglob(runfiles.CONFIG)
                  if "figures" not in p.parts and not any(part.startswith(".") for part in p.relative_to(root).parts))


def run_row(path: Path) -> dict:
    """Config columns, validation and test metrics, cost and status of one run folder; a folder whose
    files do not parse is a row with status 'corrupt' and the reason, never an exception."""
    rundir = RunDir(path)
    row = {"run": path.name, "path": str(path)}
    try:
        recorded = read_json_dict(path / runfiles.CONFIG)
        status = rundir.status()
    except CorruptFileError as err:
        recorded, status = {}, {"status": "corrupt", "reason": f"{err}; delete the folder or rerun it with --overwrite"}
    config, problem = run_config(recorded)
    row.update(config)
    if problem:
        status = {"status": "corrupt", "reason": problem}
    row["status"] = status["status"]
    row["reason"] = status.get("reason") or status.get("notebook_error", "")
    metrics = rundir.metrics() if status["status"] == "finished" else None
    if metrics is not None:
        for split in ("val", "test"):
            row.update({f"{split}_{m}": metrics.get(split, {}).get(m) for m in METRICS})
        row.update({f"test_{m}": metrics.get("test", {}).get(m) for m in CALIBRATION_METRICS})
        row.update({k: metrics.get(k) for k in ("best_epoch", "epochs_run", "stopped_early", "wall_seconds",
                                               "peak_memory_mb", "trainable_params", "total_params", "run_hash")})
        row["n_classes"] = len(metrics.get("classes") or []) or None
        counts = read_json_dict_or_empty(path / runfiles.DATA_REPORT).get("counts", {})
        for split in ("train", "val", "test"):
            per_class = counts.get(split) if isinstance(counts, dict) else None
            row[f"{split}_images"] = sum(per_class.values()) if isinstance(per_class, dict) else None
        env = read_json_dict_or_empty(path / runfiles.ENV)
        row.update({"device_name": env.get("device_name"), "precision": _precision(env.get("amp")),
                    **speeds(path / runfiles.HISTORY)})
        damage = damaged(recorded, metrics, path)
        if damage:  # listed with the reason, and out of every table: its numbers cannot be trusted
            row.update({k: None for k in row if k.startswith(("val_", "test_"))}, status="damaged", reason=damage)
    return row


IDENTITY = ("dataset", "backbone", "strategy", "seed")  # what a run must say about itself to be compared
LEGACY = {"dropout": "train", "rgn_max_over": "all"}  # what studylib did before these fields existed


def run_config(recorded: dict) -> tuple[dict, str]:
    """The configuration a run folder ran, read back through RunConfig, and what stops that ('' when nothing).

    A key the folder lacks (written before the field existed) gets the value that reproduces what that studylib
    did (LEGACY, else the default); what the strategy decides by 'auto' is resolved as the strategy resolves it
    (surgical's block, bn_policy); resize_size is the side the run used. So defaults, types and strategy
    resolution happen here, once. Keys no registered code declares (a plugin strategy whose module is not
    imported) are kept as recorded.
    """
    from ..core.config import ConfigError, RunConfig, config_keys
    from ..training.strategies import STRATEGIES

    if not recorded:
        return {}, ""
    known = {**{k: v for k, v in LEGACY.items() if k not in recorded},
             **{k: v for k, v in recorded.items() if k in config_keys()}}
    try:
        cfg = RunConfig.from_dict(known, source="config.json")
        if cfg.strategy in STRATEGIES:
            cfg = STRATEGIES.get(cfg.strategy).resolve(cfg)
    except ConfigError as err:
        return dict(recorded), f"{err}; rerun it with --overwrite"
    return {**recorded, **cfg.to_dict(), "resize_size": cfg.prepared_size}, ""


def damaged(recorded: dict, metrics: dict, path: Path) -> str:
    """Why a finished run's files disagree with each other ('' when they agree): an incomplete config,
    a metric that is not a number, a test score that its own predictions.csv does not give."""
    missing = [k for k in IDENTITY if recorded.get(k) in (None, "")]
    if missing:
        return f"config.json lacks {', '.join(missing)}; rerun it with --overwrite"
    for split in ("val", "test"):
        for name, value in (metrics.get(split) or {}).items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                return f"metrics.json {split} {name} is {str(value)[:20]!r}, not a number; rerun it with --overwrite"
    score = metrics["test"].get("balanced_accuracy")
    if score is None:
        return "metrics.json has no test balanced_accuracy; rerun it with --overwrite"
    predictions = path / runfiles.PREDICTIONS
    if predictions.is_file():
        try:
            frame = pd.read_csv(predictions, usecols=["label", "pred"])
            from sklearn.metrics import balanced_accuracy_score

            recomputed = float(balanced_accuracy_score(frame.label, frame.pred))
        except (ValueError, KeyError, pd.errors.ParserError) as err:
            return f"predictions.csv cannot be read ({str(err)[:60]}); rerun it with --overwrite"
        if abs(recomputed - score) > 1e-6:
            return (f"metrics.json says test balanced accuracy {score:.4f}, its predictions.csv gives "
                    f"{recomputed:.4f}: one was edited or torn; rerun it with --overwrite")
    return ""


def _precision(amp: str | None) -> str | None:
    """The arithmetic a run used, from env.json's resolved autocast dtype ('amp: auto' is bf16 on CUDA only)."""
    if amp is None:
        return None
    return "fp32" if amp == "None" else amp.replace("torch.", "")


def speeds(history_csv: Path) -> dict:
    """Measured training and inference images/s of one run, over epochs that ran the whole model.

    Epochs on cached features (LP) are left out, and so is the first full epoch when there are
    more, because it pays one-off costs (cuDNN autotuning, the allocator warming up).
    """
    if not history_csv.is_file():
        return {}
    try:
        history = pd.read_csv(history_csv)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return {}  # a damaged log costs the speed columns, not the report
    if not {"train_seconds", "cached_features", "train_images", "val_images", "val_seconds"} <= set(history):
        return {}  # written by a studylib before timings were logged
    full = history[~history.cached_features.astype(bool)]
    full = full.iloc[1:] if len(full) > 1 else full
    if full.empty or full.train_seconds.sum() <= 0:
        return {}
    return {"train_images_per_s": full.train_images.sum() / full.train_seconds.sum(),
            "infer_images_per_s": full.val_images.sum() / max(full.val_seconds.sum(), 1e-9)}


def collect(root: str | Path) -> pd.DataFrame:
    """One row per run folder below `root`."""
    rows = [run_row(p) for p in find_runs(root)]
    return pd.DataFrame(rows)


def failures(table: pd.DataFrame) -> pd.DataFrame:
    if table.empty:
        return table
    return table.loc[table.status != "finished"].reindex(columns=["run", "strategy", "status", "reason"])


def write_results(root: str | Path, out: str | Path | None = None, table: pd.DataFrame | None = None) -> Path:
    """Write the results table of every run below `root` (or `table`, collected from it) to `out`
    (default root/results.csv)."""
    out = Path(out) if out else Path(root) / "results.csv"
    atomic_write(out, (collect(root) if table is None else table).to_csv(index=False))
    return out
