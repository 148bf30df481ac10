"""Size and write/read time of resume.pt (the mid-run resume state) for the study backbones.

    python benchmarks/bench_resume.py [--backbones resnet50 densenet121 vgg19]

The state holds the weights, Adam's two moments and, unless the last epoch was the best, the
best-validation weights; a run writes it at most every `resume_every_s` seconds (default 300).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from studylib.core.config import RunConfig
from studylib.core.fileio import save_torch
from studylib.data.bundle import DataBundle
from studylib.models.backbones import create_backbone
from studylib.training.engine import Device
from studylib.training.runner import make_trainer


def tiny_bundle(n: int = 160, size: int = 72) -> DataBundle:
    rng = np.random.default_rng(0)
    split = np.array(["train"] * (n - 64) + ["val"] * 32 + ["test"] * 32)
    return DataBundle("bench", ["a", "b"], rng.integers(0, 255, (n, 3, size, size), dtype=np.uint8),
                      np.arange(n) % 2, split, [str(i) for i in range(n)])


def measure(backbone: str, data: DataBundle) -> tuple[float, float, float]:
    """(MB, seconds to write atomically, seconds to read with weights_only) after one short epoch."""
    cfg = RunConfig(backbone=backbone, image_size=64, batch_size=16, max_epochs=1, max_steps_per_epoch=2,
                    quiet=True, device="cpu")
    model = create_backbone(backbone, data.num_classes)
    trainer = make_trainer(cfg, model, data, Device.resolve(cfg, model))
    trainer.fit()  # one epoch: Adam moments exist
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resume.pt"
        start = time.perf_counter()
        save_torch(path, trainer.checkpoint())
        write = time.perf_counter() - start
        start = time.perf_counter()
        torch.load(path, map_location="cpu", weights_only=True)
        return path.stat().st_size / 2**20, write, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbones", nargs="*", default=["resnet50", "densenet121", "vgg19"])
    args = parser.parse_args()
    data = tiny_bundle()
    print("| backbone | resume.pt | write (atomic) | read (weights_only) |")
    print("|---|---|---|---|")
    for backbone in args.backbones:
        size, write, read = measure(backbone, data)
        print(f"| {backbone} | {size:,.0f} MB | {write:.2f} s | {read:.2f} s |")


if __name__ == "__main__":
    main()
