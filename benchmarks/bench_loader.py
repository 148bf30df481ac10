"""Input pipeline: images/s from the prepared cache versus decoding with PIL every epoch.

    python benchmarks/bench_loader.py [--data ../shared/data/brain-mri-nickparvar] [--size 224] [--epochs 3]

Both paths produce the same normalised 224 px crops. The PIL path is the usual torchvision
pipeline (Resize 232, CenterCrop 224, ToTensor, Normalize) through a DataLoader with one worker
per core; the cached path decodes once (not timed per epoch, reported separately) and then
serves crops from the memory-mapped uint8 cache via DeviceBatches.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from studylib.data.bundle import DeviceBatches
from studylib.data.cache import prepare_files
from studylib.data.images import IMAGE_SUFFIXES, to_rgb


class PILFiles(Dataset):
    def __init__(self, paths, size):
        self.paths = paths
        self.tf = transforms.Compose([transforms.Resize(round(size * 232 / 224)), transforms.CenterCrop(size),
                                      transforms.ToTensor(),
                                      transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with Image.open(self.paths[i]) as image:
            return self.tf(to_rgb(image))


def synthetic_jpegs(folder: Path, n: int = 400) -> list[Path]:
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)).save(folder / f"{i}.jpg", quality=90)
    return sorted(folder.glob("*.jpg"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/brain-mri-nickparvar")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=96)
    args = parser.parse_args()
    workers = os.cpu_count() or 1
    root = Path(args.data)
    tmp = tempfile.TemporaryDirectory()
    paths = (sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if root.is_dir()
             else synthetic_jpegs(Path(tmp.name)))
    print(f"{len(paths)} images from {root if root.is_dir() else 'synthetic 512px JPEGs'}; "
          f"{workers} cores; torch {torch.__version__}; {platform.processor() or platform.machine()}")

    loader = DataLoader(PILFiles(paths, args.size), batch_size=args.batch, num_workers=workers)
    start = time.perf_counter()
    for _ in range(args.epochs):
        for _batch in loader:
            pass
    pil = len(paths) * args.epochs / (time.perf_counter() - start)

    cache_dir = Path(tmp.name) / "cache"
    start = time.perf_counter()
    prepared = prepare_files(paths, round(args.size * 232 / 224), cache_dir, workers=workers, progress=False)
    prepare_rate = len(paths) / (time.perf_counter() - start)
    labels = np.zeros(len(paths), dtype=np.int64)
    start = time.perf_counter()
    batches = DeviceBatches(prepared.images, labels, args.batch, args.size, torch.device("cpu"))
    for epoch in range(args.epochs):
        for _x, _ in batches.batches(shuffle=True, generator=torch.Generator().manual_seed(epoch)):
            pass
    cached = len(paths) * args.epochs / (time.perf_counter() - start)
    print(f"PIL decode every epoch : {pil:8.0f} images/s")
    print(f"prepare cache (once)   : {prepare_rate:8.0f} images/s")
    print(f"from the cache         : {cached:8.0f} images/s   ({cached / pil:.1f}x the PIL pipeline)")
    tmp.cleanup()


if __name__ == "__main__":
    main()
