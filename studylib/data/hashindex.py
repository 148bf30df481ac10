"""Content hashes of source images, remembered between runs (an index like git's).

The prepared-image cache is keyed by every file's bytes, so a changed file never reuses stale
pixels. Reading 100,000 files to hash them takes minutes on every run, though; a file whose
path, size, modification time, status-change time and inode are all unchanged since it was
hashed keeps its hash without being read. `ctime` cannot be set back by a user (a copy that
restores `mtime` still changes it), and a file modified within a second of being hashed is not
remembered, since a second write inside the clock's resolution would leave its stamp unchanged
(git calls these "racily clean").
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tqdm.auto import tqdm

from ..core.fileio import atomic_write, file_lock, sha256_file

INDEX = "file-hashes.json"
INDEX_VERSION = 1
RACY_SECONDS = 2.0  # files modified this recently are hashed again next time


def hash_files(paths: list[Path], cache_dir: Path, progress: bool = True) -> list[str]:
    """sha256 of each file, read only when the file changed since the index last saw it."""
    known = _load(cache_dir / INDEX)
    hashes, fresh = [], {}
    now = time.time()
    for path in tqdm(paths, desc="hashing files", disable=not progress, leave=False):
        key, stat = os.path.abspath(path), os.stat(path)
        stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]
        entry = known.get(key)
        if entry is not None and entry[:4] == stamp:
            hashes.append(entry[4])
            continue
        digest = sha256_file(path)
        hashes.append(digest)
        if now - max(stat.st_mtime_ns, stat.st_ctime_ns) / 1e9 > RACY_SECONDS:
            fresh[key] = stamp + [digest]
    if fresh:
        _remember(cache_dir, fresh)
    return hashes


def _load(path: Path) -> dict[str, list]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # absent or damaged: every file is hashed (and the index rebuilt)
        return {}
    files = data.get("files", {}) if isinstance(data, dict) and data.get("version") == INDEX_VERSION else {}
    return {key: entry for key, entry in files.items() if _well_formed(entry)} if isinstance(files, dict) else {}


def _well_formed(entry) -> bool:
    """[size, mtime_ns, ctime_ns, inode, sha256]: anything else (a hand-edited or foreign index) is not trusted."""
    return (isinstance(entry, list) and len(entry) == 5 and all(isinstance(v, int) for v in entry[:4])
            and isinstance(entry[4], str) and len(entry[4]) == 64)


def _remember(cache_dir: Path, fresh: dict[str, list]) -> None:
    """Adds entries under a lock, re-reading the index first so concurrent runs do not drop each other's;
    entries of files that no longer exist are dropped."""
    path = cache_dir / INDEX
    with file_lock(cache_dir / f"{INDEX}.lock"):
        for torn in cache_dir.glob(f".{INDEX}.*.tmp"):  # a killed writer's: under the lock, no write is under way
            torn.unlink(missing_ok=True)
        known = {key: entry for key, entry in _load(path).items() if os.path.exists(key)}
        known.update(fresh)
        atomic_write(path, json.dumps({"version": INDEX_VERSION, "files": known}))
