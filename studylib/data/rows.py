"""Rows of a prepared image array, selected without reading them.

A dataset of 100,000 images at 232 px is 16 GB of uint8; indexing a memory map with a list of
rows (numpy's fancy indexing) copies every selected row into memory at once. `Rows` keeps the
selection as an index until rows are asked for, and reads rows of a cache file with `pread`
rather than through the map, so the pages read live in the page cache (shared, reclaimable),
not in the process's resident memory.
"""
from __future__ import annotations

import mmap
import os

import numpy as np


class Rows:
    """A lazy selection of rows of a uint8 array of shape (n, 3, s, s): a cache file or an array."""

    def __init__(self, base: np.ndarray, index: np.ndarray | None = None):
        self.base = base
        self.index = np.arange(len(base), dtype=np.int64) if index is None else np.asarray(index, dtype=np.int64)
        self.file = _file_of(base)  # (path, offset) when the rows live in a file on disk
        self._fd: int | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self.base.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.base.dtype

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.base.shape[1:])) * self.base.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return len(self.index) * self.row_bytes

    def __len__(self) -> int:
        return len(self.index)

    def select(self, positions) -> "Rows":
        """A sub-selection, still unread (it opens the file again when it reads: a descriptor is not shared)."""
        return Rows(self.base, self.index[positions])

    def __getitem__(self, positions) -> np.ndarray:
        """The rows at `positions`, read into a new array."""
        wanted = np.atleast_1d(np.arange(len(self.index))[positions])
        out = np.empty((len(wanted), *self.base.shape[1:]), dtype=self.base.dtype)
        self.read(wanted, out)
        return out if np.ndim(np.arange(len(self.index))[positions]) else out[0]

    def __array__(self, dtype=None, copy=None):
        if copy is False:
            raise ValueError("the rows of a Rows selection are read on demand: np.asarray needs a copy")
        array = self[:]
        return array if dtype is None else array.astype(dtype)

    def read(self, positions: np.ndarray, out: np.ndarray) -> None:
        """Fills out[i] with row positions[i], reading the file in ascending offset order.

        Sorting the reads of one batch keeps a disk (or a network filesystem) reading forward;
        each row still lands in its own slot, so the batch's order is the caller's.
        """
        rows = self.index[positions]
        if self.file is None:
            np.take(self.base, rows, axis=0, out=out[:len(rows)])
            return
        if not out.flags.c_contiguous:
            raise ValueError("Rows.read needs a C-contiguous output array (a reshaped copy would lose the reads)")
        fd, (_, offset) = self._descriptor(), self.file
        flat = out.reshape(len(out), -1)
        for slot in np.argsort(rows, kind="stable"):
            _pread_into(fd, flat[slot], offset + int(rows[slot]) * self.row_bytes)

    def _descriptor(self) -> int:
        """The file, opened once: a cache entry rebuilt or deleted mid-run is still read as it was."""
        if self._fd is None:
            self._fd = os.open(self.file[0], os.O_RDONLY)
        return self._fd

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None

    def drop_from_page_cache(self) -> None:
        """Asks the kernel to forget the file's cached pages (benchmarks measure a cold read this way)."""
        if self.file is not None:
            drop_from_page_cache(self.file[0])

    def __getstate__(self) -> dict:
        # A memory map pickles as a full copy of its bytes: send the file's name instead.
        if self.file is None:
            return {"base": self.base, "index": self.index}
        return {"file": self.file, "shape": self.base.shape, "dtype": self.base.dtype.str, "index": self.index}

    def __setstate__(self, state: dict) -> None:
        if "file" in state:
            path, offset = state["file"]
            base = np.memmap(path, dtype=np.dtype(state["dtype"]), mode="r", offset=offset, shape=state["shape"])
        else:
            base = state["base"]
        self.__init__(base, state["index"])

    def __repr__(self) -> str:
        where = self.file[0] if self.file else "memory"
        return f"Rows({len(self.index)} of {len(self.base)} rows {self.base.shape[1:]} from {where})"


def select(images, index: np.ndarray):
    """`images[index]`, but unread when the rows live in a file (or are already a selection)."""
    if isinstance(images, Rows):
        return images.select(index)
    if _file_of(images) is not None:
        return Rows(images, index)
    return images[index]


def as_rows(images) -> Rows:
    return images if isinstance(images, Rows) else Rows(images)


def _file_of(array: np.ndarray) -> tuple[str, int] | None:
    """(path, byte offset of row 0) of a C-contiguous memory map of a whole file's array; else None."""
    if not isinstance(array, np.memmap) or not getattr(array, "filename", None):
        return None
    if not array.flags.c_contiguous or not isinstance(array.base, mmap.mmap):
        return None  # a slice of a map: its `offset` is still the parent's
    return str(array.filename), int(array.offset)


def _pread_into(fd: int, target: np.ndarray, offset: int) -> None:
    view = memoryview(target).cast("B")
    done = 0
    while done < len(view):  # pread may return fewer bytes than asked (signals, network filesystems)
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            raise OSError(f"the prepared-image cache ended early at byte {offset + done}; delete the cache "
                          "entry (STUDYLIB_CACHE) and run again to rebuild it")
        done += got


def drop_from_page_cache(path: str | os.PathLike) -> None:
    """Evicts a file's clean pages from the page cache, where the OS allows it (Linux: posix_fadvise)."""
    if hasattr(os, "posix_fadvise"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
