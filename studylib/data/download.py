"""Resumable, checksum-verified, atomic downloads of public dataset archives.

Extraction never deletes or overwrites anything it did not create: an archive goes into an empty or
new folder, or (with `merge`) adds only the files that are missing from an existing one.
"""
from __future__ import annotations

import filecmp
import glob
import hashlib
import os
import shutil
import urllib.request
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from ..core.fileio import file_lock, sha256_file

if TYPE_CHECKING:  # datasets imports the data stack; only the annotation needs it
    from .datasets import DatasetInfo


class DownloadError(RuntimeError):
    """A download that failed or did not match its checksum; nothing corrupt is left in place."""


def download(url: str, dest: str | Path, sha256: str = "", progress: bool = True, timeout: float = 60) -> Path:
    """Fetch `url` to `dest`: bytes go to `dest.part` (resumed with an HTTP Range request when it
    exists), the SHA-256 is checked when given, and only then is the file renamed to `dest`. One
    process at a time per file: two downloads of one archive would append to one .part.

    Args:
        url: the file's URL.
        dest: where the finished file goes (its folder is created).
        sha256: expected SHA-256 of the file; "": not checked.
        progress: show a progress bar.
        timeout: socket timeout, in seconds.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(_lock_for(dest)):
        return _download(url, dest, sha256, progress, timeout)


def _lock_for(dest: Path) -> Path:
    """The download's lock, kept in the cache folder (not beside the file: the data folder stays clean)."""
    from .cache import cache_home

    name = hashlib.sha256(str(dest.resolve()).encode()).hexdigest()[:16]
    folder = cache_home() / "download-locks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.lock"


def _download(url: str, dest: Path, sha256: str, progress: bool, timeout: float) -> Path:
    if dest.is_file() and (not sha256 or sha256_file(dest) == sha256.lower()):
        return dest
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            resumed = start and response.status == 206
            total = int(response.headers.get("Content-Length", 0)) + (start if resumed else 0)
            with open(part, "ab" if resumed else "wb") as out, tqdm(
                    total=total or None, initial=start if resumed else 0, unit="B", unit_scale=True,
                    desc=dest.name, disable=not progress) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
        if total and part.stat().st_size < total:
            raise OSError(f"connection closed after {part.stat().st_size} of {total} bytes")
    except OSError as err:  # URLError, timeouts, connection resets: the .part file stays for a resume
        kept = part.stat().st_size if part.is_file() else 0
        then = (f"run the same command again to resume from {part} ({kept:,} bytes kept)" if kept else
                f"nothing was received: check the connection and run it again, or download {url} by hand to {dest}")
        raise DownloadError(f"downloading {url} failed ({err}); {then}") from None
    digest = sha256_file(part)
    if sha256 and digest != sha256.lower():
        part.unlink()
        raise DownloadError(f"{url}: SHA-256 {digest} does not match the expected {sha256}; the partial file "
                            "was removed, try again")
    os.replace(part, dest)
    return dest


def extract(archive: Path, into: Path, merge: bool = False) -> Path:
    """Unzip into a temporary sibling folder, then move into place: a half-extracted tree never looks
    complete. `into` must be new or empty unless `merge`, which adds the archive's missing files and
    refuses, before moving anything, when an existing file differs from the archive's."""
    into = Path(into).resolve()  # "." or "x/.." have no usable name for the sibling folder
    _remove_stale_extractions(into)
    if not merge:
        _refuse_if_occupied(into)
    tmp = into.with_name(f".{into.name}.extracting")
    try:
        source = _unzip(archive, tmp)
        if _is_occupied(into):
            _merge(source, into)
        else:
            if into.exists():
                into.rmdir()  # empty: os.replace onto a folder is not portable
            os.replace(source, into)
    finally:  # a failed or refused extraction leaves no temporary folder behind
        shutil.rmtree(tmp, ignore_errors=True)
    return into


def _remove_stale_extractions(into: Path) -> None:
    """Temporary folders of an extraction that was killed (ours to delete; they are never complete)."""
    for stale in glob.glob(glob.escape(str(into.with_name(f".{into.name}.extracting"))) + "*"):
        shutil.rmtree(stale, ignore_errors=True)


def _is_occupied(into: Path) -> bool:
    return into.exists() and (not into.is_dir() or any(into.iterdir()))


def _refuse_if_occupied(into: Path) -> None:
    if _is_occupied(into):
        raise DownloadError(f"{into} already exists and is not an empty folder; nothing was changed. Choose an "
                            "empty or new --root, or pass --merge to add the archive's files without overwriting any")


def _unzip(archive: Path, tmp: Path) -> Path:
    """Extract to `tmp`; return the tree to move (archive.zip/archive/... is lifted to give into/...)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
    except zipfile.BadZipFile as err:  # e.g. an HTML error page saved without a checksum to catch it
        raise DownloadError(f"{archive} is not a valid zip archive ({err}); delete it and download again") from None
    tmp.mkdir(exist_ok=True)  # an empty archive creates nothing
    entries = list(tmp.iterdir())
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp


def _merge(source: Path, into: Path) -> None:
    """Move what `into` lacks; check every path first so that a conflict changes nothing."""
    if not into.is_dir():
        raise DownloadError(f"{into} exists and is not a folder; nothing was changed. Choose another --root")
    conflicts = [str(into / path.relative_to(source)) for path in sorted(source.rglob("*"))
                 if _conflicts(path, into / path.relative_to(source))]
    if conflicts:
        shown = ", ".join(conflicts[:3]) + (f" and {len(conflicts) - 3} more" if len(conflicts) > 3 else "")
        raise DownloadError(f"cannot merge into {into}: {len(conflicts)} existing path(s) differ from the archive's "
                            f"({shown}); nothing was changed. Move them away or choose an empty --root")
    _move_missing(source, into)


def _conflicts(new: Path, old: Path) -> bool:
    """An existing path is kept only where it matches: a folder for a folder, identical bytes for a file."""
    if not old.exists():
        return False
    if new.is_dir():
        return not old.is_dir()
    return not (old.is_file() and filecmp.cmp(new, old, shallow=False))


def _move_missing(source: Path, into: Path) -> None:
    for entry in source.iterdir():
        target = into / entry.name
        if not target.exists():
            os.replace(entry, target)  # a whole missing subtree moves in one rename
        elif entry.is_dir():
            _move_missing(entry, target)
        # else: an identical file (checked in _merge) stays as it is


def fetch_dataset(info: DatasetInfo, root: Path, progress: bool = True, merge: bool = False) -> Path:
    """Download and extract every archive of a registered dataset into `root` (see `extract` for `merge`).

    Args:
        info: the registered dataset (its downloads: URL, SHA-256, subfolder).
        root: the dataset folder to extract into.
        progress: show download progress.
        merge: add missing files to existing folders instead of requiring new or empty ones.
    """
    if not info.downloads:
        raise DownloadError(f"{info.name} has no direct download. How to obtain it: {info.obtain}")
    targets = [root / subfolder if subfolder else root for _, _, subfolder in info.downloads]
    if not merge:  # refuse before downloading gigabytes that could not be extracted
        for into in targets:
            _refuse_if_occupied(into)
    for (url, sha256, _), into in zip(info.downloads, targets):
        archive = download(url, root.parent / ".downloads" / Path(url).name, sha256, progress)
        print(f"{archive.name}: sha256 {sha256_file(archive)}")
        extract(archive, into, merge)
    return root
