"""Resumable, checksum-verified, atomic downloads of public dataset archives."""
from __future__ import annotations

import os
import shutil
import urllib.request
import zipfile
from pathlib import Path

from tqdm.auto import tqdm

from .fileio import sha256_file


class DownloadError(RuntimeError):
    """A download that failed or did not match its checksum; nothing corrupt is left in place."""


def download(url: str, dest: str | Path, sha256: str = "", progress: bool = True, timeout: float = 60) -> Path:
    """Fetch `url` to `dest`: bytes go to `dest.part` (resumed with an HTTP Range request when it
    exists), the SHA-256 is checked when given, and only then is the file renamed to `dest`."""
    dest = Path(dest)
    if dest.is_file() and (not sha256 or sha256_file(dest) == sha256.lower()):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
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
        raise DownloadError(f"downloading {url} failed ({err}); run the same command again to resume "
                            f"from {part}") from None
    digest = sha256_file(part)
    if sha256 and digest != sha256.lower():
        part.unlink()
        raise DownloadError(f"{url}: SHA-256 {digest} does not match the expected {sha256}; the partial file "
                            "was removed, try again")
    os.replace(part, dest)
    return dest


def extract(archive: Path, into: Path) -> Path:
    """Unzip into a temporary sibling folder, then rename: a half-extracted tree never looks complete."""
    tmp = into.with_name(f".{into.name}.extracting")
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp)
    entries = list(tmp.iterdir())
    if len(entries) == 1 and entries[0].is_dir():  # archive.zip/archive/... -> into/...
        lifted = tmp.with_name(tmp.name + "-lifted")
        os.replace(entries[0], lifted)
        tmp.rmdir()
        tmp = lifted
    if into.exists():
        shutil.rmtree(into)
    os.replace(tmp, into)
    return into


def fetch_dataset(info, root: Path, progress: bool = True) -> Path:
    """Download and extract every archive of a registered dataset into `root`."""
    if not info.downloads:
        raise DownloadError(f"{info.name} has no direct download. How to obtain it: {info.obtain}")
    for url, sha256, subfolder in info.downloads:
        archive = download(url, root.parent / ".downloads" / Path(url).name, sha256, progress)
        print(f"{archive.name}: sha256 {sha256_file(archive)}")
        extract(archive, root / subfolder if subfolder else root)
    return root
