"""What the measurements beyond accuracy cost: feature change per block (CKA, representations.csv) and
calibration (metrics.json, reliability.csv), per run, against the run's own training time.

    python benchmarks/bench_measures.py [--backbone resnet50] [--image-size 224] [--repr-images 256]
                                        [--steps 5] [--batch-size 32] [--demo]

Feature change costs one forward pass over `repr_images` validation images at the start and one for the
selected network (plus one per logged epoch with log_representations_every); calibration is arithmetic on
the test probabilities. The backbone rows time those passes and a few training steps on random weights
(no download), and project the share of a run of `--epochs` epochs over `--train-images` images. With
--demo, one demo-sized tinycnn run is timed with and without the measurements.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from studylib.core.config import RunConfig
from studylib.data.bundle import DeviceBatches
from studylib.models.backbones import create_backbone
from studylib.training.calibration import calibration_metrics, reliability_table
from studylib.training.engine import Device
from studylib.training.representations import BlockFeatures, linear_cka


def feature_cost(backbone: str, size: int, images: int, batch: int) -> tuple[float, float]:
    """(seconds of one feature pass over `images`, seconds of the CKA of every block against itself)."""
    bb = create_backbone(backbone, 4)
    cfg = RunConfig(backbone=backbone, image_size=size, batch_size=batch, device="cpu")
    dev = Device.resolve(cfg, bb)
    data = np.random.default_rng(0).integers(0, 255, (images, 3, size, size), dtype=np.uint8)
    batches = DeviceBatches(data, np.zeros(images, dtype=np.int64), batch, size, dev.device)
    features = BlockFeatures(bb, batches, dev.autocast)
    started = time.perf_counter()
    out = features()
    forward = time.perf_counter() - started
    started = time.perf_counter()
    for block in out.values():
        linear_cka(block, block)
    return forward, time.perf_counter() - started


def step_cost(backbone: str, size: int, batch: int, steps: int) -> float:
    """Seconds per full fine-tuning step (forward, backward, Adam) at `batch` images."""
    bb = create_backbone(backbone, 4)
    model, optimizer = bb.model.train(), torch.optim.Adam(bb.model.parameters(), 1e-4)
    x, y = torch.randn(batch, 3, size, size), torch.zeros(batch, dtype=torch.long)
    for i in range(steps + 1):
        if i == 1:
            started = time.perf_counter()  # the first step warms up the allocator
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return (time.perf_counter() - started) / steps


def calibration_cost(n: int = 10_000, k: int = 8, bins: int = 15) -> float:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(k), n)
    labels = rng.integers(0, k, n)
    started = time.perf_counter()
    calibration_metrics(labels, probs, bins)
    reliability_table(labels, probs, bins)
    return time.perf_counter() - started


def demo_cost() -> tuple[float, float]:
    """Wall seconds of the demo's FT run (params/demo.yaml, random init) with and without the measurements."""
    import tempfile

    from studylib.core.templates import template
    from studylib.study.grid import load_grid
    from studylib.training.runner import run

    demo = next(c for c in load_grid(template("params", "demo.yaml")).runs if c.strategy == "ft")
    base = demo.replace(weights="none", quiet=True)
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        run(base, f"{tmp}/warm")  # the data cache and the first-call costs
        for repr_images in (0, 256):
            started = time.perf_counter()
            run(base.replace(repr_images=repr_images), f"{tmp}/r{repr_images}")
            times.append(time.perf_counter() - started)
    return times[0], times[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repr-images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--train-images", type=int, default=5000)
    parser.add_argument("--demo", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    forward, cka = feature_cost(args.backbone, args.image_size, args.repr_images, args.batch_size)
    step = step_cost(args.backbone, args.image_size, args.batch_size, args.steps)
    run_seconds = args.epochs * -(-args.train_images // args.batch_size) * step
    print("| backbone | px | repr images | one feature pass (s) | CKA of all blocks (s) | train step (s) | "
          "run of epochs x images (s, projected) | share of the run |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {args.backbone} | {args.image_size} | {args.repr_images} | {forward:.2f} | {cka:.3f} | {step:.3f} | "
          f"{args.epochs} x {args.train_images}: {run_seconds:.0f} | {2 * forward / run_seconds:.2%} |")
    print(f"calibration metrics and reliability table on 10,000 test images, 8 classes: {calibration_cost():.3f} s")
    if args.demo:
        without, with_ = demo_cost()
        print(f"the demo's FT run (params/demo.yaml, 1 thread): {without:.2f} s without feature change, "
              f"{with_:.2f} s with it (+{with_ - without:.2f} s)")


if __name__ == "__main__":
    main()
