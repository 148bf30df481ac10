"""Seeded, stratified, group-aware train/val/test splits (scikit-learn does the splitting)."""
from __future__ import annotations

import math

import numpy as np

SPLITS = ("train", "val", "test")


def assign_splits(labels: np.ndarray, split: np.ndarray | None, groups: np.ndarray | None,
                  val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """Keep official splits; carve what is missing out of train.

    `split` holds 'train', 'val', 'test' or '' (unassigned, treated as train) per item.
    With `groups` (patient or lesion ids) no group lands in two splits.

    Args:
        labels: class index per image (stratifies the held-out parts).
        split: official split per image ("train", "val", "test" or ""); None: no official split.
        groups: group (patient, lesion) id per image; None: each image on its own.
        val_fraction: share of the training images held out as val, when no image is officially val.
        test_fraction: share of the training images held out as test, when no image is officially test.
        seed: seed of the split.
    """
    labels = np.asarray(labels)
    out = np.array(split if split is not None else [""] * len(labels), dtype=object)
    out[out == ""] = "train"
    if groups is not None:
        check_groups_within_splits(out, groups)
    for name, fraction in (("test", test_fraction), ("val", val_fraction)):
        if not (out == name).any():
            pool = np.flatnonzero(out == "train")
            held = _hold_out(labels[pool], None if groups is None else groups[pool], fraction, seed)
            out[pool[held]] = name
    return out.astype(str)


def _hold_out(labels: np.ndarray, groups: np.ndarray | None, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of about `fraction` of the items, stratified by label, whole groups only."""
    index = np.arange(len(labels))
    if groups is None:
        stratify = labels if np.bincount(labels).min(initial=2) >= 2 else None
        from sklearn.model_selection import train_test_split  # on first use: a second off every start

        _, held = train_test_split(index, test_size=fraction, random_state=seed, stratify=stratify)
    else:
        n_splits = max(2, round(1 / fraction))
        from sklearn.model_selection import StratifiedGroupKFold

        folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        held = _fold_with_every_class(folds.split(index, labels, groups), labels)
    mask = np.zeros(len(labels), dtype=bool)
    mask[held] = True
    return mask


def _fold_with_every_class(folds, labels: np.ndarray) -> np.ndarray:
    """The first fold whose held-out part has every class (with few groups, whole groups cannot
    always stratify: a later fold may), else the first fold."""
    first = None
    for _, held in folds:
        first = held if first is None else first
        if len(np.unique(labels[held])) == len(np.unique(labels)):
            return held
    return first


def check_groups_within_splits(split: np.ndarray, groups: np.ndarray) -> None:
    """Refuse official splits that put one group in two splits (patient-level leakage)."""
    seen: dict[object, str] = {}
    leaks = []
    for name, group in zip(split, groups):
        if seen.setdefault(group, name) != name:
            leaks.append(group)
    if leaks:
        raise ValueError(f"{len(set(leaks))} groups occur in more than one split "
                         f"(e.g. {sorted(map(str, set(leaks)))[:3]}); "
                         "the official split leaks across groups. Set official_split=false to re-split by group, or "
                         "leave group_column / group_pattern empty to keep the official split as it is.")


UNUSED = "unused"  # training images left out by train_fraction / train_per_class (splits.csv shows them)


def subsample_train(labels: np.ndarray, split: np.ndarray, groups: np.ndarray | None, fraction: float = 1.0,
                    per_class: int = 0, seed: int = 0) -> np.ndarray:
    """Few labels: keep about `fraction` of each class's training images (or `per_class` of them), whole
    groups only; the rest of train becomes 'unused'. Validation and test are untouched.

    Every training group (an image, or a patient with all its images) gets one seeded random place in a
    queue that does not depend on the fraction; each class (a group's majority label) keeps the shortest
    head of its queue that reaches its target. So for one seed a smaller share is always a subset of a
    larger one (nested), every class keeps at least one group (a class that is no group's majority keeps the
    first group in the queue that holds it), and no group is split.

    Args:
        labels: class index per image.
        split: split name per image (assign_splits' output).
        groups: group id per image, kept whole; None: each image on its own.
        fraction: share of each class's training images to keep (train_fraction; 1: all).
        per_class: training images to keep per class instead (train_per_class; 0: use `fraction`).
        seed: seed of the queue (for one seed a smaller share is a subset of a larger one).
    """
    if fraction >= 1 and not per_class:
        return split
    labels, out = np.asarray(labels), np.array(split, dtype=object)
    pool = np.flatnonzero(out == "train")
    units = np.asarray(groups)[pool] if groups is not None else pool
    names, unit_of = np.unique(units, return_inverse=True)
    queue = np.random.default_rng([seed, 1000003]).permutation(len(names))  # place of each unit in the queue
    sizes = np.bincount(unit_of, minlength=len(names))
    k = int(labels.max()) + 1
    per_unit = np.bincount(unit_of * k + labels[pool], minlength=len(names) * k).reshape(-1, k)
    majority = per_unit.argmax(1)
    keep = np.zeros(len(names), dtype=bool)
    for c in np.unique(majority):
        members = np.flatnonzero(majority == c)
        members = members[np.argsort(queue[members])]
        target = per_class if per_class else math.ceil(fraction * sizes[members].sum())
        taken = np.searchsorted(np.cumsum(sizes[members]), min(target, sizes[members].sum())) + 1
        keep[members[:taken]] = True
    for c in sorted(set(np.flatnonzero(per_unit.sum(0))) - set(majority)):  # a class no group is mostly of:
        holders = np.flatnonzero(per_unit[:, c])  # keep its first group in the queue, whatever the share (nested)
        keep[holders[np.argmin(queue[holders])]] = True
    out[pool[~keep[unit_of]]] = UNUSED
    return out.astype(str)
