"""Leakage shown for every kind of dataset: probable patient groups from file names, groups per split."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config, write_image_folder

from studylib.data.datasets import format_report, load_dataset
from studylib.data.labels import LabelError
from studylib.data.leakage import probable_groups
from studylib.training.rundir import RunDir
from studylib.training.runner import write_data_files

KERMANY_LIKE = ["person1003_bacteria_2934.jpeg", "person1003_virus_1685.jpeg", "person1_bacteria_1.jpeg",
                "person1_virus_2.jpeg", "IM-0115-0001.jpeg", "IM-0115-0002.jpeg", "IM-0117-0001.jpeg",
                "NORMAL2-IM-0423-0001.jpeg", "NORMAL2-IM-0423-0002.jpeg", "NORMAL2-IM-0007-0001.jpeg",
                "person77_bacteria_3.jpeg", "IM-0200-0001.jpeg"]


def test_patient_ids_are_read_from_kermany_style_names_with_a_pattern_that_gives_the_same_keys():
    guess = probable_groups(KERMANY_LIKE)
    assert list(guess.keys) == ["person1003", "person1003", "person1", "person1", "IM-0115", "IM-0115", "IM-0117",
                                "NORMAL2-IM-0423", "NORMAL2-IM-0423", "NORMAL2-IM-0007", "person77", "IM-0200"]
    assert [re.search(guess.pattern, n).group(1) for n in KERMANY_LIKE] == list(guess.keys)


@pytest.mark.parametrize("names", [
    [f"ISIC_{24306 + i:07d}.jpg" for i in range(40)],  # one id per image: nothing shared
    [f"img{i % 3}_{i}.png" for i in range(60)],  # a class index, not a patient
    [f"Tr-{c}Tr_{i:04d}.jpg" for c in ("gl", "me", "no", "pi") for i in range(10)],  # source tags
    [f"synthetic-target-{i}" for i in range(50)], [f"train-{i}" for i in range(50)],
], ids=["isic", "class-prefix", "source-tags", "synthetic", "npz"])
def test_names_without_patient_ids_give_no_groups(names):
    assert probable_groups(names) is None


def test_names_that_carry_the_class_are_not_patients():
    names = [f"class{i % 10}_{i}.png" for i in range(200)]
    assert probable_groups(names, classes=10) is None and probable_groups(names) is not None


def write_patient_folder(root, patients=12, per_patient=3):
    """Class folders whose file names carry patient ids (patientN_view_K.png), with no groups given."""
    source = write_image_folder(root.parent / "plain", classes=("a", "b"), per_class=patients * per_patient // 2,
                                splits=())
    files = sorted(source.rglob("*.png"))
    for k, path in enumerate(files):
        target = root / path.parent.name / f"patient{k // per_patient}_view_{k % per_patient}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    return root


def test_a_folder_without_groups_reports_patients_that_cross_splits_and_the_pattern_that_fixes_it(tmp_path):
    root = write_patient_folder(tmp_path / "data")
    cfg = tiny_config(dataset="folder", data_root=str(root), val_fraction=0.2, test_fraction=0.2)
    bundle = load_dataset(cfg, progress=False)
    groups = bundle.report["groups"]
    assert groups["source"] == "probable, from file names" and groups["pattern"] == r"^(patient\d+)"
    frame = pd.DataFrame({"key": bundle.probable_groups, "split": bundle.split})
    crossing = int((frame.groupby("key").split.nunique() > 1).sum())
    assert crossing > 0 and groups["crossing"]["crossing"] == crossing and groups["crossing"]["groups"] == 12
    note = next(n for n in bundle.report["notes"] if "probable patient groups" in n)
    assert f"{crossing} of 12 probable patient groups" in note and r"group_pattern='^(patient\d+)'" in note
    assert "official_split=false" not in note  # no official split here: the pattern alone fixes it
    assert "groups (probable, from file names): train" in format_report(bundle)
    rundir = RunDir(tmp_path / "run")
    rundir.path.mkdir()
    write_data_files(rundir, bundle)
    saved = pd.read_csv(tmp_path / "run" / "splits.csv")
    assert list(saved.probable_group) == list(bundle.probable_groups)

    fixed = load_dataset(cfg.replace(group_pattern=groups["pattern"]), progress=False)
    assert fixed.report["groups"]["source"].startswith("given") and "crossing" not in fixed.report["groups"]
    frame = pd.DataFrame({"key": fixed.groups, "split": fixed.split})
    assert frame.groupby("key").split.nunique().max() == 1
    assert sum(fixed.report["groups"]["per_split"].values()) == 12


def test_given_groups_are_counted_per_split(tmp_path):
    root = write_image_folder(tmp_path / "img", per_class=12, splits=())
    files = sorted(root.rglob("*.png"))
    path = tmp_path / "m.csv"
    pd.DataFrame({"path": [str(f.relative_to(tmp_path)) for f in files], "label": [f.parent.name for f in files],
                  "patient": [f"p{i // 2}" for i in range(len(files))]}).to_csv(path, index=False)
    bundle = load_dataset(tiny_config(dataset="csv", data_root=str(path), group_column="patient"), progress=False)
    per_split = bundle.report["groups"]["per_split"]
    expected = {s: len(set(bundle.groups[bundle.split == s])) for s in ("train", "val", "test")}
    assert {s: per_split[s] for s in expected} == expected and sum(expected.values()) == 18


def test_your_own_csv_of_real_chest_x_rays_typo_case_variant_groups_and_image_root(shared_data, tmp_path):
    """The user's path on real images: a CSV of their own beside, not inside, the (read-only) image folder."""
    images = shared_data / "chest-xray-kermany"
    manifest = pd.read_csv(images / "manifest.csv")
    spread = manifest.groupby("patient_key").official_split.nunique()
    crossing = manifest[manifest.patient_key.isin(spread.index[spread > 1])].sort_values("patient_key").head(60)
    normal = manifest[manifest.label == "NORMAL"].groupby("official_split").head(30)
    manifest = pd.concat([normal, crossing])  # 120 images; the official split puts 60 patients' in both
    mine = manifest[["file", "label", "official_split"]].set_axis(["path", "label", "split"], axis=1)
    mine = mine.reset_index(drop=True).copy()  # its own labels: the edits below leave the manifest as it is
    mine.loc[mine.index[3], "label"] = "PNUEMONIA" if mine.label.iloc[3] == "PNEUMONIA" else "NORMAl"
    mine.loc[mine.index[70], "label"] = "pneumonia"
    path = tmp_path / "my-study" / "labels.csv"
    path.parent.mkdir()
    mine.to_csv(path, index=False)
    cfg = tiny_config(dataset="csv", data_root=str(path), image_root=str(images), split_column="split")
    with pytest.raises(LabelError, match=r"labels\.csv: 2 labels would become a class of their own: label "
                                         r"'(PNUEMONIA|NORMAl)' \(1 image: line 5\) differs from '(PNEUMONIA|NORMAL)'.*"
                                         r"label 'pneumonia' \(1 image: line 72\) differs from 'PNEUMONIA'"
                                         r".*only by case"):
        load_dataset(cfg, progress=False)
    mine.loc[mine.index[3], "label"] = manifest.label.iloc[3]
    mine.loc[mine.index[70], "label"] = "PNEUMONIA"
    mine.to_csv(path, index=False)
    bundle = load_dataset(cfg, progress=False)
    assert bundle.classes == ["NORMAL", "PNEUMONIA"] and len(bundle.labels) == 120
    expected = manifest.patient_key.to_numpy()
    assert list(bundle.probable_groups) == list(expected)  # the dataset's own patient keys, read from names
    split = np.asarray(bundle.split)
    truth = pd.DataFrame({"key": expected, "split": split}).groupby("key").split.nunique()
    assert bundle.report["groups"]["crossing"]["crossing"] == int((truth > 1).sum()) > 0
    assert any("with official_split=false" in note for note in bundle.report["notes"])
