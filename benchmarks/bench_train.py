"""Training throughput of studylib against a hand-written loop, strategy overheads, and the
frozen-feature shortcut for linear probing.

    python benchmarks/bench_train.py                          # GPU: resnet50, densenet121, vgg19 at 224 px
    python benchmarks/bench_train.py --tiny                   # CPU, seconds: tinycnn and resnet18 at 32 px
    python benchmarks/bench_train.py --data ../shared/data/brain-mri-nickparvar   # real images via the cache

studylib's numbers go through its real input path: uint8 images in a DeviceBatches (random
ones in the prepared-cache format, or with --data a folder of images decoded once into the
memory-mapped prepared cache by load_dataset, as a run does), crop and normalisation on the
device, per-step gradient norms for layers.csv, its optimizer groups and autocast. The
hand-written loop gets the same uint8 tensors, the same crops, model, optimizer, autocast and
memory format, and nothing else.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from studylib.core.config import RunConfig
from studylib.data.bundle import DataBundle
from studylib.data.datasets import load_dataset
from studylib.models.backbones import create_backbone
from studylib.training.engine import Device, evaluate
from studylib.training.runner import make_trainer


def bundle(n: int, size: int, classes: int = 4) -> DataBundle:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (n, 3, size, size), dtype=np.uint8)
    labels = np.arange(n) % classes
    split = np.array(["train"] * (n - 2 * 64) + ["val"] * 64 + ["test"] * 64)
    return DataBundle("bench", [str(c) for c in range(classes)], images, labels, split, [str(i) for i in range(n)])


def log(message: str) -> None:
    """A timestamped line on stderr: where a slow or stuck measurement is, without touching the tables."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def trainer_for(args, backbone: str, strategy: str, data: DataBundle, **changes):
    log(f"{backbone}, {strategy}{' ' + str(changes) if changes else ''}")
    base = dict(backbone=backbone, strategy=strategy, image_size=args.size, batch_size=args.batch,
                max_steps_per_epoch=args.steps, device=args.device, quiet=True)
    cfg = RunConfig.from_dict({**base, **changes})
    torch.manual_seed(0)
    bb = create_backbone(backbone, data.num_classes)
    dev = Device.resolve(cfg, bb)
    dev.place(bb.model)
    return make_trainer(cfg, bb, data, dev), dev


def studylib_rate(args, backbone, strategy, data, track_grads=True, **changes) -> tuple[float, float]:
    """(images/s of train_epoch, seconds of the strategy's per-epoch plan, e.g. the Auto-RGN probe)."""
    trainer, dev = trainer_for(args, backbone, strategy, data, **changes)
    trainer.track_grads = track_grads
    start = time.perf_counter()
    plan = trainer.strategy.plan(0, trainer.probe)
    sync(dev.device)
    plan_seconds = time.perf_counter() - start
    trainer.apply(plan)
    forward, train, _ = trainer.inputs(plan)
    trainer.train_epoch(0, plan, forward, train)  # warm-up (cudnn autotune, allocator)
    sync(dev.device)
    start = time.perf_counter()
    stats = trainer.train_epoch(1, plan, forward, train)
    sync(dev.device)
    return stats["steps"] * args.batch / (time.perf_counter() - start), plan_seconds


def inference_rate(args, backbone, data) -> float:
    """images/s of evaluate() over the training images (the path validation and test take)."""
    trainer, dev = trainer_for(args, backbone, "ft", data)
    evaluate(trainer.model, trainer.train_data, dev)  # warm-up
    sync(dev.device)
    start = time.perf_counter()
    _, probs, _ = evaluate(trainer.model, trainer.train_data, dev)
    return len(probs) / (time.perf_counter() - start)  # evaluate returns on the host: already synchronised


def hand_rate(args, backbone, data) -> float:
    trainer, dev = trainer_for(args, backbone, "ft", data)
    model, batches = trainer.model, trainer.train_data
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def epoch(generator):
        steps = 0
        for x, y in batches.batches(True, generator, False, args.steps):
            with dev.autocast():
                loss = F.cross_entropy(model(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
        return steps

    epoch(torch.Generator().manual_seed(0))
    sync(dev.device)
    start = time.perf_counter()
    steps = epoch(torch.Generator().manual_seed(1))
    sync(dev.device)
    return steps * args.batch / (time.perf_counter() - start)


def lp_speedup(args, backbone, data, epochs: int) -> tuple[float, float]:
    """Seconds for `epochs` epochs of LP (train + validation) with and without cached features."""
    times = []
    for cached in (False, True):
        trainer, dev = trainer_for(args, backbone, "lp", data, max_steps_per_epoch=0, max_epochs=epochs,
                                   patience=epochs, feature_cache=cached)
        sync(dev.device)
        start = time.perf_counter()
        trainer.fit()
        sync(dev.device)
        times.append(time.perf_counter() - start)
    return times[0], times[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true", help="CPU-sized: small models, 32 px, a few steps")
    parser.add_argument("--backbones", nargs="*")
    parser.add_argument("--size", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--steps", type=int, help="timed training steps per measurement")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--epoch-images", type=int, default=5000, help="dataset size for per-epoch overheads")
    parser.add_argument("--lp-epochs", type=int, default=10)
    parser.add_argument("--data", help="image folder (class folders) to load through the prepared cache")
    args = parser.parse_args()
    defaults = ((["tinycnn", "resnet18"], 32, 32, 4) if args.tiny
                else (["resnet50", "densenet121", "vgg19"], 224, 128, 20))
    args.backbones = args.backbones or defaults[0]
    args.size, args.batch, args.steps = args.size or defaults[1], args.batch or defaults[2], args.steps or defaults[3]
    log("data")
    if args.data:
        data = load_dataset(RunConfig(dataset="folder", data_root=args.data, image_size=args.size, quiet=True),
                            progress=False)
        print(f"data: {data}")
    else:
        data = bundle(args.batch * args.steps + 128, round(args.size * 232 / 224))
    device = Device.resolve(RunConfig(device=args.device), create_backbone("tinycnn", 2)).device
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"CPU {platform.machine()}, {torch.get_num_threads()} threads")
    print(f"device: {name}; torch {torch.__version__}; {args.size}px, batch {args.batch}, {args.steps} timed steps")
    print("| backbone | hand loop img/s | studylib img/s | ratio | L2-SP | L1-SP | no per-layer logging | "
          "Auto-RGN probe per epoch | inference img/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for backbone in args.backbones:
        hand = hand_rate(args, backbone, data)
        ours, _ = studylib_rate(args, backbone, "ft", data)
        l2, _ = studylib_rate(args, backbone, "l2_sp", data)
        l1, _ = studylib_rate(args, backbone, "l1_sp", data)
        bare, _ = studylib_rate(args, backbone, "ft", data, track_grads=False)
        _, probe = studylib_rate(args, backbone, "auto_rgn", data)
        infer = inference_rate(args, backbone, data)
        epoch_seconds = args.epoch_images / ours
        print(f"| {backbone} | {_rate(hand)} | {_rate(ours)} | {ours / hand:.2f} | {_pct(ours, l2)} | "
              f"{_pct(ours, l1)} | {_pct(bare, ours)} | {probe:.2f} s = {100 * probe / epoch_seconds:.1f}% of a "
              f"{args.epoch_images}-image epoch | {_rate(infer)} |", flush=True)
    print(f"\nLP, {args.lp_epochs} epochs (train {data.indices('train').size} + val {data.indices('val').size} "
          "images), full forward vs cached features:")
    for backbone in args.backbones:
        full, cached = lp_speedup(args, backbone, data, args.lp_epochs)
        print(f"  {backbone}: {full:.2f} s vs {cached:.2f} s  ({full / cached:.1f}x)")


def _rate(images_per_s: float) -> str:
    return f"{images_per_s:,.0f}" if images_per_s >= 100 else f"{images_per_s:.1f}"


def _pct(base: float, other: float) -> str:
    """Extra time per image of `other` relative to `base`, in percent."""
    return f"+{100 * (base / other - 1):.1f}%"


if __name__ == "__main__":
    main()
