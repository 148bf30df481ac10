"""Scale: a prepared split larger than the memory budget, trained resident and streamed; start-up with the hash index.

    python benchmarks/bench_scale.py [--budget-gb 1] [--steps 200] [--batch 32] [--backbone tinycnn]
                                     [--device auto] [--files 20000] [--only stream|index] [--dir outputs/bench_scale]

(--steps 0, the default: 300 steps on CUDA, 40 on a CPU, where a 224 px step takes seconds.)

Streaming: a cache file 2.2x the budget is generated directly as a memory map of 232 px uint8
images (noise; pixels do not change the cost). Each mode trains `--steps` steps at 224 px in its
own process, through studylib's runner (one epoch capped at the steps; 256 val and 256 test
images), and reports images/s, start-up and peak RSS:
  model            the same training on the first 1,024 images only: the process without the data
  resident         budget large enough for every split (today's path)
  streamed, warm   budget `--budget-gb`; the file is in the page cache (read once before)
  streamed, cold   the same after dropping the file from the page cache (posix_fadvise)
The disk's own rate is measured cold too: sequential MB/s and random rows/s.

Start-up: `--files` PNGs (64 px) are prepared once; then the second preparation (what every
later run does) is timed without the hash index (every file read and hashed, as before) and
with it, each from a warm and a cold page cache.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def prepared_size(crop: int) -> int:
    return round(crop * 232 / 224)  # the study's resize before the centre crop


def make_cache(path: Path, rows: int, size: int) -> None:
    if path.is_file() and np.load(path, mmap_mode="r").shape == (rows, 3, size, size):
        return  # made by an earlier run with the same sizes
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(rows, 3, size, size))
    rng = np.random.default_rng(0)
    block = rng.integers(0, 255, (256, 3, size, size), dtype=np.uint8)
    for start in range(0, rows, 256):
        count = min(256, rows - start)
        array[start:start + count] = np.roll(block, start, axis=0)[:count]
    array.flush()
    del array


def child(args) -> None:
    """One training run in this process; prints a JSON line."""
    import pandas as pd
    import torch

    from studylib.core.config import RunConfig
    from studylib.data.bundle import DataBundle
    from studylib.data.rows import Rows
    from studylib.training.runner import run

    started = time.perf_counter()
    rows = Rows(np.load(args.dir / "scale.npy", mmap_mode="r"))
    if args.mode == "cold":
        rows.drop_from_page_cache()
    if args.mode == "model":  # the same training on 1,024 images: what the process needs besides the data
        rows = rows.select(np.arange(min(1024, len(rows))))
    n = len(rows)
    held = min(256, n // 8)  # validation and test images
    split = np.array(["train"] * (n - 2 * held) + ["val"] * held + ["test"] * held, dtype=object)
    labels = np.arange(n) % 4
    data = DataBundle("scale", ["a", "b", "c", "d"], rows, labels, split, [str(i) for i in range(n)])
    budget = 100.0 if args.mode == "resident" else args.budget_gb
    cfg = RunConfig(dataset="synthetic", backbone=args.backbone, image_size=args.image_size, batch_size=args.batch,
                    max_epochs=1, max_steps_per_epoch=args.steps, device=args.device, repr_images=0,
                    memory_gb=budget, quiet=True, resume_every_s=-1, num_threads=args.threads)
    result = run(cfg, args.dir / f"run-{args.mode}", overwrite=True, data=data)
    history = pd.read_csv(args.dir / f"run-{args.mode}" / "history.csv")
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    train_seconds = float(history.train_seconds.sum())
    print(json.dumps({"mode": args.mode, "streamed": result.metrics["streamed"],
                      "images_per_s": float(history.train_images.sum()) / train_seconds,
                      "train_seconds": train_seconds, "total_seconds": time.perf_counter() - started,
                      "peak_rss_gb": peak_kb * 1024 / 1e9,
                      "device": str(torch.device(args.device) if args.device != "auto" else
                                    ("cuda" if torch.cuda.is_available() else "cpu"))}))


def disk_rates(path: Path, row_bytes: int) -> dict:
    from studylib.data.rows import Rows

    rows = Rows(np.load(path, mmap_mode="r"))
    rows.drop_from_page_cache()
    fd, chunk, total = os.open(path, os.O_RDONLY), 8 << 20, 0
    started = time.perf_counter()
    try:
        while total < min(os.path.getsize(path), 1 << 30) and (data := os.pread(fd, chunk, total)):
            total += len(data)
    finally:
        os.close(fd)
    sequential = total / (time.perf_counter() - started) / 1e6
    rows.drop_from_page_cache()
    pick = np.random.default_rng(1).choice(len(rows), 2000, replace=False)
    out = np.empty((2000, *rows.shape[1:]), dtype=np.uint8)
    started = time.perf_counter()
    rows.read(pick, out)
    per_s = 2000 / (time.perf_counter() - started)
    started = time.perf_counter()
    rows.read(pick, out)  # the same rows again, now from the page cache
    warm = 2000 / (time.perf_counter() - started)
    return {"sequential_mb_per_s": sequential, "random_rows_per_s": per_s,
            "random_mb_per_s": per_s * row_bytes / 1e6, "warm_random_rows_per_s": warm}


def loader_rates(path: Path, batch: int, crop: int, device: str) -> dict:
    """Images/s of the input side alone on 4,096 shuffled rows (file in the page cache): resident batches,
    streamed batches (both with crop and normalisation), and the read-ahead thread by itself."""
    import torch

    from studylib.data.bundle import DeviceBatches
    from studylib.data.rows import Rows
    from studylib.data.stream import MemoryBudget, read_ahead

    rows = Rows(np.load(path, mmap_mode="r"))
    rows = rows.select(np.arange(min(4096, len(rows))))
    labels = np.zeros(len(rows), dtype=np.int64)
    dev = torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")
    rates = {}
    for name, budget in (("resident", None), ("streamed", MemoryBudget(0))):
        batches = DeviceBatches(rows, labels, batch, crop, dev, budget=budget)
        started = time.perf_counter()
        seen = sum(len(y) for _, y in batches.batches(True, torch.Generator().manual_seed(0)))
        if dev.type == "cuda":
            torch.cuda.synchronize()
        rates[f"{name}_batches_per_s"] = seen / (time.perf_counter() - started)
    order = list(torch.randperm(len(rows), generator=torch.Generator().manual_seed(0)).split(batch))
    started = time.perf_counter()
    for _raw, release in read_ahead(rows, order, batch, pin=dev.type == "cuda"):
        release()
    rates["read_ahead_only_per_s"] = len(rows) / (time.perf_counter() - started)
    return rates


def stream_part(args) -> list[dict]:
    size = prepared_size(args.image_size)
    row_bytes = 3 * size * size
    rows = int(np.ceil(2.2 * args.budget_gb * 1e9 / row_bytes))
    args.dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    make_cache(args.dir / "scale.npy", rows, size)
    print(f"cache file: {rows} images at {size} px, {rows * row_bytes / 1e9:.2f} GB "
          f"(made in {time.perf_counter() - started:.0f} s); budget {args.budget_gb} GB", flush=True)
    results = []
    for mode in ("model", "resident", "warm", "cold"):
        if mode == "warm":  # read the file once so it is in the page cache
            subprocess.run(["cat", str(args.dir / "scale.npy")], stdout=subprocess.DEVNULL, check=True)
        if args.in_process:  # the code path without its measurement: peak RSS then adds up over the modes
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                child(argparse.Namespace(**{**vars(args), "mode": mode}))
            line = printed.getvalue().strip().splitlines()[-1]
        else:
            command = [sys.executable, __file__, "--child", mode, "--dir", str(args.dir), "--image-size",
                       str(args.image_size), "--budget-gb",
                       str(args.budget_gb), "--steps", str(args.steps), "--batch", str(args.batch), "--backbone",
                       args.backbone, "--device", args.device, "--threads", str(args.threads)]
            line = subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        results.append(json.loads(line))
        print(json.dumps(results[-1]), flush=True)
    disk = disk_rates(args.dir / "scale.npy", row_bytes)
    print(json.dumps(disk), flush=True)
    subprocess.run(["cat", str(args.dir / "scale.npy")], stdout=subprocess.DEVNULL, check=True)
    loader = loader_rates(args.dir / "scale.npy", args.batch, args.image_size, args.device)
    print(json.dumps(loader), flush=True)
    base = results[1]["images_per_s"]
    print("\n| mode | splits streamed | images/s | vs resident | peak RSS (GB) | process total (s) |\n"
          "|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['mode']} | {', '.join(r['streamed']) or 'none'} | {r['images_per_s']:.1f} | "
              f"{r['images_per_s'] / base:.2f} | {r['peak_rss_gb']:.2f} | {r['total_seconds']:.1f} |")
    print(f"\ndisk, cold: {disk['sequential_mb_per_s']:.0f} MB/s sequential, {disk['random_rows_per_s']:.0f} random "
          f"rows/s ({disk['random_mb_per_s']:.0f} MB/s) at {row_bytes / 1e3:.0f} kB per row; "
          f"from the page cache: {disk['warm_random_rows_per_s']:.0f} random rows/s")
    print(f"input side alone (page cache, {args.image_size} px crops): "
          f"resident batches {loader['resident_batches_per_s']:.0f} "
          f"img/s, streamed batches {loader['streamed_batches_per_s']:.0f} img/s "
          f"({loader['streamed_batches_per_s'] / loader['resident_batches_per_s']:.2f}), read-ahead thread alone "
          f"{loader['read_ahead_only_per_s']:.0f} img/s")
    return results


def index_part(args) -> None:
    from PIL import Image

    from studylib.data import hashindex
    from studylib.data.cache import prepare_files
    from studylib.data.rows import drop_from_page_cache

    folder, cache = args.dir / "files", args.dir / "files-cache"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:06d}.png" for i in range(args.files)]
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    for path in paths:
        if not path.is_file():
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    old = time.time() - 3600
    for path in paths:
        os.utime(path, (old, old))  # settled files (not "racily clean")
    total_mb = sum(p.stat().st_size for p in paths) / 1e6
    print(f"{args.files} PNG files, {total_mb:.0f} MB (made in {time.perf_counter() - started:.0f} s)", flush=True)
    started = time.perf_counter()
    prepare_files(paths, 72, cache, workers=args.workers, progress=False)
    print(f"first preparation (decode + hash): {time.perf_counter() - started:.1f} s", flush=True)

    def drop_cache():
        for path in paths:
            drop_from_page_cache(path)

    rows = []
    for label, keep_index in (("without the index (before)", False), ("with the index (after)", True)):
        for warmth in ("warm", "cold"):
            if not keep_index:
                (cache / hashindex.INDEX).unlink(missing_ok=True)
            if warmth == "cold":
                drop_cache()
            started = time.perf_counter()
            prepared = prepare_files(paths, 72, cache, workers=args.workers, progress=False)
            seconds = time.perf_counter() - started
            assert prepared.reused
            rows.append((label, warmth, seconds))
            print(f"second preparation {label}, {warmth} page cache: {seconds:.2f} s", flush=True)
    print("\n| start-up of a later run | page cache | seconds |\n|---|---|---|")
    for label, warmth, seconds in rows:
        print(f"| {label} | {warmth} | {seconds:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-gb", type=float, default=1.0)
    parser.add_argument("--image-size", type=int, default=224, help="crop side (the cache holds it resized by 232/224)")
    parser.add_argument("--steps", type=int, default=0, help="training steps per mode; 0: 300 on CUDA, 40 on a CPU")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--backbone", default="tinycnn")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=0, help="processes decoding the files (0: one per core)")
    parser.add_argument("--only", choices=("stream", "index"), default=None)
    parser.add_argument("--dir", type=Path, default=Path("outputs/bench_scale"))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--in-process", action="store_true",
                        help="run each mode in this process (a smoke test of the code: RSS and start-up not measured)")
    args = parser.parse_args()
    args.mode = args.child
    if args.child:
        return child(args)
    import torch
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"cuda: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}", flush=True)
    args.steps = args.steps or (300 if torch.cuda.is_available() and args.device != "cpu" else 40)
    if args.only in (None, "stream"):
        stream_part(args)
    if args.only in (None, "index"):
        index_part(args)


if __name__ == "__main__":
    main()
