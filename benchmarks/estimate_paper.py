"""Estimated wall time of params/paper.yaml (432 runs) on one GPU, from training/inference speeds.

    python benchmarks/estimate_paper.py [--epochs 15] [--speeds resnet50=3711:8317 ...]
    python benchmarks/estimate_paper.py --from-runs outputs/paper     # speeds measured by your own runs

Default speeds are the H100 measurements of docs/design.md section 5 (bf16, batch 128, synthetic
inputs already on the GPU), NOT per-run times measured by studylib. `--from-runs DIR` replaces
them, per backbone, with the training and inference images/s that finished studylib runs below
DIR logged in their history.csv (the same device and image size as the study, ideally its first
few runs). LP and LP-FT's first stage use cached features, so their frozen epochs cost one
inference pass instead of training passes.
"""
from __future__ import annotations

import argparse

from studylib.study.results import collect

# Approximate image counts (training pool before the val split; test separate) per study dataset.
DATASETS = {"chest_xray_pneumonia": (5232, 624), "brain_tumor_mri": (5712, 1311), "nct_crc_he": (100000, 7180),
            "ham10000": (8512, 1503), "hyperkvasir": (9063, 1599), "cholec80_phase": (155000, 27000)}
SPEEDS = {"resnet50": (3711, 8317), "densenet121": (1424, 3799), "vgg19": (2783, 6797)}  # train, inference img/s
STRATEGIES = ["ft", "lp", "gu_last_first", "gu_first_last", "l1_sp", "l2_sp", "lp_ft", "auto_rgn"]


def run_seconds(strategy: str, train_n: int, test_n: int, train_rate: float, infer_rate: float, epochs: int,
                lp_epochs: int = 5, val_fraction: float = 0.15) -> float:
    fit_n, val_n = train_n * (1 - val_fraction), train_n * val_fraction
    full_epoch = fit_n / train_rate + val_n / infer_rate
    features = (fit_n + val_n) / infer_rate  # computed once for frozen-backbone epochs
    if strategy == "lp":
        seconds = features
    elif strategy == "lp_ft":
        seconds = features + (epochs - lp_epochs) * full_epoch
    else:
        seconds = epochs * full_epoch * (1.03 if strategy == "auto_rgn" else 1.0)  # probe: ~3% (bench_train)
    return seconds + test_n / infer_rate


def measured_speeds(root: str) -> dict[str, tuple[float, float]]:
    """Per backbone: (training, inference) images/s pooled over the finished runs below `root`."""
    table = collect(root)
    if table.empty or "train_images_per_s" not in table:
        raise SystemExit(f"no finished run below {root} logged its speed; run a few experiments there first")
    table = table.dropna(subset=["train_images_per_s"])
    speeds = {}
    groups = table.groupby(["backbone", "image_size", "device_name"])
    for (backbone, size, device), runs in sorted(groups, key=lambda item: len(item[1])):  # most runs win
        if backbone in speeds:
            print(f"note: {backbone} also ran at other sizes/devices; using the setting with the most runs")
        speeds[backbone] = (runs.train_images_per_s.median(), runs.infer_images_per_s.median())
        print(f"measured {backbone}: {len(runs)} runs on {device} at {size} px, median "
              f"{speeds[backbone][0]:,.1f} training / {speeds[backbone][1]:,.1f} inference images/s")
    return speeds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=15, help="mean epochs per run after early stopping (max 30)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--speeds", nargs="*", default=[], help="backbone=train:inference images/s")
    parser.add_argument("--from-runs", metavar="DIR", help="use the speeds measured by finished runs below DIR")
    args = parser.parse_args()
    speeds = dict(SPEEDS)
    if args.from_runs:
        speeds = measured_speeds(args.from_runs)
    for item in args.speeds:
        name, rates = item.split("=")
        speeds[name] = tuple(float(r) for r in rates.split(":"))
    total = 0.0
    print("| backbone | hours for 6 datasets x 8 strategies x seeds |")
    print("|---|---|")
    for backbone, (train_rate, infer_rate) in speeds.items():
        hours = args.seeds * sum(run_seconds(s, n, t, train_rate, infer_rate, args.epochs)
                                 for s in STRATEGIES for n, t in DATASETS.values()) / 3600
        total += hours
        print(f"| {backbone} | {hours:.1f} |")
    print(f"| all ({len(speeds) * len(STRATEGIES) * len(DATASETS) * args.seeds} runs) | {total:.1f} |")


if __name__ == "__main__":
    main()
