"""Output folders studylib may write into: new, empty, or already its own; never a user's files.

A run writes config.json, history.csv, predictions.csv ...; a grid writes grid.yaml, results.csv,
report.md. A user's folder can hold files of those names, and writing there would replace them. So
studylib marks each folder it writes with a small `.studylib` file, writes freely into a marked (or
new, or empty) folder, recognises what older versions wrote (a run's status.json, a report's first
line), and refuses the rest unless told `overwrite`.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from . import runfiles
from .fileio import (
    OutputPathError,
    atomic_write,
    ensure_folder,
    read_json_dict_or_empty,
)

MARKER = ".studylib"  # {"kind": "run" | "grid", "created": ...} in every folder studylib writes
KINDS = ("run", "grid")
RUN_STATUSES = ("running", "failed", "finished", "interrupted")


OWN_HIDDEN = {MARKER, ".lock", ".notebook-pending"}  # files studylib itself leaves in a folder
# What a grid folder's top-level files start with when studylib wrote them (older versions left no marker).
GRID_FILES = {"results.csv": "run,path", "report.md": "# studylib report", "report.html": "<!doctype html><html><head>"
              "<meta charset='utf-8'><title>studylib report", "analysis.ipynb": "{",
              "imports.json": "["}


def claim_folder(path: str | Path, kind: str, overwrite: bool = False, what: str = "the output folder") -> Path:
    """Create `path`, or take an existing folder studylib may write into; with `overwrite`, any folder.

    A run folder must be new, empty or studylib's (its marker, or a run's status.json or metrics.json from
    an older version). A grid folder may hold other files, but none of the names studylib writes there
    (results.csv, report.md, ...) unless studylib wrote them (their first bytes say so). Anything else is
    refused with a one-line reason and the fix.

    Args:
        path: the folder to create or take.
        kind: "run" or "grid" (the rules differ; the marker records it).
        overwrite: take any folder, whatever it holds.
        what: how messages name the folder (e.g. "the run folder (--out)").
    """
    path = ensure_folder(Path(path), what)
    if overwrite:
        return _mark(path, kind)
    if kind == "run":
        ours = (path / MARKER).is_file() or legacy_run(path)
        foreign = [] if ours else sorted(p.name for p in path.iterdir() if p.name not in OWN_HIDDEN)
    else:  # a grid folder, marked or not, may hold a user's notes: never under a name studylib writes
        foreign = [name for name, start in GRID_FILES.items() if (path / name).is_file()
                   and not _starts_with(path / name, start)]
        foreign += ["grid.yaml"] if (path / "grid.yaml").is_file() and not (path / "runs").is_dir() else []
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise OutputPathError(
            f"{what} {path} holds files studylib did not write ({shown}); studylib would replace files of the names "
            f"it writes there. Choose a new or empty folder, or pass --overwrite (overwrite=True) if they may be "
            "replaced")
    return _mark(path, kind)


def legacy_run(path: Path) -> bool:
    """A run folder written by a studylib from before the marker: its status.json, its saved epochs
    (resume.pt, even torn) or a finished metrics.json."""
    if (read_json_dict_or_empty(path / runfiles.STATUS).get("status") in RUN_STATUSES
            or (path / runfiles.RESUME).is_file()):
        return True
    return isinstance(read_json_dict_or_empty(path / runfiles.METRICS).get("test"), dict)


def _starts_with(path: Path, start: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read(len(start)) == start
    except OSError:
        return False


def _mark(path: Path, kind: str) -> Path:
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}; one of {KINDS}")
    if not (path / MARKER).is_file():
        atomic_write(path / MARKER, json.dumps({"kind": kind, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}))
    return path
