"""Bad input, as a hostile new user would give it: every case ends in one readable line and the
right exit status, names the problem, and loses nothing that was already on disk.

Each case sets up files in a temporary folder, runs the command line in this process, and checks
(1) the exit status, (2) that the message matches, (3) that there is no traceback and the error
is one line, (4) that every file present before the command is still there, byte for byte.
"""
from __future__ import annotations

import errno
import os
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
from conftest import write_image_folder
from PIL import Image

from studylib.cli import main
from studylib.core import runfiles
from studylib.training.rundir import RunDir

TINY = ["-s", "image_size=16", "-s", "synthetic_size=120", "-s", "max_epochs=1", "-s", "quiet=true",
        "-s", "device=cpu", "-s", "batch_size=32"]


@dataclass
class Case:
    id: str
    argv: list[str]  # "{tmp}" stands for the case's folder
    code: int
    message: str  # regex searched in stderr + stdout
    setup: Callable[[Path], None] = lambda tmp: None


def run_flags(*pairs: str) -> list[str]:
    return ["run", *TINY, *[x for p in pairs for x in ("-s", p)], "--out", "{tmp}/out"]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# --- data makers --------------------------------------------------------------------------------

def csv_folder(tmp: Path, rows: list[dict] | None = None, with_suffix: bool = True) -> None:
    """img/{a,b}/x*.png and manifest.csv listing them (rows replace the listing when given)."""
    root = write_image_folder(tmp / "img", classes=("a", "b"), per_class=20, splits=())
    if rows is None:
        rows = [{"path": str(p.relative_to(tmp) if with_suffix else p.relative_to(tmp).with_suffix("")),
                 "label": p.parent.name} for p in sorted(root.rglob("*.png"))]
    pd.DataFrame(rows).to_csv(tmp / "manifest.csv", index=False)


def ambiguous_stems(tmp: Path) -> None:
    """The same file name in both class folders, listed without suffix: a label-blind lookup."""
    write_image_folder(tmp / "img", classes=("a", "b"), per_class=20, splits=())
    for path in (tmp / "img" / "a").glob("*.png"):
        (tmp / "img" / "b" / path.name).write_bytes(path.read_bytes())
    rows = [{"path": f"img/{cls}/{p.stem}"[len(f"img/{cls}/"):], "label": cls}
            for cls in ("a", "b") for p in sorted((tmp / "img" / cls).glob("*.png"))]
    pd.DataFrame(rows).to_csv(tmp / "manifest.csv", index=False)


def edited_manifest(edit: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        csv_folder(tmp)
        frame = pd.read_csv(tmp / "manifest.csv", dtype=str, keep_default_na=False)
        edit(frame).to_csv(tmp / "manifest.csv", index=False)
    return setup


def npz(tmp: Path, train_images: int = 40, train_labels: int = 40, low: int = 0) -> None:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n_img, n_lab in (("train", train_images, train_labels), ("val", 20, 20), ("test", 20, 20)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n_img, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(low, 2, (n_lab, 1))
    np.savez(tmp / "data.npz", **arrays)


def blank_lines_and_an_empty_label(tmp: Path) -> None:
    """Line 2 and 4 blank, line 5 (the second data row) without its label."""
    csv_folder(tmp)
    header, first, second, *rest = (tmp / "manifest.csv").read_text().splitlines()
    lines = [header, "", first, "", second.rsplit(",", 1)[0] + ",", *rest]
    write(tmp / "manifest.csv", "\n".join(lines) + "\n")


def one_class_folder(tmp: Path) -> None:
    write_image_folder(tmp / "data", classes=("only",), per_class=20, splits=())


def bomb_folder(tmp: Path) -> None:
    """A class folder with one small PNG whose header claims 100,000 x 100,000 pixels."""
    write_image_folder(tmp / "data", classes=("a", "b"), per_class=20, splits=())
    path = tmp / "data" / "a" / "bomb.png"
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = data[12:29]  # b"IHDR" + width, height, depth, colour, compression, filter, interlace
    ihdr[4:12] = struct.pack(">II", 100_000, 100_000)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    path.write_bytes(bytes(data))


def run_with_saved_epochs(tmp: Path) -> None:
    out = RunDir(tmp / "out")
    out.path.mkdir(parents=True)
    (out.path / runfiles.RESUME).write_bytes(b"saved epochs")
    write(out.path / "config.json", '{"strategy": "ft", "dataset": "synthetic", "backbone": "tinycnn"}')
    out.mark("running", pid=1, host="elsewhere", saved_epochs=2)


def finished_run(tmp: Path) -> None:
    assert main(["run", *TINY, "--out", str(tmp / "out")]) == 0


def corrupt_metrics_folder(tmp: Path) -> None:
    finished_run(tmp)
    (tmp / "out" / "metrics.json").write_text("{ torn")


# --- the cases ------------------------------------------------------------------------------------

GRID_HEAD = "dataset: synthetic\nsynthetic_size: 120\nimage_size: 16\nmax_epochs: 1\nquiet: true\n"

CASES = [
    # numbers out of range: refused on construction, the message gives the range
    Case("steps-negative", run_flags("max_steps_per_epoch=-1"), 2, r"max_steps_per_epoch=-1 is out of range"),
    Case("dlr-negative", run_flags("dlr_decay=-1"), 2, r"dlr_decay=-1.0 is out of range; set dlr_decay to above 0"),
    Case("patience-zero", run_flags("patience=0"), 2, r"patience=0 is out of range.*at least 1"),
    Case("patience-negative", run_flags("patience=-1"), 2, r"patience=-1 is out of range"),
    Case("weight-decay-negative", run_flags("weight_decay=-0.1"), 2, r"weight_decay=-0.1 is out of range"),
    Case("near-dup-bits-negative", run_flags("near_duplicate_bits=-2"), 2, r"near_duplicate_bits=-2 is out of range"),
    Case("synthetic-size-5", run_flags("synthetic_size=5"), 2, r"synthetic_size=5 is out of range.*at least 40"),
    Case("synthetic-size-0", run_flags("synthetic_size=0"), 2, r"synthetic_size=0 is out of range"),
    Case("image-size-4", run_flags("image_size=4"), 2, r"image_size=4 is out of range.*from 8 to 2048"),
    Case("lr-nan", run_flags("lr=nan"), 2, r"lr=nan is not a number"),
    Case("seed-negative", run_flags("seed=-1"), 2, r"seed=-1 is out of range"),
    Case("momentum-1.5", run_flags("momentum=1.5"), 2, r"momentum=1.5 is out of range"),
    Case("val-fraction-0.7", run_flags("val_fraction=0.7"), 2, r"val_fraction=0.7 is out of range"),
    Case("resume-every-minus-5", run_flags("resume_every_s=-5"), 2, r"resume_every_s=-5.0 is out of range"),
    Case("bad-regex", run_flags("group_pattern=(patient"), 2, r"group_pattern '\(patient' is not a valid regular"),
    Case("bad-sha256", run_flags("weights_sha256=abc"), 2, r"weights_sha256 must be 64 hexadecimal digits"),
    Case("unknown-strategy", run_flags("strategy=fine_tune"), 2, r"unknown strategy 'fine_tune'"),
    Case("wrong-type", run_flags("lr=fast"), 2, r"lr must be float, got 'fast'"),
    Case("unknown-key", ["run", "-s", "learning_rate=1"], 2, r"unknown config key 'learning_rate'"),
    Case("too-small-for-vgg", run_flags("backbone=vgg19"), 2, r"image_size=16 is too small for vgg19.*at least 32"),
    # YAML files: grids and --params
    Case("grid-empty", ["grid", "{tmp}/g.yaml"], 2, r"g.yaml sets nothing", lambda t: write(t / "g.yaml", "")),
    Case("grid-comments-only", ["grid", "{tmp}/g.yaml"], 2, r"g.yaml sets nothing",
         lambda t: write(t / "g.yaml", "# strategy: [ft]\n# lr: 1e-3\n")),
    Case("grid-empty-list", ["grid", "{tmp}/g.yaml", "--out", "{tmp}/g"], 2,
         r"line 6: strategy is an empty list", lambda t: write(t / "g.yaml", GRID_HEAD + "strategy: []\n")),
    Case("grid-per-strategy-typo", ["grid", "{tmp}/g.yaml"], 2, r"unknown strategy 'auto_rng'. Did you mean 'auto_rgn'",
         lambda t: write(t / "g.yaml", GRID_HEAD + "strategy: [ft]\nper_strategy:\n  auto_rng: {lr: 0.1}\n")),
    Case("grid-per-strategy-duplicate", ["grid", "{tmp}/g.yaml"], 2, r"'lr' is set twice",
         lambda t: write(t / "g.yaml", GRID_HEAD + "per_strategy:\n  auto_rgn:\n    lr: 0.1\n    lr: 0.01\n")),
    Case("grid-per-strategy-list", ["grid", "{tmp}/g.yaml"], 2, r"per_strategy must map strategy names",
         lambda t: write(t / "g.yaml", GRID_HEAD + "per_strategy: [auto_rgn]\n")),
    Case("grid-malformed", ["grid", "{tmp}/g.yaml"], 2, r"g.yaml line \d+, column \d+: malformed YAML",
         lambda t: write(t / "g.yaml", "strategy: [ft, lp\n")),
    Case("grid-missing-file", ["grid", "{tmp}/nowhere.yaml"], 2, r"params file .*nowhere.yaml does not exist"),
    Case("params-duplicate-key", ["run", "--params", "{tmp}/p.yaml"], 2, r"'lr' is set twice \(lines 1 and 2\)",
         lambda t: write(t / "p.yaml", "lr: 0.1\nlr: 0.01\n")),
    Case("params-empty", ["run", "--params", "{tmp}/p.yaml"], 2, r"p.yaml sets nothing",
         lambda t: write(t / "p.yaml", "# nothing\n")),
    Case("params-binary", ["run", "--params", "{tmp}/p.yaml"], 2, r"p.yaml is not a text file",
         lambda t: (t / "p.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")),
    Case("grid-per-strategy-unused", ["grid", "{tmp}/g.yaml"], 2,
         r"per_strategy sets lp_ft, which this grid never runs",
         lambda t: write(t / "g.yaml", GRID_HEAD + "strategy: [ft]\nper_strategy:\n  lp_ft: {lr: 0.1}\n")),
    Case("workers-huge", run_flags("workers=1000000"), 2, r"workers=1000000 is out of range"),
    # data whose labels could misalign, or that cannot train
    Case("npz-is-another-zip", run_flags("dataset=npz", "data_root={tmp}/data.npz"), 2, r"data.npz lacks keys",
         lambda t: zipfile.ZipFile(t / "data.npz", "w").close()),
    Case("csv-blank-lines-keep-line-numbers", run_flags("dataset=csv", "data_root={tmp}/manifest.csv"), 2,
         r"1 rows have an empty label \(lines 5\)", blank_lines_and_an_empty_label),
    Case("csv-ambiguous-stems", run_flags("dataset=csv", "data_root={tmp}/manifest.csv"), 2,
         r"paths without a suffix match several files.*line 2", ambiguous_stems),
    Case("csv-empty-label", run_flags("dataset=csv", "data_root={tmp}/manifest.csv"), 2,
         r"2 rows have an empty label \(lines 3, 5\)",
         edited_manifest(lambda f: f.assign(label=[("" if i in (1, 3) else v) for i, v in enumerate(f.label)]))),
    Case("csv-conflicting-labels", run_flags("dataset=csv", "data_root={tmp}/manifest.csv"), 2,
         r"1 images are listed with two different labels \(.* is 'a' on line 2 and 'b' on line 42\)",
         edited_manifest(lambda f: pd.concat([f, f.head(1).assign(label="b")], ignore_index=True))),
    Case("csv-path-escapes", run_flags("dataset=csv", "data_root={tmp}/manifest.csv"), 2,
         r"line 42: path '../../etc/passwd' leaves image_root",
         edited_manifest(lambda f: pd.concat([f, pd.DataFrame([{"path": "../../etc/passwd", "label": "a"}])],
                                             ignore_index=True))),
    Case("csv-missing-column", run_flags("dataset=csv", "data_root={tmp}/manifest.csv", "label_column=dx"), 2,
         r"has no label column 'dx'", csv_folder),
    Case("npz-misaligned", run_flags("dataset=npz", "data_root={tmp}/data.npz"), 2,
         r"train_images holds 200 images but train_labels 150 labels", lambda t: npz(t, 200, 150)),
    Case("npz-negative-labels", run_flags("dataset=npz", "data_root={tmp}/data.npz"), 2, r"negative labels",
         lambda t: npz(t, low=-1)),
    Case("npz-is-text", run_flags("dataset=npz", "data_root={tmp}/data.npz"), 2, r"data.npz is not a .npz archive",
         lambda t: write(t / "data.npz", "not numpy\n")),
    Case("one-class", run_flags("dataset=folder", "data_root={tmp}/data"), 2, r"needs at least two classes",
         one_class_folder),
    Case("missing-data-folder", run_flags("dataset=folder", "data_root={tmp}/nowhere"), 2,
         r"data folder .*nowhere does not exist"),
    Case("decompression-bomb", run_flags("dataset=folder", "data_root={tmp}/data"), 2,
         r"bomb.png: cannot read image .*too many pixels to decode safely.*skip_bad_images=true", bomb_folder),
    Case("decompression-bomb-skipped", ["data", "-s", "dataset=folder", "-s", "data_root={tmp}/data", "-s",
                                        "skip_bad_images=true", "-s", "quiet=true"], 0,
         r"skipped files: 1\n  a/bomb.png: cannot read image", bomb_folder),
    # checkpoints
    Case("checkpoint-is-text", run_flags("weights={tmp}/model.pt"), 2, r"model.pt is not a readable PyTorch checkpoint",
         lambda t: write(t / "model.pt", "hello\n")),
    Case("checkpoint-missing", run_flags("weights={tmp}/model.pt"), 2, r"checkpoint file .*model.pt does not exist"),
    # output folders and run state
    Case("out-is-a-file", ["run", *TINY, "--out", "{tmp}/taken"], 2, r"taken is a file, not a folder",
         lambda t: write(t / "taken", "mine\n")),
    Case("out-below-a-file", ["run", *TINY, "--out", "{tmp}/taken/run"], 2, r"lies below .*taken, which is a file",
         lambda t: write(t / "taken", "mine\n")),
    Case("grid-out-is-a-file", ["grid", "{tmp}/g.yaml", "--out", "{tmp}/taken"], 2, r"taken is a file, not a folder",
         lambda t: (write(t / "taken", "mine\n"), write(t / "g.yaml", GRID_HEAD + "strategy: ft\n"))),
    Case("saved-epochs-need-resume", ["run", *TINY, "--out", "{tmp}/out"], 2,
         r"holds the saved epochs of an interrupted run.*--resume.*--overwrite", run_with_saved_epochs),
    Case("finished-run-needs-overwrite", ["run", *TINY, "--out", "{tmp}/out"], 2,
         r"already holds a finished run.*--overwrite", finished_run),
    Case("report-missing-folder", ["report", "{tmp}/nowhere"], 2, r"nowhere is not a folder"),
    Case("report-empty-folder", ["report", "{tmp}/empty"], 2, r"holds no run folders",
         lambda t: (t / "empty").mkdir()),
    Case("report-status-of-wrong-shape", ["report", "{tmp}"], 0, r"(?s)1 runs, 0 finished.*corrupt",
         lambda t: (write(t / "r" / "config.json", '{"strategy": "ft"}'), write(t / "r" / "status.json", "{}"))),
    Case("report-config-of-wrong-shape", ["report", "{tmp}"], 0, r"(?s)1 runs, 0 finished.*corrupt",
         lambda t: write(t / "r" / "config.json", "[1]")),
    Case("report-corrupt-run", ["report", "{tmp}"], 0, r"(?s)1 runs, 0 finished.*out +ft +corrupt",
         corrupt_metrics_folder),
]


def snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != ".lock"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_line_and_loses_nothing(case: Case, tmp_path, capsys):
    case.setup(tmp_path)
    write(tmp_path / "precious" / "notes.txt", "a user's own file\n")
    before = snapshot(tmp_path)
    capsys.readouterr()
    code = main([arg.replace("{tmp}", str(tmp_path)) for arg in case.argv])
    out, err = capsys.readouterr()
    assert code == case.code, (out, err)
    assert re.search(case.message, err + out), (out, err)
    assert "Traceback" not in err
    if code:
        assert err.startswith("error: ") and err.count("\n") == 1, err
    for path, data in before.items():  # nothing that was there is gone or changed
        if path.name != "status.json" or case.code:
            assert path.is_file() and path.read_bytes() == data, path


def test_a_grid_reruns_a_run_whose_metrics_are_corrupt(tmp_path, capsys):
    write(tmp_path / "g.yaml", GRID_HEAD + "strategy: ft\ndevice: cpu\nbatch_size: 32\n")
    assert main(["grid", str(tmp_path / "g.yaml"), "--out", str(tmp_path / "g"), "--engine", "inline"]) == 0
    [metrics] = (tmp_path / "g").glob("runs/*/metrics.json")
    metrics.write_text("{}")
    assert main(["grid", str(tmp_path / "g.yaml"), "--out", str(tmp_path / "g"), "--dry-run"]) == 0
    assert re.search(r"ft +0.001 +684 +run\n\n0 finished, 0 to resume, 1 to run", capsys.readouterr().out)
    assert main(["grid", str(tmp_path / "g.yaml"), "--out", str(tmp_path / "g"), "--engine", "inline"]) == 0
    assert RunDir(metrics.parent).status()["status"] == "finished"


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback_before_or_after_the_command(where):
    from studylib.core.config import ConfigError
    argv = ["--debug", "run", "-s", "patience=0"] if where == "before" else ["run", "--debug", "-s", "patience=0"]
    with pytest.raises(ConfigError, match="out of range"):
        main(argv)


def test_an_unexpected_error_is_one_line_that_points_to_debug(monkeypatch, capsys):
    import studylib.cli as cli
    monkeypatch.setattr(cli, "cmd_config", lambda args: {}["boom"])
    assert main(["config"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unexpected KeyError") and "--debug" in err and err.count("\n") == 1


def test_a_full_disk_during_a_run_is_one_line_and_the_run_reads_interrupted(tmp_path, monkeypatch, capsys):
    """ENOSPC while writing results, and again while recording the failure: no chained traceback,
    and status.json's stale "running" is reported as interrupted (its lock is free)."""
    import studylib.training.rundir as rundir_module
    import studylib.training.runner as runner_module

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "predictions.csv"))

    monkeypatch.setattr(runner_module, "write_predictions", full)
    real_write = rundir_module.write_json
    monkeypatch.setattr(rundir_module, "write_json",
                        lambda path, data: full() if data.get("status") == "failed" else real_write(path, data))
    assert main(["run", *TINY, "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the disk is full while writing") and err.count("\n") == 1
    status = RunDir(tmp_path / "out").status()
    assert status["status"] == "interrupted" and "1 epoch saved" in status["reason"]  # the last epoch is kept


def test_a_full_disk_is_found_before_the_cache_is_written(tmp_path, monkeypatch, capsys):
    import shutil as shutil_module

    import studylib.core.fileio as fileio
    write_image_folder(tmp_path / "data", classes=("a", "b"), per_class=20, splits=())
    usage = shutil_module.disk_usage(tmp_path)
    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda path: usage._replace(free=1000))
    code = main(["data", "-s", "dataset=folder", "-s", f"data_root={tmp_path / 'data'}", "-s", "quiet=true"])
    err = capsys.readouterr().err
    assert code == 1 and re.search(r"the prepared-image cache needs \d+ MB in .*, "
                                   r"which has 0 MB free; .*STUDYLIB_CACHE", err), err
    assert not list(Path(os.environ["STUDYLIB_CACHE"]).glob(".*.tmp.npy"))  # nothing half-written is left


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_is_one_line(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["run", *TINY, "--out", str(locked / "run")]) == 2
    finally:
        locked.chmod(0o700)
    assert "no permission to write" in capsys.readouterr().err


def test_an_interrupted_run_says_so_with_its_saved_epochs(tmp_path, capsys):
    run_with_saved_epochs(tmp_path)
    status = RunDir(tmp_path / "out").status()
    assert status["status"] == "interrupted"
    assert "2 epochs saved; use --resume" in status["reason"] and "pid 1 on elsewhere" in status["reason"]
    assert main(["report", str(tmp_path)]) == 0
    assert "interrupted" in capsys.readouterr().out


def test_a_killed_cache_preparation_leaves_nothing_behind(tmp_path):
    from studylib.data.cache import prepare_files
    cache = tmp_path / "cache"
    cache.mkdir()
    stale = cache / ".0123456789abcdef01234567.99999.tmp.npy"
    stale.write_bytes(b"\0" * 1024)
    files = sorted(write_image_folder(tmp_path / "data", per_class=2, splits=()).rglob("*.png"))
    prepare_files(files, 16, cache_dir=cache, workers=1, progress=False)
    assert not stale.exists()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_respect_the_umask(tmp_path, umask, mode):
    from studylib.core.fileio import write_json
    old = os.umask(umask)
    try:
        write_json(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == mode


def test_symlinks_out_of_the_root_are_followed_by_both_loaders_with_a_note(tmp_path):
    from conftest import tiny_config

    from studylib.data.datasets import load_dataset
    elsewhere = write_image_folder(tmp_path / "elsewhere", classes=("a", "b"), per_class=20, splits=())
    root = tmp_path / "root"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for path in (elsewhere / cls).glob("*.png"):
            (root / cls / path.name).symlink_to(path)
    rows = [{"path": f"{p.parent.name}/{p.name}", "label": p.parent.name} for p in sorted(root.rglob("*.png"))]
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    for dataset, data_root in (("folder", root), ("csv", root / "manifest.csv")):
        bundle = load_dataset(tiny_config(dataset=dataset, data_root=str(data_root)), progress=False)
        assert len(bundle.labels) == 40
        assert any("40 files are symlinks to places outside" in note for note in bundle.report["notes"]), dataset


def test_a_symlinked_sub_folder_is_followed_like_a_symlinked_file(tmp_path):
    from conftest import tiny_config

    from studylib.data.datasets import load_dataset
    write_image_folder(tmp_path / "root", classes=("a", "b"), per_class=20, splits=())
    extra = write_image_folder(tmp_path / "extra", classes=("a",), per_class=5, splits=(), seed=3)
    (tmp_path / "root" / "a" / "linked").symlink_to(extra / "a")
    (tmp_path / "root" / "a" / "loop").symlink_to(tmp_path / "root" / "a")  # a cycle ends
    bundle = load_dataset(tiny_config(dataset="folder", data_root=str(tmp_path / "root")), progress=False)
    assert len(bundle.labels) == 45 and sum("linked/" in i for i in bundle.ids) == 5


def test_a_notebook_error_after_the_run_finished_is_shown_not_hidden(tmp_path):
    from studylib.study.grid import _record_failure
    from studylib.study.results import collect
    assert main(["run", *TINY, "--out", str(tmp_path / "r")]) == 0

    class CellError(Exception):
        ename, evalue, exec_count = "ValueError", "Mixing dicts with non-Series", 9

    _record_failure(RunDir(tmp_path / "r"), CellError())
    status = RunDir(tmp_path / "r").status()
    assert status["status"] == "finished" and "notebook cell 9: ValueError: Mixing dicts" in status["notebook_error"]
    assert "Mixing dicts" in collect(tmp_path).reason.iloc[0]


def test_labels_with_spaces_are_one_class_with_a_note(tmp_path):
    from conftest import tiny_config

    from studylib.data.datasets import load_dataset
    edited_manifest(lambda f: f.assign(label=[v + " " if i % 2 else v for i, v in enumerate(f.label)]))(tmp_path)
    bundle = load_dataset(tiny_config(dataset="csv", data_root=str(tmp_path / "manifest.csv")), progress=False)
    assert bundle.classes == ["a", "b"]
    assert any("20 labels had spaces around them" in note for note in bundle.report["notes"])


def test_a_suffixless_path_with_its_folder_is_not_ambiguous(tmp_path):
    from conftest import tiny_config

    from studylib.data.datasets import load_dataset
    ambiguous_stems(tmp_path)
    frame = pd.read_csv(tmp_path / "manifest.csv")
    frame["path"] = [f"img/{label}/{p}" for p, label in zip(frame.path, frame.label)]
    frame.to_csv(tmp_path / "manifest.csv", index=False)
    bundle = load_dataset(tiny_config(dataset="csv", data_root=str(tmp_path / "manifest.csv")), progress=False)
    assert all(i.split("/")[1] == bundle.classes[k] for i, k in zip(bundle.ids, bundle.labels))




def _die(job):
    os._exit(1)  # a decoding worker killed (by the OOM killer, say)


@pytest.mark.slow
def test_a_dead_cache_worker_is_one_line_and_leaves_no_temporary(tmp_path, monkeypatch, capsys):
    import studylib.data.cache as cache
    write_image_folder(tmp_path / "data", classes=("a", "b"), per_class=20, splits=())
    monkeypatch.setattr(cache, "_decode_chunk", _die)
    code = main(["data", "-s", "dataset=folder", "-s", f"data_root={tmp_path / 'data'}", "-s", "workers=2",
                 "-s", "quiet=true"])
    err = capsys.readouterr().err
    assert code == 1 and "a worker process preparing images died" in err and err.count("\n") == 1, err
    assert not list(Path(os.environ["STUDYLIB_CACHE"]).glob(".*.tmp.npy"))
