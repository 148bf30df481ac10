"""Inputs a careless or hostile user tried (issue 29): each is refused with its fix, or handled, never
silently wrong, never a hang."""
from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config, write_image_folder

from studylib.core.config import ConfigError, RunConfig
from studylib.data.datasets import load_dataset
from studylib.data.images import LayoutError
from studylib.data.loaders import DataError
from studylib.study.grid import load_grid


def load(root, **changes):
    return load_dataset(tiny_config(dataset="folder", data_root=str(root), **changes), progress=False)


def test_a_link_to_a_parent_folder_inside_a_class_is_refused(tmp_path):
    root = write_image_folder(tmp_path / "data", classes=("A", "B"), per_class=8, splits=())
    os.symlink("..", root / "A" / "up")  # would read B's images again as A
    with pytest.raises(LayoutError, match=r"A/up is a link to .*data, a folder at or above .*Remove the link"):
        load(root)


def test_class_folders_beside_split_folders_and_two_folders_for_one_split_are_refused(tmp_path):
    root = write_image_folder(tmp_path / "mixed", per_class=8)
    shutil.copytree(root / "train" / "a", root / "stray")
    with pytest.raises(DataError, match=r"mixes split folders \(test, train\) with other folders \(stray\)"):
        load(root)
    twice = write_image_folder(tmp_path / "twice", per_class=8, splits=("train", "val", "test"))
    shutil.copytree(twice / "val", twice / "validation")
    with pytest.raises(DataError, match=r"two folders for the val split \(val/ and validation/\)"):
        load(twice)


def test_a_fifo_or_a_device_named_like_an_image_is_listed_never_read(tmp_path):
    root = write_image_folder(tmp_path / "data", per_class=8, splits=())
    os.mkfifo(root / "a" / "zz.png")
    os.symlink("/dev/zero", root / "b" / "zero.png")
    os.symlink(root / "nowhere.png", root / "c" / "dangling.png")
    started = time.monotonic()
    bundle = load(root)
    assert time.monotonic() - started < 60  # reading the FIFO or /dev/zero would never end
    skipped = {s["file"]: s["reason"] for s in bundle.report["skipped"]}
    assert set(skipped) == {"a/zz.png", "b/zero.png", "c/dangling.png"} and len(bundle.labels) == 24
    assert all("not a regular file" in reason for reason in skipped.values())


def test_blank_group_cells_are_each_their_own_group(tmp_path):
    root = write_image_folder(tmp_path / "img", per_class=20, splits=())
    files = sorted(root.rglob("*.png"))
    groups = [f"p{i // 2}" if i < 15 else "" for i in range(len(files))]  # 45 of 60 blank
    path = tmp_path / "m.csv"
    pd.DataFrame({"path": [str(f.relative_to(tmp_path)) for f in files], "label": [f.parent.name for f in files],
                  "patient": groups}).to_csv(path, index=False)
    bundle = load_dataset(tiny_config(dataset="csv", data_root=str(path), group_column="patient"), progress=False)
    assert len(set(bundle.groups)) == 8 + 45 and any("45 rows have an empty patient" in n
                                                     for n in bundle.report["notes"])
    assert min((bundle.split == s).sum() for s in ("val", "test")) >= 6  # not all blanks in one split


def test_npz_with_nan_pixels_or_string_labels_is_refused(tmp_path):
    images = np.random.default_rng(0).random((10, 8, 8)).astype(np.float32)
    labels = np.arange(10) % 2
    images[3, 2, 2] = np.nan
    np.savez(tmp_path / "nan.npz", **{f"{s}_images": images for s in ("train", "val", "test")},
             **{f"{s}_labels": labels for s in ("train", "val", "test")})
    with pytest.raises(DataError, match=r"1 of train_images hold NaN or infinite pixels \(the first: index 3\)"):
        load_dataset(tiny_config(dataset="npz", data_root=str(tmp_path / "nan.npz")), progress=False)
    np.savez(tmp_path / "str.npz", **{f"{s}_images": images[:2] * 0 for s in ("train", "val", "test")},
             **{f"{s}_labels": np.array(["cat", "dog"]) for s in ("train", "val", "test")})
    with pytest.raises(DataError, match=r"labels must be class indices .*map the class names to indices"):
        load_dataset(tiny_config(dataset="npz", data_root=str(tmp_path / "str.npz")), progress=False)


def test_a_splits_file_without_an_id_column_and_a_huge_image_size_are_refused(tmp_path):
    (tmp_path / "s.csv").write_text("name,split\nx,train\n")
    with pytest.raises(ValueError, match=r"splits_file .* not id and split"):
        load_dataset(tiny_config(splits_file=str(tmp_path / "s.csv")), progress=False)
    with pytest.raises(ConfigError, match=r"image_size=8192 is out of range; set image_size to from 8 to 2048"):
        RunConfig(image_size=8192)


def test_per_strategy_cannot_change_the_strategy(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("strategy: [ft, lp_ft]\nper_strategy:\n  lp_ft: {strategy: lp}\n")
    with pytest.raises(ConfigError, match=r"per_strategy.lp_ft sets strategy itself"):
        load_grid(path)


@pytest.mark.parametrize("key", ["seed", "name"])
def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path, key):
    """Nine lists of nine lists ... (9^10 items when spelled out) cost nothing to load: YAML shares them.
    Spelling the value out in a message, or str() of it as a folder name, would take hours."""
    levels = ["&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    path = tmp_path / "g.yaml"
    path.write_text(f"description: [{', '.join(levels)}]\n{key}: *a9\nstrategy: ft\n")
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        load_grid(path)
    assert time.monotonic() - started < 5 and len(str(caught.value)) < 400


@pytest.mark.parametrize("damage, reason", [
    (lambda run: _edit(run / "metrics.json", lambda m: m.update(test={})), "no test balanced_accuracy"),
    (lambda run: _edit(run / "config.json", lambda c: c.pop("strategy")), "config.json lacks strategy"),
    (lambda run: _edit(run / "metrics.json", lambda m: m["test"].update(balanced_accuracy="abc")),
     "is 'abc', not a number"),
    (lambda run: _edit(run / "metrics.json", lambda m: m["test"].update(balanced_accuracy=0.99)),
     "says test balanced accuracy 0.9900, its predictions.csv gives"),
], ids=["empty-test", "no-strategy", "not-a-number", "edited-score"])
def test_a_damaged_run_beside_finished_ones_is_listed_and_left_out(tmp_path, damage, reason):
    from crafted import case

    from studylib.study.analysis import Study
    from studylib.study.results import collect
    from studylib.views.report import write_report

    case(tmp_path, "tinycnn", 0.80, (0.03, 0.032, 0.029))
    victim = sorted((tmp_path / "runs").iterdir())[0]
    damage(victim)
    table = collect(tmp_path)
    row = table.set_index("path").loc[str(victim)]
    assert row.status == "damaged" and reason in row.reason
    study = Study(tmp_path, n_boot=20)
    assert str(victim) not in set(study.done.path) and len(study.done) == 5
    markdown = write_report(tmp_path, n_boot=20)[0].read_text()
    assert "Runs that did not finish" in markdown and reason.split(" ")[0] in markdown


def _edit(path, change):
    import json
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_a_stray_config_json_in_a_hidden_folder_is_not_a_run(tmp_path):
    from crafted import case

    from studylib.study.results import find_runs
    case(tmp_path, "tinycnn", 0.80, (0.03,), seeds=(684,))
    (tmp_path / ".vscode").mkdir()
    (tmp_path / ".vscode" / "config.json").write_text('{"editor": 1}')
    assert len(find_runs(tmp_path)) == 2


def test_a_hash_index_with_wrong_entries_is_not_trusted(tmp_path):
    import json

    from studylib.data import hashindex
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 10)
    (tmp_path / hashindex.INDEX).write_text(json.dumps({"version": hashindex.INDEX_VERSION,
                                                        "files": {str(path): "garbage", "x": [1, 2]}}))
    assert hashindex.hash_files([path], tmp_path, progress=False) == [hashindex.sha256_file(path)]


def test_a_grid_of_a_million_runs_is_counted_and_refused_at_once(tmp_path, capsys):
    from studylib.cli import main
    from studylib.study.grid import grid_size
    values = ", ".join(f"{v}e-4" for v in range(1, 101))
    path = tmp_path / "g.yaml"
    path.write_text(f"lr: [{values}]\nl2sp_alpha: [{values}]\nsp_beta: [{values}]\nstrategy: l2_sp\n")
    started = time.monotonic()
    assert main(["grid", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    assert time.monotonic() - started < 5
    assert "expands to 1,000,000 runs (100 x 100 x 100 values)" in capsys.readouterr().err
    assert grid_size({"strategy": ["ft", "auto_rgn"], "seed": [1, 2, 3]}, {"auto_rgn": {"lr": [1e-2, 1e-3]}}) == 9


@pytest.mark.parametrize("damage", ["zeroed-tail", "empty", "truncated"])
def test_a_damaged_cache_entry_is_rebuilt_not_reused(tmp_path, damage, capsys):
    from studylib.data.cache import prepare_files
    root = write_image_folder(tmp_path / "data", per_class=20, splits=(), size=40)
    paths = sorted(root.rglob("*.png"))
    cache = tmp_path / "cache"
    first = prepare_files(paths, 48, cache, progress=False)
    expected = np.array(first.images)
    npy = cache / f"{first.key}.npy"
    del first
    data = npy.read_bytes()
    npy.write_bytes({"zeroed-tail": data[:-20_000] + bytes(20_000), "empty": b"", "truncated": data[:-100]}[damage])
    again = prepare_files(paths, 48, cache, progress=False)
    assert not again.reused and "rebuilding it" in capsys.readouterr().out
    np.testing.assert_array_equal(np.array(again.images), expected)
    assert prepare_files(paths, 48, cache, progress=False).reused  # and the rebuilt entry is trusted


def test_pretrain_reuses_only_a_checkpoint_of_the_same_recipe(tmp_path, capsys):
    from studylib.cli import main
    out = tmp_path / "source.pt"
    def small(epochs):
        return ["pretrain", "--out", str(out), "--size", "200", "--epochs", epochs, "--image-size", "16", "--quiet"]
    assert main(small("1")) == 0
    stamp = out.stat().st_mtime_ns
    assert main(small("1")) == 0 and out.stat().st_mtime_ns == stamp  # the same recipe: reused
    assert main(small("2")) == 2
    assert "was pretrained with another recipe: max_epochs=1 (asked: 2)" in capsys.readouterr().err
    text = tmp_path / "notes.pt"
    text.write_text("not weights")
    assert main(["pretrain", "--out", str(text), "--size", "200", "--epochs", "1", "--quiet"]) == 2
    assert "is not a checkpoint studylib can load" in capsys.readouterr().err and text.read_text() == "not weights"


@pytest.mark.slow  # seconds in-process: out of the quick suite
def test_a_garbage_representations_csv_costs_that_run_its_feature_change_not_the_report(tmp_path):
    from crafted import case

    from studylib.views.report import write_report
    case(tmp_path, "tinycnn", 0.80, (0.03, 0.032, 0.029))
    for run in (tmp_path / "runs").iterdir():
        (run / "representations.csv").write_text("block,cka\nstem,abc\n\x00\x01garbage")
    markdown, page = write_report(tmp_path, n_boot=20)
    assert page.is_file() and "Feature change" not in markdown.read_text()


def test_one_file_under_two_spellings_with_two_labels_is_refused(tmp_path):
    root = write_image_folder(tmp_path / "img", per_class=12, splits=())
    os.symlink(root / "a", tmp_path / "alias")  # the same files reached through another folder name
    files = sorted(root.rglob("*.png"))
    rows = [(str(f.relative_to(tmp_path)), f.parent.name) for f in files]
    rows.append((f"alias/{files[0].name}", "b"))  # files[0] is in a/, listed again through the alias as b
    path = tmp_path / "m.csv"
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"1 images are listed with two different labels "
                                        r".*'a' on line 2 and 'b' on line 38"):
        load_dataset(tiny_config(dataset="csv", data_root=str(path)), progress=False)


def test_a_killed_hash_index_write_leaves_no_temporary_for_good(tmp_path, monkeypatch):
    from studylib.data import hashindex
    monkeypatch.setattr(hashindex, "RACY_SECONDS", -1.0)
    torn = tmp_path / f".{hashindex.INDEX}.0123456789ab.tmp"
    torn.write_bytes(b"x" * 640_000)  # what a kill during the index's atomic write leaves
    path = tmp_path / "f.bin"
    path.write_bytes(b"data")
    hashindex.hash_files([path], tmp_path, progress=False)
    assert not torn.exists() and (tmp_path / hashindex.INDEX).is_file()


@pytest.mark.parametrize("argv, message", [
    (["--boot", "0"], "0 resamples estimate the test-image variance too poorly; give at least 100"),
    (["--boot", "-5"], "-5 resamples estimate"),
    (["--metric", "nosuch"], "invalid choice: 'nosuch'"),
])
def test_report_options_are_range_checked(tmp_path, capsys, argv, message):
    from studylib.cli import main
    with pytest.raises(SystemExit) as stopped:
        main(["report", str(tmp_path), *argv])
    assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_a_torn_config_is_listed_and_a_failed_report_leaves_results_csv_as_it_was(tmp_path, monkeypatch, capsys):
    from crafted import case

    import studylib.views.report as report_module
    from studylib.cli import main
    case(tmp_path, "tinycnn", 0.80, (0.03, 0.032, 0.029))
    torn = sorted((tmp_path / "runs").iterdir())[0]
    (torn / "config.json").write_text('{"strategy": "f')
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "corrupt" in out and torn.name in out
    before = (tmp_path / "results.csv").read_bytes()
    (torn / "config.json").write_text('{"strategy": "ft"}')  # the results would change ...

    def broken(*args, **kwargs):
        raise ValueError("the report failed")
    monkeypatch.setattr(report_module, "write_report", broken)
    assert main(["report", str(tmp_path)]) == 2  # ... but the report fails: results.csv is as it was
    assert (tmp_path / "results.csv").read_bytes() == before


def test_the_real_image_demo_names_the_folders_it_needs(tmp_path, capsys):
    from studylib.cli import main

    (tmp_path / "ham10000-small").mkdir()
    assert main(["demo", "--real", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "lacks brain-mri-nickparvar" in err and "brain-mri-nickparvar/ (train/ and test/ of class folders)" in err
    assert not (tmp_path / "out").exists()  # refused before anything ran or was written
