"""Small file helpers: atomic writes, JSON/CSV that never leave half-written files, SHA-256."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import pandas as pd


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`.

    The temporary file is created with mode 0666 for the kernel to apply the umask, as a plain
    open() would (mkstemp's 0600 would survive the rename and hide shared results from colleagues).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _create_temporary(path: Path) -> tuple[int, Path]:
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue


def save_torch(path: Path, obj: Any) -> None:
    """torch.save, atomically: a kill mid-write never leaves a torn checkpoint."""
    import io

    import torch  # here, so importing fileio stays light

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, buffer.getvalue())


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; None reads back as missing
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):  # numpy / torch scalars
        return _jsonable(value.item())
    return value


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, json.dumps(_jsonable(data), indent=2) + "\n")



class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so runs stop as they do on Ctrl-C (their status: interrupted)."""

class CorruptFileError(ValueError):
    """A file studylib wrote earlier that no longer parses (torn by hand, emptied, or edited)."""


def read_json(path: Path) -> Any:
    """Parse a JSON file; a broken one raises CorruptFileError naming the file."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptFileError(f"{path} is not valid JSON ({err})") from None


def read_json_dict(path: Path) -> dict:
    """read_json of a file that must hold one JSON object (config, status, metrics)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise CorruptFileError(f"{path} holds a JSON {type(data).__name__}, not an object")
    return data


def read_json_dict_or_empty(path: Path) -> dict:
    """read_json_dict, or {} when the file is absent or unreadable (optional files: env.json, status.json)."""
    try:
        return read_json_dict(path)
    except (OSError, CorruptFileError):
        return {}


def write_csv(path: Path, rows: list[dict] | pd.DataFrame) -> None:
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    atomic_write(path, frame.to_csv(index=False))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class LockTimeout(TimeoutError):
    """Another process held a lock for longer than the caller would wait."""


@contextlib.contextmanager
def file_lock(path: Path, timeout: float = -1):
    """An exclusive lock between processes, on every OS (filelock); the OS releases it if the
    holder dies, even by kill -9. `timeout` seconds (-1: wait as long as it takes)."""
    from filelock import FileLock, Timeout

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(path, timeout=timeout):
            yield
    except Timeout:
        raise LockTimeout(f"another studylib process holds {path} (a run or a cache preparation in progress); "
                          f"gave up after {timeout:g} s. Wait for it to end, or stop it") from None


def is_locked(path: Path) -> bool:
    """Whether a live process holds the lock at `path` right now (a probe: takes it and lets go)."""
    if not Path(path).is_file():
        return False
    try:
        with file_lock(path, timeout=0):
            return False
    except LockTimeout:
        return True


class OutputPathError(ValueError):
    """An output folder that cannot be one: a file, below a file, or not writable."""


def ensure_folder(path: Path, what: str = "the output folder") -> Path:
    """Create `path` as a folder, or say in one line why it cannot be one (and what to do)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{what} {path} is a file, not a folder; choose another path")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise OutputPathError(f"{what} {path} lies below {existing}, which is a file; choose another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputPathError(f"{what} {path}: no permission to write in {existing}; choose a folder you can "
                              "write to, or fix its permissions")
    path.mkdir(parents=True, exist_ok=True)
    return path


class DiskSpaceError(OSError):
    """Not enough free space for a write studylib is about to make; the message says how much."""

    def __init__(self, message: str, filename: str | Path):
        super().__init__(errno.ENOSPC, message, str(filename))

    def __str__(self) -> str:
        return self.strerror


def reserve_space(path: Path, nbytes: int, what: str, fix: str) -> None:
    """Allocate `nbytes` for the open file `path` now, so a full disk fails here with a message
    instead of later (a memory-mapped write to a full disk kills the process with SIGBUS).

    Args:
        path: the file, already created (opened in place to allocate).
        nbytes: bytes to reserve.
        what: what needs the space, as messages name it (e.g. "the prepared-image cache").
        fix: what to do about too little space, ending the message.
    """
    free = shutil.disk_usage(Path(path).parent).free
    if free < nbytes:
        raise DiskSpaceError(f"{what} needs {nbytes / 2**20:,.0f} MB in {Path(path).parent}, which has "
                             f"{free / 2**20:,.0f} MB free; {fix}", path)
    if not hasattr(os, "posix_fallocate"):
        return
    with open(path, "r+b") as handle:
        try:
            os.posix_fallocate(handle.fileno(), 0, nbytes)
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise DiskSpaceError(f"{what} needs {nbytes / 2**20:,.0f} MB in {Path(path).parent}; the disk is "
                                     f"full; {fix}", path) from None
            # EOPNOTSUPP / EINVAL: a filesystem that cannot preallocate; the free-space check above stands
