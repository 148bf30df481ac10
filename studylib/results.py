"""Collect run folders into one tidy results table (python -m studylib report)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .fileio import atomic_write, read_json
from .rundir import RunDir

METRICS = ("balanced_accuracy", "accuracy", "macro_f1", "auroc", "kappa", "macro_ap", "loss")


def find_runs(root: str | Path) -> list[Path]:
    """Every folder below `root` that holds a config.json (a run, finished or not)."""
    return sorted(p.parent for p in Path(root).rglob("config.json") if "figures" not in p.parts)


def run_row(path: Path) -> dict:
    """Config columns, validation and test metrics, cost and status of one run folder."""
    row = {"run": path.name, "path": str(path), **read_json(path / "config.json")}
    status = RunDir(path).status()
    row["status"] = status["status"]
    row["reason"] = status.get("reason", "")
    if status["status"] == "finished":
        metrics = read_json(path / "metrics.json")
        for split in ("val", "test"):
            row.update({f"{split}_{m}": metrics[split].get(m) for m in METRICS})
        row.update({k: metrics.get(k) for k in ("best_epoch", "epochs_run", "stopped_early", "wall_seconds",
                                               "peak_memory_mb", "trainable_params", "total_params", "run_hash")})
    return row


def collect(root: str | Path) -> pd.DataFrame:
    """One row per run folder below `root`."""
    rows = [run_row(p) for p in find_runs(root)]
    return pd.DataFrame(rows)


def failures(table: pd.DataFrame) -> pd.DataFrame:
    if table.empty:
        return table
    return table.loc[table.status != "finished", ["run", "strategy", "status", "reason"]]


def write_results(root: str | Path, out: str | Path | None = None) -> Path:
    """Write the results table of every run below `root` to `out` (default root/results.csv)."""
    out = Path(out) if out else Path(root) / "results.csv"
    atomic_write(out, collect(root).to_csv(index=False))
    return out
