"""Loaders, splits, the prepared-image cache, duplicates and the data report."""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config, write_image_folder

from studylib import run
from studylib.data.cache import prepare_files
from studylib.data.datasets import format_report, list_datasets, load_dataset
from studylib.data.loaders import DataError
from studylib.data.splits import assign_splits


def folder_config(root, **changes):
    return tiny_config(dataset="folder", data_root=str(root), **changes)


def test_folder_with_official_splits(tmp_path):
    root = write_image_folder(tmp_path / "d", splits=("train", "test"))
    bundle = load_dataset(folder_config(root), progress=False)
    assert bundle.classes == ["a", "b", "c"]
    assert len(bundle.indices("test")) == 24  # official test kept whole
    assert len(bundle.indices("val")) > 0  # carved out of train
    assert all(i.startswith("test/") for i in np.array(bundle.ids)[bundle.indices("test")])
    assert bundle.images.shape[1:] == (3, 17, 17)


def test_folder_without_splits_is_split_stratified(tmp_path):
    root = write_image_folder(tmp_path / "d", per_class=20, splits=())
    bundle = load_dataset(folder_config(root, val_fraction=0.2, test_fraction=0.2), progress=False)
    for name in ("train", "val", "test"):
        counts = np.bincount(bundle.labels[bundle.indices(name)], minlength=3)
        assert counts.max() - counts.min() <= 1, (name, counts)


def test_missing_and_empty_folders_are_named(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(folder_config(tmp_path / "nope"), progress=False)
    root = write_image_folder(tmp_path / "d", splits=())
    (root / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty holds no images"):
        load_dataset(folder_config(root), progress=False)


def test_class_only_in_test_is_refused(tmp_path):
    root = write_image_folder(tmp_path / "d")
    shutil.copytree(root / "test" / "a", root / "test" / "zebra")
    with pytest.raises(DataError, match="zebra.*not among the training classes"):
        load_dataset(folder_config(root), progress=False)


def plant_truncated(root):
    victim = sorted((root / "train" / "b").iterdir())[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 3])
    return victim


def test_truncated_image_is_named_and_skippable(tmp_path):
    root = write_image_folder(tmp_path / "d")
    victim = plant_truncated(root)
    with pytest.raises(DataError, match=victim.name + r".*skip_bad_images=true"):
        load_dataset(folder_config(root), progress=False)
    result = run(folder_config(root, skip_bad_images=True, max_epochs=1), tmp_path / "run")
    report = pd.read_json(tmp_path / "run" / "data_report.json", typ="series")
    assert [s["file"] for s in report["skipped"]] == [f"train/b/{victim.name}"]
    assert result.metrics["epochs_run"] == 1


def write_manifest(tmp_path, rows, name="m.csv"):
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture
def csv_root(tmp_path):
    root = write_image_folder(tmp_path / "img", per_class=12, splits=())
    files = sorted(root.rglob("*.png"))
    rows = [{"path": str(f.relative_to(tmp_path)), "label": f.parent.name, "patient": f"p{i // 3}"}
            for i, f in enumerate(files)]
    return tmp_path, rows


def test_csv_with_groups_keeps_each_group_in_one_split(csv_root):
    tmp_path, rows = csv_root
    path = write_manifest(tmp_path, rows)
    for seed in (1, 2, 3):
        bundle = load_dataset(tiny_config(dataset="csv", data_root=str(path), group_column="patient", seed=seed,
                                          val_fraction=0.2, test_fraction=0.2, allow_missing_classes=True),
                              progress=False)  # 3 groups per class cannot give every split every class
        frame = pd.DataFrame({"group": bundle.groups, "split": bundle.split})
        assert frame.groupby("group").split.nunique().max() == 1
        assert set(bundle.split) == {"train", "val", "test"}


def test_csv_errors_name_the_problem(csv_root):
    tmp_path, rows = csv_root
    path = write_manifest(tmp_path, rows)
    with pytest.raises(DataError, match=r"no group column 'subject'.*'path', 'label', 'patient'"):
        load_dataset(tiny_config(dataset="csv", data_root=str(path), group_column="subject"), progress=False)
    bad = write_manifest(tmp_path, rows + [{"path": "../../etc/passwd", "label": "a", "patient": "x"}], "bad.csv")
    with pytest.raises(DataError, match="leaves image_root .*set image_root"):
        load_dataset(tiny_config(dataset="csv", data_root=str(bad)), progress=False)
    gone = write_manifest(tmp_path, rows + [{"path": "img/a/missing.png", "label": "a", "patient": "x"}], "gone.csv")
    with pytest.raises(DataError, match="1 image files not found.*missing.png"):
        load_dataset(tiny_config(dataset="csv", data_root=str(gone)), progress=False)
    bundle = load_dataset(tiny_config(dataset="csv", data_root=str(gone), skip_bad_images=True), progress=False)
    assert bundle.report["skipped"] == [{"file": "img/a/missing.png", "reason": "file not found"}]


def test_csv_split_column_and_unknown_split_values(csv_root):
    tmp_path, rows = csv_root
    for i, row in enumerate(rows):
        row["fold"] = ["Training", "validation", "test"][i % 3]
    path = write_manifest(tmp_path, rows)
    bundle = load_dataset(tiny_config(dataset="csv", data_root=str(path), split_column="fold"), progress=False)
    assert (pd.Series(bundle.split).value_counts() == 12).all()
    rows[0]["fold"] = "holdout"
    with pytest.raises(DataError, match="holdout"):
        load_dataset(tiny_config(dataset="csv", data_root=str(write_manifest(tmp_path, rows)), split_column="fold"),
                     progress=False)


def test_leaky_official_split_with_groups_is_refused():
    labels = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="official_split=false"):
        assign_splits(labels, np.array(["train", "train", "test", "test"]), np.array(["p1", "p2", "p1", "p3"]),
                      0.2, 0.2, 0)


def test_saved_splits_are_reused(tmp_path):
    root = write_image_folder(tmp_path / "d", splits=())
    run(folder_config(root, max_epochs=1, seed=3), tmp_path / "first")
    again = load_dataset(folder_config(root, seed=99, splits_file=str(tmp_path / "first" / "splits.csv")),
                         progress=False)
    saved = pd.read_csv(tmp_path / "first" / "splits.csv")
    assert list(again.split) == list(saved.split)


def test_exact_duplicate_across_splits_is_reported_and_dropped(tmp_path):
    root = write_image_folder(tmp_path / "d")
    source = sorted((root / "train" / "a").iterdir())[0]
    shutil.copy(source, root / "test" / "a" / "copy.png")
    bundle = load_dataset(folder_config(root), progress=False)
    assert bundle.report["duplicates_across_splits"]["exact"] == 1
    assert "test/a/copy.png" in format_report(bundle)
    dropped = load_dataset(folder_config(root, drop_duplicates=True), progress=False)
    assert "test/a/copy.png" not in dropped.ids and f"train/a/{source.name}" in dropped.ids


@pytest.mark.slow
def test_cache_is_reused_and_matches_fresh_decoding(tmp_path):
    root = write_image_folder(tmp_path / "d", splits=())
    files = sorted(root.rglob("*.png"))
    first = prepare_files(files, 20, tmp_path / "c", workers=2, progress=False)
    second = prepare_files(files, 20, tmp_path / "c", workers=1, progress=False)
    assert not first.reused and second.reused
    assert np.array_equal(np.asarray(first.images), np.asarray(second.images))
    other_size = prepare_files(files, 24, tmp_path / "c", workers=1, progress=False)
    assert not other_size.reused


@pytest.mark.slow
def test_two_processes_preparing_at_once_agree(tmp_path):
    root = write_image_folder(tmp_path / "d", per_class=30, splits=())
    script = ("import sys, numpy as np; from pathlib import Path; from studylib.data.cache import prepare_files;"
              "files = sorted(Path(sys.argv[1]).rglob('*.png'));"
              "p = prepare_files(files, 48, Path(sys.argv[2]), workers=1, progress=False);"
              "print(p.key, int(np.asarray(p.images, dtype=np.int64).sum()))")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(root), str(tmp_path / "c")], stdout=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outputs[0] == outputs[1] and outputs[0]
    assert not list((tmp_path / "c").glob("*.tmp.npy"))


# --- the real images in ../shared/data ------------------------------------------------------

REAL = {
    "brain": dict(dataset="folder", data_root="brain-mri-nickparvar"),
    "chest": dict(dataset="chest_xray_pneumonia", data_root="chest-xray-kermany", official_split=False),
    "ham": dict(dataset="ham10000", data_root="ham10000-small"),
    "npz": dict(dataset="npz", data_root="pneumoniamnist-modified/pneumoniamnist.npz"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", REAL)
def test_a_run_completes_on_each_real_dataset(shared_data, tmp_path, name):
    options = dict(REAL[name], data_root=str(shared_data / REAL[name]["data_root"]))
    cfg = tiny_config(**options, image_size=32, max_epochs=1, max_steps_per_epoch=2, batch_size=16)
    result = run(cfg, tmp_path)
    assert result.metrics["test"]["balanced_accuracy"] >= 0
    assert (tmp_path / "predictions.csv").is_file()


@pytest.mark.slow
def test_ham10000_lesions_never_span_two_splits(shared_data):
    for seed in (684, 559, 629):
        bundle = load_dataset(tiny_config(dataset="ham10000", data_root=str(shared_data / "ham10000-small"),
                                          seed=seed), progress=False)
        frame = pd.DataFrame({"lesion": bundle.groups, "split": bundle.split})
        assert frame.groupby("lesion").split.nunique().max() == 1
        assert frame.lesion.nunique() > 3000


@pytest.mark.slow
def test_chest_xray_patients_never_span_two_splits(shared_data):
    bundle = load_dataset(tiny_config(**dict(REAL["chest"], data_root=str(shared_data / "chest-xray-kermany"))),
                          progress=False)
    frame = pd.DataFrame({"patient": bundle.groups, "split": bundle.split})
    assert frame.groupby("patient").split.nunique().max() == 1


def test_npz_keeps_official_splits(shared_data):
    bundle = load_dataset(tiny_config(**dict(REAL["npz"], data_root=str(shared_data / REAL["npz"]["data_root"]))),
                          progress=False)
    assert [len(bundle.indices(s)) for s in ("train", "val", "test")] == [3882, 524, 624]


def test_truncated_jpeg_in_a_copy_of_real_data(shared_data, tmp_path):
    source = shared_data / "brain-mri-nickparvar"
    copy = tmp_path / "brain"
    for split in ("train", "test"):
        for cls in ("glioma", "notumor"):
            (copy / split / cls).mkdir(parents=True)
            for f in sorted((source / split / cls).iterdir())[:10]:
                shutil.copy(f, copy / split / cls / f.name)
    victim = sorted((copy / "train" / "glioma").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:2000])
    with pytest.raises(DataError, match=victim.name):
        load_dataset(folder_config(copy), progress=False)
    run(folder_config(copy, skip_bad_images=True, max_epochs=1), tmp_path / "run")
    assert victim.name in (tmp_path / "run" / "data_report.json").read_text()


def test_medmnist_entry_downloads_through_the_package(tmp_path, monkeypatch):
    """The medmnist package is stood in for by a fake that 'downloads' a small npz, as the real one does."""
    import types

    def download(split, download, size, root):
        rng = np.random.default_rng(0)
        parts = {f"{s}_images": rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
                 for s, n in (("train", 30), ("val", 10), ("test", 10))}
        parts.update({f"{s}_labels": rng.integers(0, 2, (n, 1)) for s, n in (("train", 30), ("val", 10), ("test", 10))})
        np.savez(Path(root) / "breastmnist.npz", **parts)

    fake = types.SimpleNamespace(INFO={"breastmnist": {"python_class": "BreastMNIST",
                                                       "label": {"0": "malignant", "1": "normal, benign"}}},
                                 BreastMNIST=download)
    monkeypatch.setitem(sys.modules, "medmnist", fake)
    bundle = load_dataset(tiny_config(dataset="breastmnist", data_root=str(tmp_path)), progress=False)
    assert bundle.classes == ["malignant", "normal, benign"]
    assert [len(bundle.indices(s)) for s in ("train", "val", "test")] == [30, 10, 10]


def test_medmnist_without_the_package_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "medmnist", None)  # import fails
    with pytest.raises(DataError, match="pip install medmnist"):
        load_dataset(tiny_config(dataset="pathmnist", data_root=str(tmp_path)), progress=False)


def test_balanced_sampling_draws_classes_evenly_and_features_follow_the_same_order():
    import torch

    from studylib.data.bundle import DeviceBatches
    labels = np.array([0] * 900 + [1] * 100)
    images = np.zeros((1000, 3, 4, 4), dtype=np.uint8)
    batches = DeviceBatches(images, labels, 100, 4, torch.device("cpu"), balanced=True)
    drawn = torch.cat([y for _, y in batches.batches(True, torch.Generator().manual_seed(0))])
    assert len(drawn) == 1000 and 0.4 < drawn.float().mean() < 0.6  # 10% of the data, about half the draws
    plain = torch.cat([y for _, y in DeviceBatches(images, labels, 100, 4, torch.device("cpu")).batches()])
    assert torch.equal(plain, torch.as_tensor(labels))  # evaluation order is the data order


def test_epoch_indices_move_to_an_accelerator_in_one_copy_and_keep_their_batches():
    import torch

    from studylib.data.bundle import batch_indices, indices_on

    batches = list(batch_indices(10, 4, True, None, torch.Generator().manual_seed(0)))
    assert indices_on(iter(batches), torch.device("cpu")) == batches  # the CPU path is untouched
    moved = indices_on(iter(batches), torch.device("meta"))  # any non-CPU device: one cat, one copy, one split
    assert [t.device.type for t in moved] == ["meta"] * 3 and [len(t) for t in moved] == [4, 4, 2]


@pytest.mark.parametrize("name", list_datasets())
def test_every_registered_dataset_is_well_formed(name):
    """What is registered is tested: its loader exists and takes its options, and a study dataset
    says where it comes from, under which licence, and how to cite and obtain it."""
    import inspect

    from studylib.data.datasets import get_dataset_info
    from studylib.data.loaders import LOADERS
    info = get_dataset_info(name)
    loader = LOADERS.get(info.kind)
    accepted = set(inspect.signature(loader).parameters) - {"root", "cfg", "progress"}
    assert set(info.options) <= accepted, f"{name}: options {set(info.options) - accepted} are not {info.kind}'s"
    if info.study:
        assert info.licence and info.citation not in ("", "-") and info.obtain and info.classes >= 2
    if info.kind == "synthetic":
        bundle = load_dataset(tiny_config(dataset=name, synthetic_size=200), progress=False)
        assert bundle.num_classes == info.classes
