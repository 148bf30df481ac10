"""Seconds per epoch and trainable parameters of every registered strategy on one backbone.

    python benchmarks/bench_strategies.py                       # resnet50 at 224 px, batch 8, 2 timed steps
    python benchmarks/bench_strategies.py --backbone tinycnn --size 32 --batch 32   # seconds, for CI

Each strategy trains through studylib's engine (its plan, optimizer groups, penalty, per-step logging) on random
uint8 images. The step is timed at the plan of the strategy's last epoch, the stage that dominates a long run
(LP-FT's fine-tuning stage, gradual unfreezing with every block open), after one warm-up epoch; seconds per epoch
are that step time times the steps of an `--epoch-images` epoch. Trainable parameters are the most any epoch of
an 8-epoch schedule trains. `plan s` is the strategy's own work before an epoch (the Auto-RGN / Auto-SNR probe).
DELTA's channel attention is measured once per run, before training, by zeroing each channel of each block's
output in turn: its cost is one timed ablation forward pass times the channels, per attention batch.
"""
from __future__ import annotations

import argparse
import platform
import time

import torch
from bench_train import bundle, log, sync

from studylib.core.config import RunConfig
from studylib.models.backbones import create_backbone
from studylib.training.engine import Device
from studylib.training.runner import make_trainer
from studylib.training.strategies import DELTA, list_strategies

SCHEDULE = dict(max_epochs=8, lp_epochs=2, gu_epochs_per_stage=1)


def trainer_for(args, strategy: str, data):
    cfg = RunConfig.from_dict(dict(backbone=args.backbone, strategy=strategy, image_size=args.size,
                                   batch_size=args.batch, max_steps_per_epoch=args.steps, device=args.device,
                                   quiet=True, delta_attention="none", **SCHEDULE))
    torch.manual_seed(0)
    backbone = create_backbone(args.backbone, data.num_classes)
    dev = Device.resolve(cfg, backbone)
    dev.place(backbone.model)
    return make_trainer(cfg, backbone, data, dev), dev


def measure(args, strategy: str, data) -> dict:
    """Trainable parameters (most over the schedule), seconds per step at the last epoch's plan, plan seconds."""
    log(strategy)
    trainer, dev = trainer_for(args, strategy, data)
    sizes = dict((n, p.numel()) for n, p in trainer.model.named_parameters())
    last = SCHEDULE["max_epochs"] - 1
    trainable = 0
    for epoch in range(SCHEDULE["max_epochs"]):
        started = time.perf_counter()
        plan = trainer.strategy.plan(epoch, trainer.probe)
        plan_seconds = time.perf_counter() - started
        trainable = max(trainable, sum(sizes[n] for n in plan.trainable))
    trainer.apply(plan)  # the last epoch's plan
    forward, train, _ = trainer.inputs(plan)
    trainer.train_epoch(last, plan, forward, train)  # warm-up
    sync(dev.device)
    started = time.perf_counter()
    stats = trainer.train_epoch(last, plan, forward, train)
    sync(dev.device)
    step = (time.perf_counter() - started) / stats["steps"]
    return {"trainable": trainable, "step": step, "epoch": step * args.epoch_images / args.batch,
            "plan": plan_seconds, "cached": trainer.frozen is not None}


def delta_attention_cost(args, data) -> tuple[float, int]:
    """(seconds of one ablation forward pass of a batch, channels ablated per attention batch)."""
    trainer, dev = trainer_for(args, "delta", data)
    strategy: DELTA = trainer.strategy
    x, _ = next(iter(trainer.probe.batches(1)))
    strategy.pretrained.eval()
    with torch.no_grad():
        maps, _ = strategy._pretrained_forward(x)
        strategy._pretrained_forward(x, (0, 0))  # warm-up
        sync(dev.device)
        started = time.perf_counter()
        strategy._pretrained_forward(x, (len(maps) - 1, 0))
        sync(dev.device)
    return time.perf_counter() - started, sum(m.shape[1] for m in maps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2, help="timed training steps")
    parser.add_argument("--epoch-images", type=int, default=5000, help="images per epoch for seconds per epoch")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--strategies", nargs="*", help="default: every registered strategy")
    args = parser.parse_args()
    data = bundle(args.batch * args.steps + 128, round(args.size * 232 / 224))
    device = Device.resolve(RunConfig(device=args.device), create_backbone("tinycnn", 2)).device
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"CPU {platform.machine()}, {torch.get_num_threads()} threads")
    print(f"device: {name}; torch {torch.__version__}; {args.backbone} {args.size}px, batch {args.batch}, "
          f"{args.steps} timed steps; seconds per epoch for {args.epoch_images} images")
    print("| strategy | trainable parameters (most in an epoch) | s per step | s per epoch | plan s per epoch |")
    print("|---|---|---|---|---|")
    for strategy in args.strategies or list_strategies():
        try:
            m = measure(args, strategy, data)
        except (ValueError, RuntimeError) as err:  # e.g. norm_tune or ssf on a backbone without BatchNorm
            print(f"| {strategy} | refused: {str(err)[:80]} | | | |", flush=True)
            continue
        cached = " (cached features)" if m["cached"] else ""
        print(f"| {strategy} | {m['trainable']:,} | {m['step']:.3f}{cached} | {m['epoch']:.1f} | {m['plan']:.2f} |",
              flush=True)
    if "delta" in (args.strategies or list_strategies()):
        forward, channels = delta_attention_cost(args, data)
        print(f"\nDELTA channel attention: {channels} channels at the block ends x {forward:.3f} s per ablation "
              f"forward = {channels * forward:.0f} s per attention batch (delta_attention_batches, default 4), "
              "once per run")


if __name__ == "__main__":
    main()
