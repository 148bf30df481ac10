"""Your own labels: a typo, a case variant or a stray label never becomes a class; CSVs anywhere."""
from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest
from conftest import tiny_config, write_image_folder

from studylib.core.config import ConfigError
from studylib.data.datasets import load_dataset
from studylib.data.labels import LabelError, check_labels, edit_distance, similarity
from studylib.data.loaders import DataError

# Class names of real datasets (the study's, MedMNIST's and common ones) that must never read as typos.
REAL_VOCABULARIES = [
    ["ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"],  # NCT-CRC-HE
    ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"],  # HAM10000
    ["glioma", "meningioma", "notumor", "pituitary"],
    ["NORMAL", "PNEUMONIA"],
    ["Preparation", "CalotTriangleDissection", "ClippingCutting", "GallbladderDissection", "GallbladderPackaging",
     "CleaningCoagulation", "GallbladderRetraction"],  # Cholec80 phases
    ["ulcerative-colitis-grade-1", "ulcerative-colitis-grade-2", "ulcerative-colitis-grade-3", "polyps",
     "esophagitis-a", "esophagitis-b-d", "barretts", "barretts-short-segment"],  # HyperKvasir
    ["type A", "type B", "type C"], ["grade_1", "grade_2"], ["0", "1", "2"],
]


@pytest.mark.parametrize("names", REAL_VOCABULARIES, ids=lambda names: names[0])
def test_real_class_names_are_not_taken_for_typos(names):
    assert check_labels([n for n in names for _ in range(5)], ["x"] * 5 * len(names), "real") == tuple(sorted(names))


@pytest.mark.parametrize("a, b, kind", [("PNUEMONIA", "PNEUMONIA", "typo"), ("normal", "NORMAL", "case"),
                                        ("Normal ", "normal", "case"), ("meningiona", "meningioma", "typo"),
                                        ("pituitray", "pituitary", "typo"), ("no-tumor", "notumor", "case")])
def test_a_typo_or_a_case_variant_is_seen(a, b, kind):
    assert kind in similarity(a, b)


def test_edit_distance_counts_swaps_as_one_edit():
    assert [edit_distance(a, b) for a, b in [("", "abc"), ("abc", "abc"), ("abc", "acb"), ("kitten", "sitting"),
                                             ("pneumonia", "pnuemonia"), ("ca", "abc")]] == [3, 0, 1, 3, 1, 3]


def write_csv(path, labels, folder="img"):
    """A manifest of synthetic PNGs (class folders a, b, c) relabelled with `labels`, one line each."""
    root = write_image_folder(path.parent / folder, per_class=12, splits=())
    files = sorted(root.rglob("*.png"))[:len(labels)]
    pd.DataFrame({"path": [str(f.relative_to(path.parent)) for f in files], "label": labels}).to_csv(path, index=False)
    return path


def from_csv(path, **changes):
    return load_dataset(tiny_config(dataset="csv", data_root=str(path), **changes), progress=False)


def test_a_typo_label_in_a_csv_is_refused_with_its_line_and_the_intended_class(tmp_path):
    labels = ["PNEUMONIA"] * 20 + ["NORMAL"] * 15
    labels[7] = "PNUEMONIA"
    path = write_csv(tmp_path / "m.csv", labels)
    with pytest.raises(LabelError, match=r"m\.csv: 1 label would become a class of its own: label 'PNUEMONIA' "
                                         r"\(1 image: "
                                         r"line 9\) differs from 'PNEUMONIA' \(19 images\) only by a typo.*Correct "
                                         r"'PNUEMONIA' to 'PNEUMONIA'; if they are real classes.*classes: "):
        from_csv(path)


def test_a_case_variant_is_refused_and_a_fixed_vocabulary_names_the_stray_label(tmp_path):
    labels = ["NORMAL"] * 15 + ["normal"] * 6 + ["PNEUMONIA"] * 15
    path = write_csv(tmp_path / "m.csv", labels)
    with pytest.raises(LabelError, match=r"label 'normal' \(6 images: line 17, line 18, line 19 and 3 more\) differs "
                                         r"from 'NORMAL' \(15 images\) only by case"):
        from_csv(path)
    with pytest.raises(LabelError, match=r"1 label is not in classes \['NORMAL', 'PNEUMONIA'\]: 'normal' \(did you "
                                         r"mean 'NORMAL'\?\): 6 images, line 17"):
        from_csv(path, classes="NORMAL, PNEUMONIA")


def test_a_fixed_vocabulary_keeps_two_real_classes_that_look_alike(tmp_path):
    labels = ["cyst"] * 12 + ["cysts"] * 12 + ["mass"] * 12
    path = write_csv(tmp_path / "m.csv", labels)
    with pytest.raises(LabelError, match="'cysts'.*'cyst'"):
        from_csv(path)
    bundle = from_csv(path, classes="cyst,cysts,mass")
    assert bundle.classes == ["cyst", "cysts", "mass"]


def test_classes_in_yaml_as_a_list_and_twice_named(tmp_path):
    from studylib import RunConfig
    assert RunConfig.from_dict({"classes": ["NORMAL", " PNEUMONIA"]}).classes == "NORMAL,PNEUMONIA"
    with pytest.raises(ConfigError, match=r"classes names \['A'\] more than once"):
        RunConfig.from_dict({"classes": "A,B,A"})


def test_a_class_with_too_few_images_is_refused_unless_min_class_images_allows_it(tmp_path):
    labels = ["a"] * 15 + ["b"] * 15 + ["zz"] * 3
    path = write_csv(tmp_path / "m.csv", labels)
    with pytest.raises(LabelError, match=r"1 class has fewer than min_class_images=5 images: 'zz' \(3 images: "
                                         r"line 32, line 33, line 34\).*lower min_class_images"):
        from_csv(path)
    bundle = from_csv(path, min_class_images=2, allow_missing_classes=True)
    assert bundle.classes == ["a", "b", "zz"]


def test_a_case_variant_class_folder_is_refused(tmp_path):
    root = write_image_folder(tmp_path / "data", classes=("NORMAL", "PNEUMONIA"), per_class=8)
    shutil.copytree(root / "train" / "NORMAL", root / "test" / "normal")
    with pytest.raises(LabelError, match=r"class folders of .*data: 1 label would become a class of its own: label "
                                         r"'normal' \(8 images: test/normal/.*\) differs from 'NORMAL' \(16 images\) "
                                         r"only by case"):
        load_dataset(tiny_config(dataset="folder", data_root=str(root)), progress=False)


def test_a_class_missing_from_test_is_refused_unless_allowed(tmp_path):
    root = write_image_folder(tmp_path / "data", per_class=8)
    shutil.rmtree(root / "test" / "c")
    with pytest.raises(DataError, match=r"classes \['c'\] have no test images.*allow_missing_classes=true"):
        load_dataset(tiny_config(dataset="folder", data_root=str(root)), progress=False)
    with pytest.warns(UserWarning, match="no test images"):
        bundle = load_dataset(tiny_config(dataset="folder", data_root=str(root), allow_missing_classes=True),
                              progress=False)
    assert any("['c'] have no test images" in note for note in bundle.report["notes"])


def test_a_csv_outside_a_read_only_image_folder_reads_its_paths_from_image_root(tmp_path):
    images = write_image_folder(tmp_path / "images", per_class=8, splits=())
    files = sorted(images.rglob("*.png"))
    mine = tmp_path / "me" / "labels.csv"
    mine.parent.mkdir()
    rows = [str(f.relative_to(images)) for f in files]
    rows[0] = str(files[0])  # one absolute path
    pd.DataFrame({"path": rows, "label": [f.parent.name for f in files]}).to_csv(mine, index=False)
    os.chmod(images, 0o555)
    try:
        with pytest.raises(DataError, match="not found under"):  # relative to the CSV's folder by default
            load_dataset(tiny_config(dataset="csv", data_root=str(mine)), progress=False)
        bundle = load_dataset(tiny_config(dataset="csv", data_root=str(mine), image_root=str(images)), progress=False)
    finally:
        os.chmod(images, 0o755)
    assert len(bundle.labels) == len(files) and bundle.report["absolute_paths"] == 1
    assert bundle.report["image_root"] == str(images.resolve())
    with pytest.raises(DataError, match="image_root .*nowhere is not a folder"):
        load_dataset(tiny_config(dataset="csv", data_root=str(mine), image_root=str(tmp_path / "nowhere")),
                     progress=False)
