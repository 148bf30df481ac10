"""Leakage across splits: exact and near-duplicate images (hashes), probable patient groups (file names)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

# Which copy goes when a pair crosses splits: never the training image.
_DROP_ORDER = {"test": 0, "val": 1, "train": 2}


def find_duplicates(split: np.ndarray, file_hashes: list[str] | None, image_hashes: list[int] | None,
                    max_bits: int) -> list[dict]:
    """Pairs (i, j) in different splits: same file bytes ('exact') or perceptual hashes <= max_bits apart ('near').

    Args:
        split: split name per image.
        file_hashes: hash of each file's bytes (exact duplicates); None: not checked.
        image_hashes: 64-bit perceptual hash per image (near duplicates); None: not checked.
        max_bits: most differing hash bits of a near duplicate; below 0: near duplicates off.
    """
    pairs = []
    if file_hashes is not None:
        first: dict[str, int] = {}
        for i, digest in enumerate(file_hashes):
            j = first.setdefault(digest, i)
            if j != i and split[i] != split[j]:
                pairs.append({"a": j, "b": i, "kind": "exact", "bits": 0})
    if image_hashes is not None and max_bits >= 0:
        exact = {(p["a"], p["b"]) for p in pairs}
        pairs += [p for p in _near_pairs(split, np.array(image_hashes, dtype=np.uint64), max_bits)
                  if (p["a"], p["b"]) not in exact]
    return pairs


def _near_pairs(split: np.ndarray, hashes: np.ndarray, max_bits: int) -> list[dict]:
    pairs = []
    for held in ("val", "test"):
        for other in ("train", "val") if held == "test" else ("train",):
            rows, cols = np.flatnonzero(split == held), np.flatnonzero(split == other)
            for start in range(0, len(rows), 256):  # bounded memory: 256 x n_other at a time
                chunk = rows[start:start + 256]
                bits = np.bitwise_count(hashes[chunk][:, None] ^ hashes[cols][None, :])
                for r, c in zip(*np.nonzero(bits <= max_bits)):
                    pairs.append({"a": int(cols[c]), "b": int(chunk[r]), "kind": "near", "bits": int(bits[r, c])})
    return pairs


def to_drop(split: np.ndarray, pairs: list[dict]) -> np.ndarray:
    """Indices to drop so no pair crosses splits: the test copy first, then the val copy."""
    drop = set()
    for pair in pairs:
        a, b = pair["a"], pair["b"]
        drop.add(a if _DROP_ORDER[split[a]] < _DROP_ORDER[split[b]] else b)
    return np.array(sorted(drop), dtype=np.int64)


# --- probable patient groups from file names ---------------------------------------------------

MIN_GROUPS = 5  # fewer keys than this (or than twice the classes) are classes or sources (img0_*), not patients
MAX_GROUP_SHARE = 0.5  # a key holding more of the files is not one patient's


@dataclass
class ProbableGroups:
    """Patient or subject ids guessed from file names (person1261_virus_2147 -> person1261)."""

    keys: np.ndarray  # per image: the key, or '' where the name has none
    pattern: str  # a group_pattern that gives the same keys ('' when none matches every file)

    def crossing(self, split: np.ndarray) -> dict[str, int]:
        """Keys found in more than one split, and how many images they hold."""
        frame = pd.DataFrame({"key": self.keys, "split": split})
        frame = frame[frame.key != ""]
        spread = frame.groupby("key").split.nunique()
        crossing = spread.index[spread > 1]
        return {"groups": int(frame.key.nunique()), "crossing": len(crossing),
                "images_in_crossing": int(frame.key.isin(crossing).sum()),
                "examples": [str(k) for k in crossing[:5]]}


def probable_groups(names: list[str], classes: int = 0) -> ProbableGroups | None:
    """Leading ids shared by several files, when the names look like patient-numbered ones.

    Names are split into words at _ - . and spaces. Within each family of names (the first word
    without its digits: person, IM, NORMAL), the key is the shortest run of leading words that
    ends in a word with a digit, is not the whole name, and tells several files apart
    (NORMAL2-IM-0423-0001 -> NORMAL2-IM-0423, IM-0115-0001 -> IM-0115). None when keys cover
    under half of the files, or look like classes rather than patients: fewer keys than
    MIN_GROUPS or twice the number of `classes`, one key with most files, no key shared.
    """
    words = [re.split(r"([_\-. ]+)", Path(name).stem) for name in names]
    families: dict[str, list[int]] = {}
    for i, parts in enumerate(words):
        families.setdefault(re.sub(r"\d+", "", parts[0]), []).append(i)
    keys = np.full(len(names), "", dtype=object)
    templates = []
    for members in families.values():
        depth = _key_depth([words[i] for i in members])
        if depth:
            for i in members:
                if len(words[i]) > 2 * depth - 1:
                    keys[i] = "".join(words[i][:2 * depth - 1])
            templates.append(_template(words[members[0]][:2 * depth - 1]))
    keyed = keys[keys != ""]
    if len(keyed) < len(names) / 2:
        return None
    sizes = pd.Series(keyed).value_counts()
    if (len(sizes) < max(MIN_GROUPS, 2 * classes) or sizes.iloc[0] > MAX_GROUP_SHARE * len(keyed)
            or (sizes > 1).sum() < 2):
        return None
    return ProbableGroups(keys, _pattern(sorted(set(templates), key=len, reverse=True), names, keys))


def _key_depth(members: list[list[str]]) -> int:
    """Words in the family's key (0: none): the first depth whose last word has a digit and that
    gives more than one key, short of the whole name."""
    longest = max(len(parts) for parts in members) // 2 + 1  # words, with separators between them
    for depth in range(1, longest):
        ends = {parts[2 * depth - 2] for parts in members if len(parts) > 2 * depth - 1}
        if not ends or not all(re.search(r"\d", word) for word in ends):
            continue
        if len({"".join(parts[:2 * depth - 1]) for parts in members if len(parts) > 2 * depth - 1}) > 1:
            return depth
    return 0


def _template(parts: list[str]) -> str:
    def escape(text: str) -> str:
        return re.escape(text).replace("\\-", "-")  # a hyphen is literal outside [...]: keep the pattern readable
    return "".join(escape(part) if i % 2 else r"\d+".join(map(escape, re.split(r"\d+", part)))
                   for i, part in enumerate(parts))


def _pattern(templates: list[str], names: list[str], keys: np.ndarray) -> str:
    """`^(a|b)` when it gives every file its key; '' when it does not (some names have no key)."""
    pattern = f"^({'|'.join(templates)})"
    regex = re.compile(pattern)
    for name, key in zip(names, keys):
        match = regex.search(Path(name).name)
        if not key or not match or match.group(1) != key:
            return ""
    return pattern
