"""How often a gain with no true difference is called significant (the false-positive rate of the
uncorrected verdict, nominal 5%), for seeds that share one test set (crossed) and seeds that each
re-drew their split (nested), across seed-to-seed spreads.

    python benchmarks/calibrate_intervals.py [--reps 400] [--seeds 3] [--images 1000]

Each simulated run predicts every test image right with a probability set by the image's
difficulty (shared by every run on one test set) and, for the strategy, a seed-level shift with
mean 0 (the seed effect: head initialisation, batch order). The strategy and FT are equally good
on average, so every "significant" is a false positive.
"""
from __future__ import annotations

import argparse

import numpy as np

from studylib.study import stats


def simulate(design: str, seed_sd: float, seeds: int, images: int, reps: int, rng: np.random.Generator) -> float:
    labels = np.arange(images) % 2

    def predictions(correct: np.ndarray, ids: np.ndarray) -> stats.Predictions:
        preds = np.where(correct, labels, 1 - labels)
        probs = np.column_stack([np.where(preds == 0, 0.9, 0.1), np.where(preds == 1, 0.9, 0.1)])
        return stats.Predictions(ids, labels, probs)

    hits = 0
    for rep in range(reps):
        shared = rng.normal(0, 1.5, images)
        pairs = []
        for seed in range(seeds):
            ids = np.array([f"{seed if design == 'nested' else 0}-{i}" for i in range(images)])
            difficulty = shared if design == "crossed" else rng.normal(0, 1.5, images)
            base = rng.random(images) < 1 / (1 + np.exp(difficulty - 1.4))
            shift = rng.normal(0, seed_sd)
            strategy = rng.random(images) < 1 / (1 + np.exp(difficulty - 1.4 - shift))
            pairs.append((predictions(strategy, ids), predictions(base, ids)))
        hits += stats.paired_gain(pairs, "balanced_accuracy", n_boot=100, seed=rep).p < 0.05
    return hits / reps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=400)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--images", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    spreads = (0.0, 0.07, 0.14, 0.35)  # seed shift sd on the logit scale: about 0, 1, 2 and 5 points of accuracy
    print(f"{args.seeds} seeds, {args.images} test images, {args.reps} null comparisons per cell (nominal 0.05)")
    print("| design | " + " | ".join(f"seed sd {s} logit" for s in spreads) + " |")
    print("|---|" + "---|" * len(spreads))
    for design in ("crossed", "nested"):
        rates = [simulate(design, s, args.seeds, args.images, args.reps, rng) for s in spreads]
        print(f"| {design} | " + " | ".join(f"{r:.3f}" for r in rates) + " |", flush=True)


if __name__ == "__main__":
    main()
