"""Streaming a split from the prepared cache when it does not fit a memory budget.

A run's splits are resident (copied into memory once, as before) while they fit its budget;
a split that does not fit is read batch by batch from the cache file by a background thread
into a small ring of reusable buffers (pinned on CUDA), a few batches ahead of training.
The batch order comes from the same seeded generator either way, so a streamed run and a
resident run of one seed see the same batches and give the same numbers.
"""
from __future__ import annotations

import os
import queue
import threading
from pathlib import Path

import numpy as np
import torch

from .rows import Rows

READ_AHEAD = 2  # batches read ahead of the one training uses; the ring holds one more
RUNS_PER_HOST = "STUDYLIB_RUNS_PER_HOST"  # runs sharing this machine's memory (a grid sets it for its workers)


class MemoryBudget:
    """Host memory a run may fill with resident images; splits claim it in turn."""

    def __init__(self, nbytes: int):
        self.total = self.left = max(0, int(nbytes))

    @classmethod
    def for_run(cls, gigabytes: float) -> "MemoryBudget":
        """`gigabytes` > 0 as given; 0: half the memory available now, shared by the runs on this host."""
        if gigabytes > 0:
            return cls(int(gigabytes * 1e9))
        runs = max(1, int(os.environ.get(RUNS_PER_HOST, "1") or 1))
        return cls(available_memory() // 2 // runs)

    def claim(self, nbytes: int) -> bool:
        """True (and the bytes are taken) when `nbytes` fit in what is left."""
        if nbytes > self.left:
            return False
        self.left -= nbytes
        return True

    def __repr__(self) -> str:
        return f"MemoryBudget({self.left / 1e9:.2f} of {self.total / 1e9:.2f} GB left)"


def available_memory() -> int:
    """Bytes the kernel could hand out now without swapping (MemAvailable), or free pages elsewhere."""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    try:
        import psutil
        return int(psutil.virtual_memory().available)
    except ImportError:  # no /proc and no psutil: assume a modest machine
        return 8 * 10**9


def read_ahead(rows: Rows, order: list[torch.Tensor], batch_size: int, pin: bool, depth: int = READ_AHEAD):
    """Yields (uint8 batch, release) in `order`; call release(event) once the batch is used.

    `event` (a CUDA event recorded after the copy to the device, or None) is waited on before
    the buffer is filled again, so an asynchronous copy never reads a half-overwritten batch.
    Host memory: depth + 1 batch buffers, whatever the split's size.
    """
    shape = (batch_size, *rows.shape[1:])
    free: queue.Queue = queue.Queue()
    for _ in range(depth + 1):
        free.put((torch.empty(shape, dtype=torch.uint8, pin_memory=pin), None))
    filled: queue.Queue = queue.Queue()
    stop = threading.Event()

    def produce() -> None:
        try:
            for index in order:
                buffer, event = _take(free, stop)
                if buffer is None:
                    return
                if event is not None:
                    event.synchronize()
                rows.read(index.numpy(), buffer.numpy()[:len(index)])
                filled.put((buffer, len(index)))
            filled.put(None)
        except BaseException as err:  # handed to the training thread, which raises it
            filled.put(err)

    thread = threading.Thread(target=produce, name="studylib-read-ahead", daemon=True)
    thread.start()
    try:
        while (item := filled.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            buffer, count = item
            yield buffer[:count], lambda event=None, buffer=buffer: free.put((buffer, event))
    finally:  # also when training stops early (max_steps_per_epoch, an error)
        stop.set()
        thread.join()


def _take(free: queue.Queue, stop: threading.Event):
    while not stop.is_set():
        try:
            return free.get(timeout=0.05)
        except queue.Empty:
            continue
    return None, None


def copy_done(device: torch.device):
    """An event marking that the copies queued so far on `device` are done (None off CUDA)."""
    if device.type != "cuda":
        return None
    event = torch.cuda.Event()
    event.record()
    return event


def resident_copy(images) -> np.ndarray:
    """The rows in memory, writable (torch wants its own copy of a read-only map)."""
    if isinstance(images, Rows):
        return images[:]
    images = np.ascontiguousarray(images)
    return images if images.flags.writeable else images.copy()
