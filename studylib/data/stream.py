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
        return cls(available_memory() // 2 // runs_per_host())

    def claim(self, nbytes: int) -> bool:
        """True (and the bytes are taken) when `nbytes` fit in what is left."""
        if nbytes > self.left:
            return False
        self.left -= nbytes
        return True

    def __repr__(self) -> str:
        return f"MemoryBudget({self.left / 1e9:.2f} of {self.total / 1e9:.2f} GB left)"


def runs_per_host() -> int:
    value = os.environ.get(RUNS_PER_HOST, "").strip() or "1"
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{RUNS_PER_HOST}={value!r} is not a number of runs; set it to how many runs share this "
                         "machine (1 or more), or unset it")
    return int(value)


def available_memory() -> int:
    """Bytes this process could still get: MemAvailable, or less where a container's limit (cgroup:
    SLURM, Kubernetes, Docker) is lower than the machine's memory."""
    free = _meminfo_available()
    limit = _cgroup_room()
    return min(free, limit) if limit is not None else free


def _meminfo_available() -> int:
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


def _cgroup_room() -> int | None:
    """Limit minus usage of this process's memory cgroup (v2, then v1); None when unlimited or unknown."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:  # v1 writes a huge number for "no limit", v2 "max"
            return max(0, int(limit) - usage)
        return None
    return None


def read_ahead(rows: Rows, order: list[torch.Tensor], batch_size: int, pin: bool, depth: int = READ_AHEAD):
    """Yields (uint8 batch, release) in `order`; call release(event) once the batch is used.

    `event` (a CUDA event recorded after the copy to the device, or None) is waited on before
    the buffer is filled again, so an asynchronous copy never reads a half-overwritten batch.
    Host memory: depth + 1 batch buffers, whatever the split's size.

    Args:
        rows: the split's rows of the prepared-image cache.
        order: index tensor of each batch, in the order they are yielded.
        batch_size: largest batch (the size of each buffer).
        pin: allocate the buffers in pinned memory (CUDA, for asynchronous copies).
        depth: batches read ahead of the one in use.
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
    event.record(torch.cuda.current_stream(device))  # the copy's device, not whichever is current
    return event


def resident_tensor(images, pin: bool) -> torch.Tensor:
    """The rows in memory as one writable uint8 tensor (torch wants its own copy of a read-only map),
    read straight into pinned memory when `pin`, so the split is never held twice."""
    shape = tuple(images.shape)
    if not pin and not isinstance(images, Rows):
        array = np.ascontiguousarray(images)
        return torch.from_numpy(array if array.flags.writeable else array.copy())
    tensor = torch.empty(shape, dtype=torch.uint8, pin_memory=pin)
    target = tensor.numpy()
    if isinstance(images, Rows):
        images.read(np.arange(len(images)), target)
    else:
        target[...] = images
    return tensor
