"""Prepared-image cache: decode and resize each image once into a memory-mapped uint8 file.

The cache key is a hash of every file's bytes plus the preparation settings, so changed
data or a new size never reuses stale pixels (unchanged files are not read again to know
their hash: `hashindex`). A file lock makes concurrent preparations
of the same data safe: the second process waits and then reads what the first wrote.
Files are written under temporary names and renamed into place; the metadata JSON, written
last, marks a complete entry.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..core.fileio import LockTimeout, atomic_write, file_lock, reserve_space
from .hashindex import hash_files
from .images import ImageReadError, read_image

CACHE_VERSION = 1


@dataclass
class Prepared:
    images: np.ndarray  # (n, 3, s, s) uint8, memory-mapped; rows of unreadable files are zero
    errors: dict[int, str]  # index -> why the file could not be read
    sizes: list[tuple[int, int]]  # original (width, height); (0, 0) when unreadable
    file_hashes: list[str]  # sha256 of each file's bytes (exact duplicates share one)
    image_hashes: list[int]  # 64-bit perceptual hash of each prepared image (near duplicates are close)
    key: str
    reused: bool


def cache_home() -> Path:
    return Path(os.environ.get("STUDYLIB_CACHE", Path.home() / ".cache" / "studylib"))


class CacheError(RuntimeError):
    """Preparing the image cache failed for a reason outside any one image."""


def prepare_files(paths: list[Path], size: int, cache_dir: Path | None = None, workers: int = 0,
                  progress: bool = True) -> Prepared:
    """Decode `paths` at `size` into the cache (or reuse the entry); never raises for a bad image.

    Args:
        paths: image files, in order (the entry's rows).
        size: side of the prepared square images, in pixels (prepared_size).
        cache_dir: cache folder; None: cache_home() (STUDYLIB_CACHE, else ~/.cache/studylib).
        workers: decoding processes; 0: automatic (auto_workers).
        progress: show progress bars.
    """
    cache_dir = Path(cache_dir or cache_home())
    cache_dir.mkdir(parents=True, exist_ok=True)
    hashes = hash_files(paths, cache_dir, progress)  # reads only files changed since they were last hashed
    key = hashlib.sha256(json.dumps([CACHE_VERSION, size, hashes]).encode()).hexdigest()[:24]
    npy, meta = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    remove_stale_temporaries(cache_dir)
    with file_lock(cache_dir / f"{key}.lock"):
        info = _entry(npy, meta)
        reused = info is not None
        if not reused:
            _build(paths, size, npy, meta, workers, progress)
            info = _entry(npy, meta)
    return Prepared(np.load(npy, mmap_mode="r"), {int(k): v for k, v in info["errors"].items()},
                    [tuple(s) for s in info["sizes"]], hashes, info["image_hashes"], key, reused)


def _entry(npy: Path, meta: Path) -> dict | None:
    """A complete, undamaged cache entry's metadata; None when absent or damaged (then it is built again).

    Damaged: the array's header or size does not fit its images (a truncated or 0-byte file), or the
    bytes at sampled places (the last block included) are not those written (a zeroed tail). Entries of
    older versions, without samples, get them now."""
    try:
        info = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    if not (npy.is_file() and isinstance(info, dict) and {"errors", "sizes", "image_hashes"} <= set(info)):
        return None
    if not _whole(npy, len(info["sizes"])):
        print(f"note: the prepared-image cache entry {npy.name} is damaged (its size does not fit its images); "
              "rebuilding it")
        return None
    digest = sample_digest(npy)
    if "sample_sha256" not in info:
        atomic_write(meta, json.dumps({**info, "sample_sha256": digest}))
    elif info["sample_sha256"] != digest:
        print(f"note: the prepared-image cache entry {npy.name} was changed on disk since it was written; "
              "rebuilding it")
        return None
    return info


SAMPLES, BLOCK = 32, 1 << 16  # 2 MiB read per use, whatever the entry's size


def sample_digest(path: Path) -> str:
    """sha256 of SAMPLES blocks spread evenly over the file, the first and the last included."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        for offset in sorted({min(size - 1, i * size // SAMPLES) for i in range(SAMPLES)} | {max(0, size - BLOCK)}):
            handle.seek(max(0, offset))
            digest.update(handle.read(BLOCK))
    return digest.hexdigest()


def _whole(npy: Path, rows: int) -> bool:
    """The .npy's header reads, holds `rows` rows, and the file is exactly header + data long."""
    try:
        with open(npy, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(handle)
            header = handle.tell()
    except (OSError, ValueError, EOFError):
        return False
    return shape[0] == rows and npy.stat().st_size == header + int(np.prod(shape)) * np.dtype(dtype).itemsize


def remove_stale_temporaries(cache_dir: Path) -> None:
    """Delete half-built arrays of preparations that were killed: a temporary whose entry's lock
    nobody holds has no builder left (a live builder holds the lock while it writes)."""
    for tmp in cache_dir.glob(".*.tmp.npy"):
        key = tmp.name.split(".")[1]
        try:
            with file_lock(cache_dir / f"{key}.lock", timeout=0):
                tmp.unlink(missing_ok=True)
        except LockTimeout:
            continue


def _build(paths: list[Path], size: int, npy: Path, meta: Path, workers: int, progress: bool) -> None:
    tmp = npy.with_name(f".{npy.stem}.{os.getpid()}.tmp.npy")
    try:
        info = _fill(paths, size, tmp, workers, progress)
        info["sample_sha256"] = sample_digest(tmp)
        os.replace(tmp, npy)
        atomic_write(meta, json.dumps(info))  # last: the metadata marks a complete entry
    finally:
        tmp.unlink(missing_ok=True)  # after a failure (or a kill of a worker), nothing half-built stays


AUTO_CHUNKS_PER_WORKER = 4  # below 4 chunks of 64 images per worker, starting worker processes costs more than it saves


def auto_workers(chunks: int) -> int:
    """workers=0: one process per core up to 8, but no more than the work keeps busy; a few hundred images
    decode in this process."""
    return max(1, min(8, os.cpu_count() or 1, chunks // AUTO_CHUNKS_PER_WORKER))


def _fill(paths: list[Path], size: int, tmp: Path, workers: int, progress: bool) -> dict:
    """Decode every file into the array at `tmp`; returns the entry's metadata."""
    array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), 3, size, size))
    nbytes = array.offset + array.nbytes
    del array  # workers reopen the file and write their own rows
    reserve_space(tmp, nbytes, "the prepared-image cache", "free space there, or set STUDYLIB_CACHE to a folder "
                                                           "on a larger disk")
    chunks = [list(range(i, min(i + 64, len(paths)))) for i in range(0, len(paths), 64)]
    jobs = [(str(tmp), [str(paths[i]) for i in chunk], chunk, size) for chunk in chunks]
    workers = workers or auto_workers(len(chunks))
    results = []
    bar = tqdm(total=len(paths), desc="preparing images", disable=not progress, leave=False)
    try:
        with (ProcessPoolExecutor(workers) if workers > 1 else contextlib.nullcontext()) as pool:
            mapper = pool.map(_decode_chunk, jobs) if pool else map(_decode_chunk, jobs)
            for result in mapper:
                results.extend(result)
                bar.update(len(result))
    except BrokenProcessPool:
        raise CacheError(f"a worker process preparing images died (usually out of memory); set workers=1 or a "
                         f"lower number and run again (cache: {tmp.parent})") from None
    finally:
        bar.close()
    results.sort(key=lambda r: r[0])
    return {"version": CACHE_VERSION, "size": size, "count": len(paths),
            "errors": {i: err for i, _, _, err in results if err},
            "sizes": [s for _, s, _, _ in results], "image_hashes": [h for _, _, h, _ in results]}


def _decode_chunk(job: tuple[str, list[str], list[int], int]) -> list[tuple[int, tuple, int, str]]:
    target, paths, indices, size = job
    out = np.load(target, mmap_mode="r+")
    results = []
    for path, index in zip(paths, indices):
        try:
            array, original = read_image(path, size)
        except ImageReadError as err:
            results.append((index, (0, 0), 0, str(err)))
            continue
        out[index] = array
        results.append((index, original, perceptual_hash(array), ""))
    out.flush()
    return results


_N = 32
_DCT = np.cos(np.pi * (2 * np.arange(_N)[None, :] + 1) * np.arange(_N)[:, None] / (2 * _N))


def perceptual_hash(image: np.ndarray) -> int:
    """64-bit pHash: signs of the lowest 8x8 DCT frequencies of a 32x32 grey thumbnail versus their median.

    Stable under resizing, re-encoding and small edits, so near-identical copies land a few
    bits apart while different images of the same modality stay far apart.
    """
    grey = Image.fromarray(image.mean(axis=0).astype(np.uint8)).resize((_N, _N), Image.Resampling.BOX)
    coeffs = (_DCT @ np.asarray(grey, dtype=np.float64) @ _DCT.T)[:8, :8].ravel()
    bits = coeffs > np.median(coeffs[1:])
    return int(np.packbits(bits).view(">u8")[0])
