"""Generic loaders: a class-folder tree, a CSV manifest, a MedMNIST .npz, the synthetic pair.

Each turns its source into a `Table` of prepared uint8 images plus labels, official
splits and groups where the data has them. Bad input fails with the file names and the fix.
"""
from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..core.config import RunConfig, names_of
from ..core.registry import Registry
from .cache import Prepared, perceptual_hash, prepare_files
from .images import IMAGE_SUFFIXES, array_to_rgb, image_files
from .labels import check_labels
from .rows import select
from .splits import SPLITS
from .synthetic import make_synthetic

SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "testing": "test"}


class DataError(ValueError):
    """Data that cannot be loaded as given; the message names the file(s) and the fix."""


@dataclass
class Table:
    images: np.ndarray  # (n, 3, s, s) uint8
    labels: np.ndarray  # (n,) int64
    classes: tuple[str, ...]
    ids: list[str]
    split: np.ndarray | None = None  # official split per item ('' = unassigned), if any
    groups: np.ndarray | None = None  # patient / lesion id per item, if any
    report: dict = field(default_factory=dict)
    file_hashes: list[str] | None = None  # for exact-duplicate detection
    image_hashes: list[int] | None = None  # for near-duplicate detection


Loader = Callable[..., Table]
LOADERS: Registry[Loader] = Registry("loader kind")


def load(info, root: Path, cfg: RunConfig, progress: bool = True) -> Table:
    """Load a dataset with the loader its `kind` names, given its loader options.

    Args:
        info: the dataset's registry entry (kind and options).
        root: where its files are (data_root, or its default folder).
        cfg: the run's config (preparation, column and class settings).
        progress: show progress bars.
    """
    return LOADERS.get(info.kind)(root=root, cfg=cfg, progress=progress, **info.options)


@LOADERS.register("synthetic")
def load_synthetic(root: Path, cfg: RunConfig, progress: bool, task: str) -> Table:
    """The synthetic `task`'s images, generated at the prepared size.

    Args:
        root: unused (nothing is read).
        cfg: the run's config (synthetic_size, prepared_size).
        progress: unused.
        task: "source" or "target".
    """
    # Generated at the prepared size directly; the seed of the *data* is fixed so that
    # different run seeds see the same images (seeds vary splits and training only).
    images, labels, classes = make_synthetic(task, cfg.synthetic_size, cfg.prepared_size, seed=0)
    return Table(images, labels, classes, [f"synthetic-{task}-{i}" for i in range(len(labels))])


# --- class folders -------------------------------------------------------------------------

@LOADERS.register("folder")
def load_folder(root: Path, cfg: RunConfig, progress: bool, group_pattern: str = "") -> Table:
    """root/[train|val|test/]CLASS/**/image; classes are the folder names.

    Args:
        root: the data folder: class folders, optionally below train/val/test folders.
        cfg: the run's config (classes, min_class_images, group_pattern, preparation).
        progress: show progress bars.
        group_pattern: regex taking a group (patient) id from each file name; "": cfg.group_pattern.
    """
    _require_dir(root)
    split_dirs = _split_dirs(root)
    layout = split_dirs or {"": root}
    not_regular: list[Path] = []
    found = [(name, cls, cls_dir, _images_in(cls_dir, not_regular)) for name, folder in layout.items()
             for cls, cls_dir in _class_dirs(folder).items()]
    names = [cls for _, cls, _, files in found for _ in files]
    places = [str(path.relative_to(root)) for *_, files in found for path in files]
    classes = check_labels(names, places, f"class folders of {root}", names_of(cfg.classes), cfg.min_class_images)
    trained = set(_class_dirs(layout.get("train") or next(iter(layout.values()))))
    paths, labels, split = [], [], []
    for name, cls, cls_dir, files in found:
        if cls not in trained and not cfg.classes:
            raise DataError(f"class folder {cls_dir} is not among the training classes {sorted(trained)}; "
                            "rename it or add it to train")
        paths += files
        labels += [classes.index(cls)] * len(files)
        split += [name] * len(files)
    pattern = group_pattern or cfg.group_pattern
    groups = _groups_from_names(paths, pattern) if pattern else None
    table = _from_files(paths, np.array(labels), classes, np.array(split, dtype=object) if split_dirs else None,
                        groups, root, cfg, progress)
    table.report["skipped"] += [{"file": str(p.relative_to(root)), "reason": "not a regular file (a FIFO, a device "
                                 "or a dangling link): never read"} for p in not_regular]
    return table


def _split_dirs(root: Path) -> dict[str, Path]:
    """train / val / test folders (by any of their usual names); refused: two folders for one split, and
    class folders beside split folders (their images would be silently left out)."""
    split_dirs: dict[str, Path] = {}
    others = []
    for folder in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
        name = SPLIT_ALIASES.get(folder.name.lower())
        if name is None:
            others.append(folder.name)
        elif name in split_dirs:
            raise DataError(f"{root} has two folders for the {name} split "
                            f"({split_dirs[name].name}/ and {folder.name}/); merge them into one")
        else:
            split_dirs[name] = folder
    if split_dirs and others:
        raise DataError(f"{root} mixes split folders ({', '.join(d.name for d in split_dirs.values())}) with other "
                        f"folders ({', '.join(others[:5])}), whose images would be left out; move those into a split "
                        "folder as classes, or out of data_root")
    return split_dirs


def _images_in(cls_dir: Path, not_regular: list[Path] | None = None) -> list[Path]:
    files = image_files(cls_dir, not_regular)
    if not files:
        raise DataError(f"class folder {cls_dir} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                        "remove the folder or add images")
    return files


def _require_dir(root: Path) -> None:
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist. Download the dataset (python -m studylib datasets "
                        "shows how) or set data_root to where it is.")


def _class_dirs(folder: Path) -> dict[str, Path]:
    dirs = {d.name: d for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith(".")}
    if not dirs:
        raise DataError(f"{folder} has no class sub-folders; expected {folder}/CLASS_NAME/image files")
    return dirs


def _groups_from_names(paths: list[Path], pattern: str) -> np.ndarray:
    regex = re.compile(pattern)
    groups = []
    for path in paths:
        match = regex.search(path.name)
        if not match:
            raise DataError(f"group_pattern {pattern!r} does not match file name {path.name}; fix the pattern")
        groups.append(match.group(1) if regex.groups else match.group(0))
    return np.array(groups, dtype=object)


# --- CSV manifests -------------------------------------------------------------------------

@LOADERS.register("csv")
def load_csv(root: Path, cfg: RunConfig, progress: bool, file: str = "", path_column: str = "",
             label_column: str = "", group_column: str = "", split_column: str = "",
             classes: tuple[str, ...] = ()) -> Table:
    """A manifest with path and label columns, optional group and split columns.

    Args:
        root: the CSV file, or the folder that holds `file`.
        cfg: the run's config; its column fields apply where an argument here is empty.
        progress: show progress bars.
        file: the manifest's file name inside `root` (when root is a folder).
        path_column: column of image paths (relative to image_root or the CSV's folder); "": cfg.path_column.
        label_column: column of class labels; "": cfg.label_column.
        group_column: column of group (patient) ids; "": cfg.group_column (none when that is empty too).
        split_column: column of official splits (train/val/test or empty); "": cfg.split_column.
        classes: the dataset's fixed class names in label order, used when cfg.classes is empty; (): the labels found.
    """
    csv_path = root if root.suffix.lower() == ".csv" else root / file
    if not csv_path.is_file():
        raise DataError(f"manifest {csv_path} does not exist; set data_root to the CSV file (or its folder)")
    frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skip_blank_lines=False)
    frame = frame[~(frame == "").all(axis=1)]  # blank lines go, but the index keeps counting them (messages)
    columns = {"path": path_column or cfg.path_column, "label": label_column or cfg.label_column,
               "group": group_column or cfg.group_column, "split": split_column or cfg.split_column}
    for role, column in columns.items():
        if column and column not in frame.columns:
            raise DataError(f"{csv_path} has no {role} column {column!r}; its columns are {list(frame.columns)}. "
                            f"Set {role}_column to the right one.")
    base = image_root(cfg, csv_path).resolve()
    values = frame[columns["path"]].tolist()
    paths, found = _resolve_paths(values, frame.index, base, csv_path, cfg.skip_bad_images)
    missing = [v for v, ok in zip(values, found) if not ok]
    if missing:
        frame = frame[found]
        paths = [p for p, ok in zip(paths, found) if ok]
    label_values, stripped = _clean_labels(frame[columns["label"]], csv_path)
    _refuse_conflicting_labels(paths, label_values, frame.index, csv_path)
    class_list = check_labels(label_values, [f"line {_line(i)}" for i in frame.index], str(csv_path),
                              names_of(cfg.classes) or tuple(classes), cfg.min_class_images)
    index = {name: i for i, name in enumerate(class_list)}  # check_labels refused any label outside class_list
    labels = np.array([index[v] for v in label_values], dtype=np.int64)
    split = _split_values(frame[columns["split"]], csv_path) if columns["split"] else None
    groups, blank = _group_values(frame[columns["group"]]) if columns["group"] else (None, 0)
    table = _from_files(paths, labels, class_list, split, groups, base, cfg, progress)
    if blank:
        table.report.setdefault("notes", []).append(
            f"{blank} rows have an empty {columns['group']}: each is its own group (they are not one patient)")
    table.report["skipped"] += [{"file": m, "reason": "file not found"} for m in missing]
    if stripped:
        table.report.setdefault("notes", []).append(f"{stripped} labels had spaces around them, removed "
                                                    "(so 'A ' and 'A' are one class)")
    absolute = sum(Path(v).is_absolute() for v in values)
    if absolute:
        table.report["absolute_paths"] = absolute
        table.report.setdefault("notes", []).append(f"{absolute} image paths in {csv_path.name} are absolute; "
                                                    "the run folder keeps them as they are")
    table.report["image_root"] = str(base)
    return table


def image_root(cfg: RunConfig, csv_path: Path) -> Path:
    """Where relative image paths of a manifest start: `image_root`, else the CSV's folder."""
    if not cfg.image_root:
        return csv_path.parent
    root = Path(cfg.image_root).expanduser()
    if not root.is_dir():
        raise DataError(f"image_root {root} is not a folder; set it to the folder that the paths in {csv_path.name} "
                        "start from (or leave it empty for the CSV's own folder)")
    return root


def _group_values(column: pd.Series) -> tuple[np.ndarray, int]:
    """Group ids; an empty cell is a group of its own (45 blank cells are not one patient), counted."""
    values = column.str.strip().to_numpy(dtype=object)
    blank = values == ""
    values[blank] = [f"(no group: line {_line(i)})" for i in column.index[blank]]
    return values, int(blank.sum())


def _line(row: int) -> int:
    """The CSV line of frame row `row` (the header is line 1; blank lines were kept as rows, then dropped)."""
    return row + 2


def _rows(index, limit: int = 5) -> str:
    lines = [str(_line(i)) for i in list(index)[:limit]]
    return ", ".join(lines) + (", ..." if len(index) > limit else "")


def _clean_labels(column: pd.Series, source: Path) -> tuple[list[str], int]:
    """Labels without surrounding spaces; an empty label is refused, naming its lines."""
    clean = column.str.strip()
    empty = clean.index[clean == ""]
    if len(empty):
        raise DataError(f"{source}: {len(empty)} rows have an empty label (lines {_rows(empty)}); fill them in or "
                        "remove those rows")
    return clean.tolist(), int((clean != column).sum())


def _refuse_conflicting_labels(paths: list[Path], labels: list[str], index, source: Path) -> None:
    """One image listed twice with two labels: which one is right cannot be guessed."""
    seen: dict[Path, tuple[str, int]] = {}
    conflicts = []
    for path, label, row in zip(paths, labels, index):
        first = seen.setdefault(path.resolve(), (label, row))  # one file under two spellings (a linked alias) too
        if first[0] != label:
            conflicts.append(f"{path.name} is '{first[0]}' on line {_line(first[1])} and '{label}' on line "
                             f"{_line(row)}")
    if conflicts:
        raise DataError(f"{source}: {len(conflicts)} images are listed with two different labels "
                        f"({'; '.join(conflicts[:3])}); keep one label per image")


def _resolve_paths(values: list[str], rows, base: Path, csv_path: Path,
                   skip_missing: bool) -> tuple[list[Path], list[bool]]:
    """Paths and whether each file exists; no suffix: looked up by file name under `base`.

    A relative path starts at `base` (image_root) and must stay inside it as written (a '..' out
    of it is refused: set image_root to a folder above both); an absolute path is taken as it is
    (the data report counts those); symlinks are followed wherever they point.
    """
    base = base.resolve()
    by_stem: dict[str, list[Path]] | None = None
    out, found, missing, ambiguous = [], [], [], []
    for line, value in zip(map(_line, rows), values):
        path = Path(os.path.normpath(base / value))
        if not Path(value).is_absolute() and not path.is_relative_to(base):
            raise DataError(f"{csv_path} line {line}: path {value!r} leaves image_root {base}; set image_root to a "
                            "folder that holds every image (paths start there), or write absolute paths")
        if not Path(value).suffix:
            by_stem = _files_by_stem(base) if by_stem is None else by_stem
            matches = [p for p in by_stem.get(path.name, []) if p.with_suffix("") == path or "/" not in value]
            if len(matches) > 1:
                ambiguous.append(f"line {line}: {value!r} matches "
                                 f"{', '.join(str(m.relative_to(base)) for m in matches[:3])}")
            path = matches[0] if matches else path
        found.append(path.is_file())
        if not found[-1]:
            missing.append(value)
        out.append(path)
    if ambiguous:
        raise DataError(f"{csv_path}: {len(ambiguous)} paths without a suffix match several files, so the image (and "
                        f"its label) would be a guess ({'; '.join(ambiguous[:3])}); write those paths with their "
                        "folder and suffix")
    if missing and not skip_missing:
        raise DataError(f"{csv_path}: {len(missing)} image files not found under {base} "
                        f"(e.g. {', '.join(missing[:3])}); fix the paths or the data_root, or set "
                        "skip_bad_images=true to skip those rows (the data report lists them)")
    return out, found


def _files_by_stem(base: Path) -> dict[str, list[Path]]:
    stems: dict[str, list[Path]] = {}
    for path in image_files(base):
        stems.setdefault(path.stem, []).append(path)
    return stems


def _split_values(column: pd.Series, source: Path) -> np.ndarray:
    values = column.str.strip().str.lower()
    unknown = sorted(set(values) - set(SPLIT_ALIASES) - {""})
    if unknown:
        raise DataError(f"{source}: split values {unknown} are not train / val / test (or empty)")
    return values.map(lambda v: SPLIT_ALIASES.get(v, "")).to_numpy(dtype=object)


# --- shared by file-based loaders -------------------------------------------------------------

def _from_files(paths: list[Path], labels: np.ndarray, classes: tuple[str, ...], split: np.ndarray | None,
                groups: np.ndarray | None, root: Path, cfg: RunConfig, progress: bool) -> Table:
    prepared = prepare_files(paths, cfg.prepared_size, workers=cfg.workers, progress=progress)
    ids = [str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in paths]
    skipped = _check_errors(prepared, ids, cfg)
    keep = np.array([i not in prepared.errors for i in range(len(paths))])
    index = np.flatnonzero(keep)
    images = select(prepared.images, index)  # unread: rows of the cache file
    report = {"source": str(root), "files": len(paths), "skipped": skipped, "cache_key": prepared.key,
              "cache_reused": prepared.reused, "image_sizes": _size_summary([prepared.sizes[i] for i in index])}
    outside = _links_outside(paths, root)
    if outside:
        report["notes"] = [f"{outside} files are symlinks to places outside {root}; followed"]
    return Table(images, labels[index], classes, [ids[i] for i in index],
                 None if split is None else split[index], None if groups is None else groups[index], report,
                 [prepared.file_hashes[i] for i in index], [prepared.image_hashes[i] for i in index])


def _links_outside(paths: list[Path], root: Path) -> int:
    """How many files a symlink takes out of the data folder (both loaders follow them: one rule)."""
    root = root.resolve()
    return sum(not p.resolve().is_relative_to(root) for p in paths)


def _check_errors(prepared: Prepared, ids: list[str], cfg: RunConfig) -> list[dict]:
    skipped = [{"file": ids[i], "reason": reason} for i, reason in sorted(prepared.errors.items())]
    if skipped and not cfg.skip_bad_images:
        listing = "; ".join(f"{s['file']}: {s['reason']}" for s in skipped[:5])
        raise DataError(f"{len(skipped)} images cannot be read ({listing}). Fix or remove them, or set "
                        "skip_bad_images=true to skip them (the data report lists what was skipped).")
    return skipped


def _size_summary(sizes: list[tuple[int, int]]) -> dict:
    if not sizes:
        return {}
    array = np.array(sizes)
    return {"width": _stats(array[:, 0]), "height": _stats(array[:, 1])}


def _stats(values: np.ndarray) -> dict:
    return {"min": int(values.min()), "median": float(np.median(values)), "max": int(values.max())}


# --- MedMNIST -----------------------------------------------------------------------------

@LOADERS.register("npz")
def load_npz(root: Path, cfg: RunConfig, progress: bool, file: str = "", classes: tuple[str, ...] = ()) -> Table:
    """A MedMNIST-format .npz: {train,val,test}_images and _labels (official splits).

    Args:
        root: the .npz file, or the folder that holds `file`.
        cfg: the run's config (prepared_size).
        progress: show a progress bar while resizing.
        file: the .npz's file name inside `root` (when root is a folder).
        classes: names of labels 0, 1, ...; (): the label indices as names.
    """
    path = root if root.suffix == ".npz" else root / file
    parts = _read_npz(path)
    labels = np.concatenate([lab for _, lab in parts.values()])
    k = int(labels.max()) + 1
    if classes and k > len(classes):
        raise DataError(f"{path} has label {k - 1} but the dataset has {len(classes)} classes {list(classes)}; "
                        "the file does not belong to this dataset")
    class_list = tuple(classes) or tuple(str(i) for i in range(k))
    raw = np.concatenate([imgs for imgs, _ in parts.values()])
    images = np.stack([array_to_rgb(a, cfg.prepared_size)
                       for a in tqdm(raw, desc="resizing", disable=not progress, leave=False)])
    split = np.concatenate([[s] * len(lab) for s, (_, lab) in parts.items()]).astype(object)
    ids = [f"{s}-{i}" for s, (_, lab) in parts.items() for i in range(len(lab))]
    report = {"source": str(path), "files": 1, "skipped": [], "image_sizes": {"width": {"min": raw.shape[2]},
                                                                             "height": {"min": raw.shape[1]}}}
    return Table(images, labels, class_list, ids, split, None, report, None, [perceptual_hash(i) for i in images])


def _read_npz(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """split -> (images, labels) of a MedMNIST-format .npz, checked: one label per image, labels >= 0."""
    if not path.is_file():
        raise DataError(f"{path} does not exist; set data_root to a MedMNIST-format .npz file")
    if not zipfile.is_zipfile(path):  # np.load would suggest allow_pickle, which is never safe here
        raise DataError(f"{path} is not a .npz archive; data_root must be a MedMNIST-format .npz "
                        "(numpy.savez of train/val/test _images and _labels)")
    with np.load(path) as npz:
        missing = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels") if f"{s}_{kind}" not in npz.files]
        if missing:
            raise DataError(f"{path} lacks keys {missing}; a MedMNIST .npz has train/val/test _images and _labels")
        parts = {s: (npz[f"{s}_images"], _single_label(npz[f"{s}_labels"], path)) for s in SPLITS}
    for name, (images, labels) in parts.items():
        if images.dtype.kind == "f" and not np.isfinite(images).all():
            bad = np.flatnonzero(~np.isfinite(images.reshape(len(images), -1)).all(axis=1))
            raise DataError(f"{path}: {len(bad)} of {name}_images hold NaN or infinite pixels (the first: index "
                            f"{int(bad[0])}); they would become blank images. Fix or drop them before saving the .npz")
        if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
            raise DataError(f"{path}: {name}_images has shape {images.shape}; expected (n, h, w) or (n, h, w, 1 or 3)")
        if len(images) != len(labels):
            raise DataError(f"{path}: {name}_images holds {len(images)} images but {name}_labels {len(labels)} "
                            "labels; they must pair one to one")
        if len(labels) and labels.min() < 0:
            raise DataError(f"{path}: {name}_labels has negative labels ({int(labels.min())}); labels are class "
                            "indices 0, 1, ...")
    return parts


def _single_label(labels: np.ndarray, path: Path) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:
        raise DataError(f"{path} is multi-label ({labels.shape[1]} columns); studylib handles single-label tasks")
    labels = labels.reshape(-1)
    if labels.dtype.kind not in "iubf":
        raise DataError(f"{path}: labels must be class indices 0, 1, ..., found {labels.dtype} values such as "
                        f"{str(labels[:3].tolist())[:60]}; map the class names to indices before saving the .npz")
    if labels.dtype.kind not in "iub" and not np.array_equal(labels, np.round(labels)):
        raise DataError(f"{path}: labels must be whole class indices, found {labels[labels != np.round(labels)][:3]}")
    return labels.astype(np.int64)


@LOADERS.register("medmnist")
def load_medmnist(root: Path, cfg: RunConfig, progress: bool, flag: str) -> Table:
    """A MedMNIST+ 2D dataset through the `medmnist` package (downloads on first use).

    Args:
        root: folder that holds (or receives) the MedMNIST .npz files.
        cfg: the run's config (medmnist_size, prepared_size).
        progress: show a progress bar while resizing.
        flag: MedMNIST dataset flag, e.g. "pneumoniamnist".
    """
    name = f"{flag}.npz" if cfg.medmnist_size == 28 else f"{flag}_{cfg.medmnist_size}.npz"
    path = root / name
    labels: tuple[str, ...] = ()
    try:
        import medmnist
        info = medmnist.INFO[flag]
        labels = tuple(info["label"][str(i)] for i in range(len(info["label"])))
        if not path.is_file():
            root.mkdir(parents=True, exist_ok=True)
            getattr(medmnist, info["python_class"])(split="train", download=True, size=cfg.medmnist_size,
                                                   root=str(root))
    except ImportError:
        if not path.is_file():
            raise DataError(f"{path} is missing and the medmnist package is not installed: "
                            "pip install medmnist (or pip install -e '.[medmnist]'), or put the .npz there") from None
    except Exception as err:  # the package's download can fail in many ways (offline above all)
        raise DataError(f"could not download {name} with medmnist ({err}). Offline, download it elsewhere "
                        f"and put it at {path}") from None
    return load_npz(path, cfg, progress, classes=labels)
