"""Finished runs whose data changed since they trained: found by a grid, kept out of the report.

A run's identity (its config hash) says nothing about the data's content: edit a label in the CSV,
replace an image, and every finished run would be skipped and pooled with new ones. Each run records
the fingerprint of the data it trained on (env.json: images, labels and split); a grid computes
today's for each finished run's data settings (once per dataset, data fields and seed) and marks a
run whose fingerprint differs as stale. A stale run keeps its files but is left out of every table
until a grid retrains it (`--stale retrain`) or the data returns to what it was.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..core import runfiles
from ..core.config import RunConfig, fields_with_role
from ..core.fileio import read_json_dict_or_empty
from ..training.rundir import RunDir

POLICIES = ("keep", "retrain")
# Everything that decides which images, labels and split a run sees (the backbone and strategy do not).
DATA_FIELDS = ("dataset", "seed", "image_size", "resize_size", "val_fraction", "test_fraction", "synthetic_size",
               *fields_with_role("data"))


def data_key(cfg: RunConfig) -> str:
    return json.dumps({name: getattr(cfg, name) for name in DATA_FIELDS}, sort_keys=True)


def find_stale(finished: list[tuple[RunConfig, Path]]) -> tuple[dict[Path, str], list[str]]:
    """(run folder -> why it is stale, notes on data that could not be checked)."""
    from ..data.datasets import load_dataset

    today: dict[str, str | None] = {}
    stale, notes = {}, []
    for cfg, path in finished:
        recorded = read_json_dict_or_empty(path / runfiles.ENV).get("data_fingerprint")
        if not recorded:
            continue  # made before runs recorded their data: nothing to compare with
        key = data_key(cfg)
        if key not in today:
            try:
                today[key] = load_dataset(cfg.replace(quiet=True), progress=False).fingerprint()
            except (OSError, ValueError) as err:  # the data moved or broke: say so, judge nothing
                today[key] = None
                notes.append(f"could not check the data of {cfg.dataset} (seed {cfg.seed}) for changes: {err}")
        if today[key] is not None and today[key] != recorded:
            stale[path] = (f"stale: its data changed since it trained (images, labels or split of {cfg.dataset}, "
                           f"seed {cfg.seed}); kept out of the report. Rerun the grid with --stale retrain to train "
                           "it on today's data")
    return stale, notes


def apply(stale: dict[Path, str], finished: list[Path], policy: str) -> list[Path]:
    """Mark stale runs (keep) or clear their results so they train again (retrain); unmark runs whose data
    is as it was. Returns the folders to train again."""
    if policy not in POLICIES:
        raise ValueError(f"stale={policy!r}; choose one of {', '.join(POLICIES)}")
    again = []
    for path in finished:
        rundir = RunDir(path)
        record = rundir.status_record()
        if path not in stale:
            if record.get("stale"):
                rundir.mark("finished")  # the data is back to what it trained on
            continue
        if policy == "retrain":
            rundir.file(runfiles.METRICS).unlink(missing_ok=True)
            rundir.file(runfiles.RESUME).unlink(missing_ok=True)
            again.append(path)
        else:
            rundir.mark("finished", stale=stale[path])
    return again
