"""Dataset registry, kept as data: what each dataset is, where it comes from, how it loads.

Registered datasets are thin entries over a few generic loaders (`loaders.py`): a class
folder tree, a CSV manifest, a MedMNIST `.npz`, or the synthetic generator.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.config import RunConfig
from ..core.registry import Registry
from .bundle import DataBundle
from .leakage import find_duplicates, probable_groups, to_drop
from .rows import select
from .splits import SPLITS, UNUSED, assign_splits, subsample_train

SPLITS_SHOWN = (*SPLITS, UNUSED)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    modality: str
    classes: int  # 0 when it depends on the data (generic loaders)
    images: str  # size as published
    source: str
    licence: str
    citation: str
    obtain: str  # how to get it: a URL the helper downloads, or instructions
    kind: str  # loader: synthetic, folder, csv, npz, medmnist
    options: dict = field(default_factory=dict)  # loader options (column names, folder, task)
    default_root: str = ""  # where it is looked for, below STUDYLIB_DATA (default ./data)
    study: bool = False  # one of the six datasets that stand for the study's modalities
    downloads: tuple = ()  # (url, sha256 or "", subfolder) archives that `python -m studylib download` fetches


DATASETS: Registry[DatasetInfo] = Registry("dataset")


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    return DATASETS.add(info.name, info)


def get_dataset_info(name: str) -> DatasetInfo:
    return DATASETS.get(name)


def list_datasets() -> list[str]:
    return DATASETS.names()


def data_home() -> Path:
    return Path(os.environ.get("STUDYLIB_DATA", "data"))


def dataset_root(info: DatasetInfo, cfg: RunConfig | None = None) -> Path:
    if cfg is not None and cfg.data_root:
        return Path(cfg.data_root)
    return data_home() / (info.default_root or info.name)


def local_status(info: DatasetInfo) -> str:
    """'generated', 'present (path)', 'absent (path)' or how to point at your own data."""
    if info.kind == "synthetic":
        return "generated"
    if not info.study and info.kind != "medmnist":
        return "your data: set data_root"
    root = dataset_root(info)
    if info.kind == "medmnist":
        root = root / f"{info.options['flag']}.npz"
    return f"{'present' if root.exists() else 'absent'} ({root})"


def load_dataset(cfg: RunConfig, progress: bool = True) -> DataBundle:
    """Load, prepare and split the dataset named in `cfg`; the data report rides along."""
    # loaders import PIL and friends: imported here to keep `import studylib` light
    from . import loaders

    info = get_dataset_info(cfg.dataset)
    table = loaders.load(info, dataset_root(info, cfg), cfg, progress)
    present = [table.classes[i] for i in sorted(set(table.labels.tolist()))]
    if len(present) < 2:
        raise loaders.DataError(f"{info.name} has images of {len(present)} class only ({', '.join(present)}); "
                                "classification needs at least two classes")
    if cfg.splits_file:
        split = splits_from_file(Path(cfg.splits_file), table.ids)
        split[split == UNUSED] = "train"  # a few-labels run's file: its share is drawn again below
    else:
        official = table.split if cfg.official_split else None
        split = assign_splits(table.labels, official, table.groups, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    pairs = find_duplicates(split, table.file_hashes, table.image_hashes, cfg.near_duplicate_bits)
    keep = np.ones(len(split), dtype=bool)
    if cfg.drop_duplicates:
        keep[to_drop(split, pairs)] = False
    split = subsample_train(table.labels, split, table.groups, cfg.train_fraction, cfg.train_per_class, cfg.seed)
    bundle = DataBundle(info.name, list(table.classes),
                        table.images if keep.all() else select(table.images, np.flatnonzero(keep)),
                        table.labels[keep], split[keep], [i for i, k in zip(table.ids, keep) if k],
                        None if table.groups is None else table.groups[keep], dict(table.report),
                        file_hashes=None if table.file_hashes is None else
                        [h for h, k in zip(table.file_hashes, keep) if k])
    bundle.report.update(duplicate_report(pairs, table.ids, split, int((~keep).sum())))
    bundle.report.update(counts=bundle.counts(), imbalance=imbalance(bundle))
    if bundle.groups is not None:
        bundle.report["groups"] = group_report(bundle.groups, bundle.split, "given (group_column / group_pattern)")
    elif table.file_hashes is not None and (guess := probable_groups(bundle.ids, bundle.num_classes)) is not None:
        bundle.probable_groups = guess.keys
        official = table.split is not None and cfg.official_split and not cfg.splits_file
        bundle.report["groups"] = group_report(guess.keys, bundle.split, "probable, from file names",
                                               guess.crossing(bundle.split), guess.pattern)
        bundle.report.setdefault("notes", []).extend(probable_group_notes(bundle.report["groups"], official))
    if (split == UNUSED).any():
        bundle.report["few_labels"] = {"train_fraction": cfg.train_fraction, "train_per_class": cfg.train_per_class,
                                       "train_images": int((bundle.split == "train").sum()),
                                       "left_out": int((bundle.split == UNUSED).sum())}
    bundle.report["notes"] = bundle.report.get("notes", []) + check_split_classes(bundle, cfg.allow_missing_classes)
    return bundle


def check_split_classes(bundle: DataBundle, allow_missing: bool = False) -> list[str]:
    """An empty split, or a class missing from train, cannot give a meaningful run: refused.
    A class missing from validation or test leaves its recall and AUROC undefined: refused unless
    `allow_missing` (then a note in the data report, and a warning)."""
    from .loaders import DataError

    counts = bundle.counts()
    notes = []
    for split, per_class in counts.items():
        absent = [c for c, n in per_class.items() if n == 0]
        if not sum(per_class.values()):
            raise DataError(f"{bundle.name}: the {split} split is empty; add images, or change val_fraction / "
                            "test_fraction / the split column")
        if absent and split == "train":
            raise DataError(f"{bundle.name}: classes {absent} have no training images, so they cannot be learnt; "
                            "add images of them, or remove them from the data")
        if absent and not allow_missing and split in ("val", "test"):
            raise DataError(f"{bundle.name}: classes {absent} have no {split} images, so their recall and AUROC "
                            f"cannot be measured; add {split} images of them (or a larger {split}_fraction), or set "
                            "allow_missing_classes=true to run without")
        if absent and split in ("val", "test"):
            notes.append(f"classes {absent} have no {split} images: their recall and AUROC are undefined "
                         f"(use more data or a larger {split}_fraction)")
    for note in notes:
        warnings.warn(f"{bundle.name}: {note}", stacklevel=3)
    return notes


def splits_from_file(path: Path, ids: list[str]) -> np.ndarray:
    """Reuse a saved assignment (a run's splits.csv): every image must be listed."""
    frame = pd.read_csv(path, dtype=str)
    if not {"id", "split"} <= set(frame.columns):
        raise ValueError(f"splits_file {path} has columns {list(frame.columns)[:6]}, not id and split; give a run's "
                         "splits.csv, or leave splits_file empty to split afresh")
    saved = dict(zip(frame["id"], frame["split"]))
    missing = [i for i in ids if i not in saved]
    if missing:
        raise ValueError(f"{path} has no split for {len(missing)} images (e.g. {missing[:3]}); "
                         "it was saved for other data. Remove splits_file to split afresh.")
    return np.array([saved[i] for i in ids])


def group_report(groups: np.ndarray, split: np.ndarray, source: str, crossing: dict | None = None,
                 pattern: str = "") -> dict:
    """Groups per split; for probable groups, those found in more than one split and the pattern that fixes it.

    Args:
        groups: group id per image ("": none).
        split: split name per image.
        source: where the groups come from, as the report says it.
        crossing: for probable groups, ProbableGroups.crossing (groups in more than one split); None: given groups.
        pattern: a group_pattern giving the probable groups ("": none does).
    """
    frame = pd.DataFrame({"group": groups, "split": split})
    frame = frame[frame.group != ""]
    report = {"source": source, "per_split": {s: int(frame.group[frame.split == s].nunique()) for s in SPLITS_SHOWN},
              "images_per_group": float(len(frame) / max(1, frame.group.nunique()))}
    if crossing is not None:
        report.update(crossing=crossing, pattern=pattern)
    return report


def probable_group_notes(groups: dict, official: bool) -> list[str]:
    crossing = groups["crossing"]
    if not crossing["crossing"]:
        return [f"file names look patient-numbered ({crossing['groups']} probable groups); none spans two splits"]
    fix = (f"set group_pattern='{groups['pattern']}'" if groups["pattern"]
           else "set group_pattern to a regex that takes the patient id from the file name")
    if official:
        fix += " with official_split=false (the data's own split mixes them)"
    return [f"{crossing['crossing']} of {crossing['groups']} probable patient groups (file names like "
            f"{', '.join(crossing['examples'][:3])}) have images in more than one split "
            f"({crossing['images_in_crossing']} images): the test score may be inflated by patients seen in training. "
            f"To keep each patient in one split, {fix}"]


def duplicate_report(pairs: list[dict], ids: list[str], split: np.ndarray, dropped: int) -> dict:
    """The data report's duplicate part: counts by kind, the first 20 pairs by id and split, images dropped.

    Args:
        pairs: find_duplicates' pairs (indices into `ids`).
        ids: image identifiers.
        split: split name per image, before any was dropped.
        dropped: images dropped (drop_duplicates).
    """
    def show(p):
        return {"kind": p["kind"], "bits": p["bits"], "a": ids[p["a"]], "a_split": str(split[p["a"]]),
                "b": ids[p["b"]], "b_split": str(split[p["b"]])}

    kinds = {k: sum(p["kind"] == k for p in pairs) for k in ("exact", "near")}
    return {"duplicates_across_splits": kinds, "duplicate_examples": [show(p) for p in pairs[:20]],
            "duplicates_dropped": dropped}


def imbalance(bundle: DataBundle) -> dict:
    """Largest over smallest class, per split (train_max_over_min kept for older readers)."""
    out = {}
    for split in SPLITS:
        counts = np.bincount(bundle.labels[bundle.indices(split)], minlength=bundle.num_classes)
        smallest = int(counts.min()) if len(counts) else 0
        out[split] = {"max_over_min": float(counts.max() / smallest) if smallest else float("inf"),
                      "largest": bundle.classes[int(counts.argmax())], "smallest": bundle.classes[int(counts.argmin())]}
    return {"train_max_over_min": out["train"]["max_over_min"], **out["train"], "per_split": out}


def format_report(bundle: DataBundle) -> str:
    """The data report as text (python -m studylib data)."""
    report = bundle.report
    lines = [repr(bundle), f"source: {report.get('source', 'generated')}"]
    counts = pd.DataFrame(report["counts"]).rename_axis("class")
    lines += ["images per class and split:", counts.to_string()]
    ratio = report["imbalance"]["train_max_over_min"]
    per_split = report["imbalance"].get("per_split", {})
    shown = ", ".join(f"{s} {v['max_over_min']:.1f}" for s, v in per_split.items()) or f"train {ratio:.1f}"
    lines.append(f"imbalance (largest/smallest class): {shown}"
                 + ("  -> consider class_weighted_loss=true or balanced_sampling=true" if ratio > 3 else ""))
    if report.get("groups"):
        groups = report["groups"]
        lines.append(f"groups ({groups['source']}): " + ", ".join(f"{s} {n}" for s, n in groups["per_split"].items()
                                                              if n) + f"; {groups['images_per_group']:.1f} images each")
    if report.get("image_sizes"):
        lines.append(f"original image sizes: {report['image_sizes']}")
    dups = report["duplicates_across_splits"]
    lines.append(f"duplicates across splits: {dups['exact']} exact, {dups['near']} near; dropped "
                 f"{report['duplicates_dropped']}"
                 + ("  -> drop_duplicates=true removes the val/test copies"
                    if sum(dups.values()) and not report['duplicates_dropped'] else ""))
    lines += [f"  {d['kind']}: {d['a']} ({d['a_split']}) ~ {d['b']} ({d['b_split']})"
              for d in report["duplicate_examples"][:5]]
    more = sum(dups.values()) - min(5, len(report["duplicate_examples"]))
    if more > 0:
        lines.append(f"  ... and {more} more (data_report.json lists {len(report['duplicate_examples'])})")
    skipped = report.get("skipped", [])
    lines.append(f"skipped files: {len(skipped)}")
    lines += [f"  {s['file']}: {s['reason']}" for s in skipped[:20]]
    lines += [f"note: {note}" for note in report.get("notes", [])]
    return "\n".join(lines)


SYNTHETIC_OBTAIN = "generated by studylib (studylib/data/synthetic.py); nothing to download"

register_dataset(DatasetInfo(
    "synthetic", "synthetic (grey, speckled, medical-looking)", 4, "synthetic_size images",
    "studylib", "MIT", "-", SYNTHETIC_OBTAIN, "synthetic", {"task": "target"}))
register_dataset(DatasetInfo(
    "synthetic_source", "synthetic (colour shapes x textures)", 16, "synthetic_size images",
    "studylib", "MIT", "-", SYNTHETIC_OBTAIN, "synthetic", {"task": "source"}))


# --- the study's six modalities (docs/datasets.md says why these) ---------------------

def _study(name, modality, classes, images, source, licence, citation, obtain, kind, options, root="", downloads=()):
    return register_dataset(DatasetInfo(name, modality, classes, images, source, licence, citation, obtain,
                                        kind, options, root, study=True, downloads=downloads))


_study("chest_xray_pneumonia", "chest X-ray (paediatric pneumonia)", 2, "5,856", "Kermany et al., Mendeley Data v2",
       "CC BY 4.0", "Kermany, Zhang, Goldbaum, Cell 2018; doi:10.17632/rscbjbr9sj.2",
       "https://data.mendeley.com/datasets/rscbjbr9sj/2 (ZhangLabData.zip; unzip CellData/chest_xray here)",
       "folder", {"group_pattern": r"^(person\d+|NORMAL2-IM-\d+|IM-\d+)"}, "chest_xray")
_study("brain_tumor_mri", "brain MRI (4 tumour classes)", 4, "7,023", "Nickparvar, Kaggle 2021", "CC0 1.0",
       "M. Nickparvar, Brain Tumor MRI Dataset, Kaggle 2021, doi:10.34740/KAGGLE/DSV/2645886",
       "kaggle datasets download -d masoudnickparvar/brain-tumor-mri-dataset (Kaggle login); unzip here. "
       "The official split has near-duplicates across train/test: use drop_duplicates=true",
       "folder", {})
_study("nct_crc_he", "histology (colorectal H&E tissue, 9 classes)", 9, "100,000 + 7,180",
       "Kather et al., Zenodo 1214456", "CC BY 4.0", "Kather et al., PLOS Medicine 2019; doi:10.5281/zenodo.1214456",
       "https://zenodo.org/record/1214456/files/NCT-CRC-HE-100K.zip -> train/, "
       "https://zenodo.org/record/1214456/files/CRC-VAL-HE-7K.zip -> test/ (python -m studylib download nct_crc_he)",
       "folder", {}, downloads=(("https://zenodo.org/record/1214456/files/NCT-CRC-HE-100K.zip", "", "train"),
                                ("https://zenodo.org/record/1214456/files/CRC-VAL-HE-7K.zip", "", "test")))
_study("ham10000", "dermoscopy (7 pigmented-lesion classes)", 7, "10,015", "Tschandl et al., Harvard Dataverse",
       "CC BY-NC 4.0", "Tschandl, Rosendahl, Kittler, Sci. Data 5:180161, 2018; doi:10.7910/DVN/DBW86T",
       "https://doi.org/10.7910/DVN/DBW86T (accept the terms; unzip both image parts and "
       "HAM10000_metadata.csv here). Split by lesion_id (done by default)",
       "csv", {"file": "HAM10000_metadata.csv", "path_column": "image_id", "label_column": "dx",
               "group_column": "lesion_id"})
_study("hyperkvasir", "GI endoscopy (23 labelled findings)", 23, "10,662", "Borgli et al., Simula",
       "CC BY 4.0", "Borgli et al., Sci. Data 7:283, 2020; doi:10.1038/s41597-020-00622-y",
       "https://datasets.simula.no/downloads/hyper-kvasir/hyper-kvasir-labeled-images.zip (unzip here; "
       "image-labels.csv is inside; python -m studylib download hyperkvasir)",
       "csv", {"file": "image-labels.csv", "path_column": "Video file", "label_column": "Finding"},
       downloads=(("https://datasets.simula.no/downloads/hyper-kvasir/hyper-kvasir-labeled-images.zip", "", ""),))
_study("cholec80_phase", "endoscopic surgery (laparoscopic cholecystectomy, 7 phases)", 7, "80 videos",
       "Twinanda et al., CAMMA", "CC BY-NC-SA 4.0", "Twinanda et al., IEEE TMI 36(1), 2017",
       "request access at https://camma.unistra.fr/datasets/ ; extract frames at 1 fps and write "
       "frames.csv with columns path, phase, video (the video is the group: no video spans two splits)",
       "csv", {"file": "frames.csv", "path_column": "path", "label_column": "phase", "group_column": "video"})

# --- your own data, through the generic loaders --------------------------------------------

register_dataset(DatasetInfo("folder", "your images: data_root/[train|val|test/]CLASS/*", 0, "-", "yours", "-", "-",
                             "set data_root to the folder", "folder", {}, "folder"))
register_dataset(DatasetInfo("csv", "your manifest: data_root=file.csv (path_column, label_column, ...)", 0, "-",
                             "yours", "-", "-", "set data_root to the CSV file", "csv", {}, "manifest.csv"))
register_dataset(DatasetInfo("npz", "a MedMNIST-format .npz (data_root=file.npz)", 0, "-", "yours", "-", "-",
                             "set data_root to the .npz file", "npz", {}, "data.npz"))

# --- MedMNIST+ 2D (single-label), through the medmnist package ------------------------------

MEDMNIST_2D = {
    "pathmnist": ("colon pathology", 9), "dermamnist": ("dermatoscopy", 7), "octmnist": ("retinal OCT", 4),
    "pneumoniamnist": ("chest X-ray", 2), "retinamnist": ("fundus camera (ordinal)", 5),
    "breastmnist": ("breast ultrasound", 2), "bloodmnist": ("blood cell microscopy", 8),
    "tissuemnist": ("kidney cortex microscopy", 8), "organamnist": ("abdominal CT, axial", 11),
    "organcmnist": ("abdominal CT, coronal", 11), "organsmnist": ("abdominal CT, sagittal", 11),
}
for _flag, (_modality, _k) in MEDMNIST_2D.items():
    register_dataset(DatasetInfo(
        _flag, f"MedMNIST+ {_modality}", _k, "28-224 px", "Yang et al., MedMNIST v2",
        "CC BY 4.0 (most; see medmnist.com)", "Yang et al., Sci. Data 10:41, 2023",
        "pip install medmnist; downloads on first use (medmnist_size)", "medmnist", {"flag": _flag}, "medmnist"))
