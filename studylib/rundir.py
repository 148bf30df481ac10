"""A run folder on disk: atomic writes, a status file, and the finished/failed markers.

`metrics.json` is written last and only by a finished run: a folder without it is
visibly unfinished. `status.json` says running / failed (with the reason) / finished.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import pandas as pd

RUN_FILES = ("config.json", "status.json", "env.json", "history.csv", "layers.csv", "predictions.csv",
             "metrics.json", "best.pt", "splits.csv", "data_report.json")


class RunExistsError(FileExistsError):
    """The output folder already holds a finished run."""


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; None reads back as missing
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):  # numpy / torch scalars
        return _jsonable(value.item())
    return value


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, json.dumps(_jsonable(data), indent=2) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def write_csv(path: Path, rows: list[dict] | pd.DataFrame) -> None:
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    atomic_write(path, frame.to_csv(index=False))


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
            return read_json(self.file("status.json"))
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
