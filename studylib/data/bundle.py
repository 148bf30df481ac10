"""Prepared data for a run: uint8 images at the prepared size, labels, splits, ids.

Images are decoded and resized once (docs/design.md section 5); the engine crops and normalises
them on the device, batch by batch (`DeviceBatches`).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .rows import Rows, as_rows
from .splits import SPLITS
from .stream import MemoryBudget, copy_done, read_ahead, resident_tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class DataBundle:
    """Everything a run needs from a dataset, already prepared."""

    name: str
    classes: list[str]
    images: np.ndarray | Rows  # (n, 3, s, s) uint8, in memory or rows of a cache file (read when used)
    labels: np.ndarray  # (n,) int64
    split: np.ndarray  # (n,) 'train' / 'val' / 'test'
    ids: list[str]  # one identifier per image (file path or index), for predictions.csv
    groups: np.ndarray | None = None  # patient / lesion ids, when the data has them
    report: dict = field(default_factory=dict)  # counts, skipped files, duplicates (the data report)
    probable_groups: np.ndarray | None = None  # patient ids guessed from file names when no groups are given
    file_hashes: list[str] | None = None  # sha256 of each image file's bytes, for image files (a checkpoint's
    #   pretraining record keeps its training images', so a target's test images are checked against them)

    def indices(self, name: str) -> np.ndarray:
        return np.flatnonzero(self.split == name)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def fingerprint(self) -> str:
        """Content hash of images, labels and split: two runs on equal data share it.

        Images in a cache file are named by the file (its name is a hash of the source files'
        bytes and the preparation) and the selected rows, so a 16 GB split is not read to be hashed.
        """
        digest = hashlib.sha256()
        if isinstance(self.images, Rows) and self.images.file is not None:
            digest.update(file_identity(*self.images.file, self.images.base.shape).encode())
            digest.update(self.images.index.tobytes())
        else:
            for chunk in np.array_split(np.arange(len(self.labels)), max(1, len(self.labels) // 512)):
                digest.update(np.ascontiguousarray(self.images[chunk]).tobytes())
        digest.update(self.labels.tobytes())
        digest.update("|".join(self.split).encode())
        return digest.hexdigest()[:16]

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per split and class."""
        return {s: {c: int(((self.split == s) & (self.labels == i)).sum()) for i, c in enumerate(self.classes)}
                for s in SPLITS}

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(self.indices(s))}" for s in SPLITS)
        return (f"DataBundle({self.name}: {len(self.labels)} images {self.images.shape[-1]}px, "
                f"{self.num_classes} classes, {sizes})")


def file_identity(path: str, offset: int, shape: tuple) -> str:
    """A prepared-cache entry is named by the hash of its source files and settings, so its name is
    its content's identity; any other file is named by its place and stamp (size, mtime, inode)."""
    path = Path(path)
    if re.fullmatch(r"[0-9a-f]{24}", path.stem) and path.with_suffix(".json").is_file():
        return f"{path.name}:{offset}:{shape}"
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}:{offset}:{shape}"


class DeviceBatches:
    """Batches of one split, cropped and normalised on the device.

    Resident when the split fits the run's memory budget (or no budget is given): the uint8
    images are copied into memory once, and onto the GPU when they fit comfortably there.
    Otherwise streamed: read from the cache a few batches ahead (`stream.read_ahead`).
    Training batches are shuffled with a seeded generator, the same order in both modes;
    evaluation keeps the order.
    """

    def __init__(self, images, labels: np.ndarray, batch_size: int, crop: int, device: torch.device,
                 channels_last: bool = False, balanced: bool = False, budget: MemoryBudget | None = None,
                 mean: tuple = IMAGENET_MEAN, std: tuple = IMAGENET_STD):
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        counts = torch.bincount(self.labels).float()
        # Class-balanced sampling: each image drawn with probability 1 / (its class count).
        self.weights = (1.0 / counts[self.labels]) if balanced and len(self.labels) else None
        self.batch_size, self.crop, self.device = batch_size, crop, device
        self.channels_last = channels_last
        self.streamed = budget is not None and not budget.claim(images.nbytes)
        if self.streamed:
            self.rows, self.images = as_rows(images), None
            self.labels_here = self.labels
        else:
            self.images = self._place(images)
            self.labels_here = self.labels.to(self.images.device)  # beside the images: indexed with the same tensor
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255  # the backbone's weights' statistics
        self.inv_std = 1 / (torch.tensor(std, device=device).view(1, 3, 1, 1) * 255)

    def _place(self, images) -> torch.Tensor:
        """On the GPU when the split takes under a quarter of its free memory, else in host memory
        (pinned on CUDA, for asynchronous copies)."""
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            if images.nbytes < 0.25 * free:
                return resident_tensor(images, pin=False).to(self.device)
            return resident_tensor(images, pin=True)
        return resident_tensor(images, pin=False)

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def batches(self, shuffle: bool = False, generator: torch.Generator | None = None,
                augment: bool = False, max_batches: int = 0):
        """Yields (inputs, labels) on the device.

        Args:
            shuffle: shuffle (or draw class-balanced, when balanced) instead of keeping the order.
            generator: random generator of the order and the augmentation.
            augment: random crop and horizontal flip; else the centre crop.
            max_batches: stop after this many batches; 0: all.
        """
        order = batch_indices(len(self.labels), self.batch_size, shuffle, self.weights, generator, max_batches)
        if self.streamed:
            yield from self._streamed(list(order), augment, generator)
            return
        for index in indices_on(order, self.images.device):
            raw = self.images[index].to(self.device, non_blocking=True)
            yield self.transform(raw, augment, generator), self.labels_here[index].to(self.device, non_blocking=True)

    def _streamed(self, order: list[torch.Tensor], augment: bool, generator: torch.Generator | None):
        pin = self.device.type == "cuda"
        for index, (raw, release) in zip(order, read_ahead(self.rows, order, self.batch_size, pin)):
            inputs = self.transform(raw.to(self.device, non_blocking=True), augment, generator)
            release(copy_done(self.device))  # the buffer may be refilled once its copy is done
            yield inputs, self.labels[index].to(self.device, non_blocking=True)

    def transform(self, raw: torch.Tensor, augment: bool, generator: torch.Generator | None) -> torch.Tensor:
        """uint8 (b, 3, s, s) -> normalised float crop (b, 3, crop, crop)."""
        size, crop = raw.shape[-1], self.crop
        if augment:
            top, left = (int(v) for v in torch.randint(0, size - crop + 1, (2,), generator=generator))
        else:
            top = left = (size - crop) // 2
        x = raw[..., top:top + crop, left:left + crop].float()
        if augment and bool(torch.rand(1, generator=generator) < 0.5):
            x = x.flip(-1)
        x = x.sub_(self.mean).mul_(self.inv_std)  # in place: one float buffer per batch
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def batch_indices(n: int, batch_size: int, shuffle: bool, weights: torch.Tensor | None,
                  generator: torch.Generator | None, max_batches: int = 0):
    """Index tensors, one per batch: in order, shuffled, or drawn class-balanced (with `weights`).

    Shared by DeviceBatches and FrozenFeatures, so both see the same order for the same generator.

    Args:
        n: images in the split.
        batch_size: images per batch (the last may have fewer).
        shuffle: shuffle (or draw, with `weights`) instead of keeping the order.
        weights: per-image sampling weights; with `shuffle`, n indices are drawn with replacement; None: a permutation.
        generator: random generator of the shuffle or draw.
        max_batches: stop after this many batches; 0: all.
    """
    if shuffle and weights is not None:
        order = torch.multinomial(weights, n, replacement=True, generator=generator)
    else:
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for count, start in enumerate(range(0, n, batch_size)):
        if max_batches and count >= max_batches:
            return
        yield order[start:start + batch_size]


def indices_on(batches, device: torch.device) -> list[torch.Tensor]:
    """An epoch's index tensors on `device`, moved in one copy.

    A blocking copy per batch would make the host wait for the GPU at every step, so it could
    never queue the next step's kernels ahead; one copy per epoch costs one such wait.
    """
    batches = list(batches)
    if device.type == "cpu" or not batches:
        return batches
    return list(torch.cat(batches).to(device).split([len(b) for b in batches]))
