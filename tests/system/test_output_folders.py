"""No output folder replaces a user's file: run, grid and report write only where studylib may."""
from __future__ import annotations

import pytest
from conftest import Preempted, stop_training_at, tiny_config

from studylib.cli import main
from studylib.core.outfolder import MARKER
from studylib.training.runner import run

TINY = ["-s", "image_size=16", "-s", "synthetic_size=120", "-s", "max_epochs=1", "-s", "quiet=true",
        "-s", "device=cpu", "-s", "batch_size=32"]
GRID = "dataset: synthetic\nsynthetic_size: 120\nimage_size: 16\nmax_epochs: 1\nquiet: true\ndevice: cpu\n" \
       "batch_size: 32\nstrategy: ft\n"


def user_files(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(f"the user's own {name}\n".encode())
    return {name: (folder / name).read_bytes() for name in names}


def unchanged(folder, saved) -> bool:
    return all((folder / name).read_bytes() == data for name, data in saved.items())


def test_run_into_a_folder_of_a_users_files_is_refused_and_keeps_them_byte_for_byte(tmp_path, capsys):
    folder = tmp_path / "mine"
    saved = user_files(folder, ["config.json", "history.csv", "splits.csv", "predictions.csv", ".draft.tmp"])
    assert main(["run", *TINY, "--out", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: the run folder (--out) {folder} holds files studylib did not write (.draft.tmp, "
                          "config.json, history.csv, predictions.csv, splits.csv)") and "--overwrite" in err
    assert unchanged(folder, saved) and not (folder / MARKER).exists()
    assert main(["run", *TINY, "--out", str(folder), "--overwrite"]) == 0  # said so: studylib's names are replaced
    assert (folder / "metrics.json").is_file() and (folder / MARKER).is_file()


def test_grid_and_report_keep_a_users_files_of_their_names(tmp_path, capsys):
    grid = tmp_path / "g.yaml"
    grid.write_text(GRID)
    folder = tmp_path / "mine"
    saved = user_files(folder, ["results.csv", "grid.yaml", "report.md"])
    assert main(["grid", str(grid), "--out", str(folder), "--engine", "inline"]) == 2
    assert "holds files studylib did not write (results.csv, report.md, grid.yaml)" in capsys.readouterr().err
    assert unchanged(folder, saved) and not (folder / "runs").exists()

    ours = tmp_path / "grid"
    assert main(["grid", str(grid), "--out", str(ours), "--engine", "inline"]) == 0
    notes = user_files(ours, ["report.md"])  # a user's notes where the report goes
    assert main(["report", str(ours)]) == 2
    assert "the report folder" in capsys.readouterr().err and unchanged(ours, notes)
    assert main(["report", str(ours), "--overwrite"]) == 0
    assert (ours / "report.md").read_text().startswith("# studylib report")
    assert main(["report", str(ours)]) == 0  # its own report: written again without a word


def test_a_grid_of_an_older_studylib_is_still_its_own(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(GRID)
    assert main(["grid", str(grid), "--out", str(tmp_path / "old"), "--engine", "inline"]) == 0
    for marker in (tmp_path / "old").rglob(MARKER):
        marker.unlink()  # as an older version left it
    assert main(["grid", str(grid), "--out", str(tmp_path / "old"), "--engine", "inline"]) == 0
    assert main(["report", str(tmp_path / "old")]) == 0


def test_resume_state_set_aside_twice_keeps_both(tmp_path, monkeypatch):
    undo = stop_training_at(monkeypatch, 2)
    for lr in (0.01, 0.02, 0.03):  # three configs resumed in turn into one folder
        with pytest.raises(Preempted):
            run(tiny_config(max_epochs=3, lr=lr), tmp_path, resume=True)
    undo()
    kept = sorted(p.name for p in tmp_path.glob("resume-set-aside*.pt"))
    assert kept == ["resume-set-aside-2.pt", "resume-set-aside.pt"]
