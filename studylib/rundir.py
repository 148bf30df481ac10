"""A run folder on disk: atomic writes, a status file, and the finished/failed markers.

`metrics.json` is written last and only by a finished run: a folder without it is
visibly unfinished. `status.json` says running / failed (with the reason) / finished.
"""
from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

from .fileio import atomic_write, read_json, write_csv, write_json  # noqa: F401  (re-exported)

RUN_FILES = ("config.json", "status.json", "env.json", "history.csv", "layers.csv", "predictions.csv",
             "metrics.json", "best.pt", "splits.csv", "data_report.json", "tensors.csv")


class RunExistsError(FileExistsError):
    """The output folder already holds a finished run."""


class RunDir:
    """The folder of one run."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def finished(self) -> bool:
        return self.file("metrics.json").is_file()

    def status(self) -> dict:
        if self.finished:
            return {"status": "finished"}
        if self.file("status.json").is_file():
            status = read_json(self.file("status.json"))
            if status.get("status") == "finished":  # metrics.json was removed afterwards
                return {"status": "incomplete", "reason": "metrics.json is missing"}
            return status
        return {"status": "missing"}

    def prepare(self, overwrite: bool = False) -> None:
        """Refuse a finished run unless `overwrite`; clear the files of an unfinished one."""
        if self.finished and not overwrite:
            raise RunExistsError(f"{self.path} already holds a finished run (metrics.json). Choose another "
                                 "output folder, or pass --overwrite (overwrite=True) to replace it.")
        self.path.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:
            self.file(name).unlink(missing_ok=True)

    def mark(self, status: str, **extra: Any) -> None:
        write_json(self.file("status.json"), {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra})

    def fail(self, error: BaseException) -> None:
        reason = f"{type(error).__name__}: {error}"
        self.mark("failed", reason=reason, traceback=traceback.format_exc())

    def __repr__(self) -> str:
        return f"RunDir({self.path}, {self.status()['status']})"
