"""A data change invalidates finished runs: a grid rerun after a label edit marks them stale, the report
leaves them out, --stale retrain trains them on today's data, and a reverted edit makes them current."""
from __future__ import annotations

import json

import pandas as pd
from conftest import write_image_folder

from studylib.cli import main
from studylib.study.analysis import Study
from studylib.training.rundir import RunDir


def test_a_label_edit_marks_finished_runs_stale_until_retrained(tmp_path, capsys):
    images = write_image_folder(tmp_path / "img", per_class=12, splits=())
    files = sorted(images.rglob("*.png"))
    manifest = pd.DataFrame({"path": [str(f.relative_to(tmp_path)) for f in files],
                             "label": [f.parent.name for f in files]})
    csv = tmp_path / "labels.csv"
    manifest.to_csv(csv, index=False)
    grid = tmp_path / "g.yaml"
    grid.write_text(f"dataset: csv\ndata_root: {csv}\nimage_size: 16\nmax_epochs: 1\nquiet: true\ndevice: cpu\n"
                    "batch_size: 32\nstrategy: [ft, lp]\n")
    out = tmp_path / "out"
    command = ["grid", str(grid), "--out", str(out), "--engine", "inline"]
    assert main(command) == 0
    runs = sorted(out.glob("runs/*"))
    first = {p: json.loads((p / "metrics.json").read_text()) for p in runs}

    edited = manifest.copy()
    edited.loc[0, "label"] = "b"  # one label corrected by the user: the data is not what the runs saw
    edited.to_csv(csv, index=False)
    capsys.readouterr()
    assert main(command) == 0
    said = capsys.readouterr().out
    assert "2 finished runs trained on data that has changed since (images, labels or split): marked stale" in said
    assert [RunDir(p).status()["status"] for p in runs] == ["stale", "stale"]
    assert Study(out, n_boot=20).done.empty  # never pooled with runs on today's data
    assert main(["grid", str(grid), "--out", str(out), "--dry-run"]) == 0
    assert capsys.readouterr().out.count("stale (data changed)") == 2

    assert main([*command, "--stale", "retrain"]) == 0
    assert [RunDir(p).status()["status"] for p in runs] == ["finished", "finished"]
    assert len(Study(out, n_boot=20).done) == 2
    manifest.to_csv(csv, index=False)  # and back: the retrained runs are now the stale ones
    assert main(command) == 0
    assert [RunDir(p).status()["status"] for p in runs] == ["stale", "stale"]
    assert all(json.loads((p / "metrics.json").read_text())["run_hash"] == first[p]["run_hash"] for p in runs)
