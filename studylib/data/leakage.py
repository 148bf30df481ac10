"""Exact and near-duplicate images across splits: found by hashing, reported, optionally dropped."""
from __future__ import annotations

import numpy as np

# Which copy goes when a pair crosses splits: never the training image.
_DROP_ORDER = {"test": 0, "val": 1, "train": 2}


def find_duplicates(split: np.ndarray, file_hashes: list[str] | None, image_hashes: list[int] | None,
                    max_bits: int) -> list[dict]:
    """Pairs (i, j) in different splits: same file bytes ('exact') or perceptual hashes <= max_bits apart ('near')."""
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
