"""A real Dask cluster: a scheduler and two workers as separate processes, one killed mid-grid."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from studylib.study.grid import run_grid
from studylib.study.results import collect

GRID = """\
name: cluster
dataset: synthetic
synthetic_size: 400
backbone: tinycnn
weights: none
image_size: 16
batch_size: 16
max_epochs: 8
patience: 20
device: cpu
num_threads: 1        # the same thread count on every worker: the same numbers as a local grid
resume_every_s: 0     # save after every epoch: a retried run goes on from where its worker died
repr_images: 0
strategy: [ft, l2_sp]
seed: [1, 2]
"""


def _dask(*args: str, log: Path) -> subprocess.Popen:
    with log.open("w") as handle:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "dask", *args], stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _address(scheduler_file: Path, process: subprocess.Popen, log: Path) -> str:
    """The scheduler's address once it listens (port 0: the OS picks a free one, no race)."""
    deadline = time.time() + 60
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the dask scheduler exited: {log.read_text()[-2000:]}")
        try:
            return json.loads(scheduler_file.read_text())["address"]
        except (OSError, ValueError, KeyError):
            time.sleep(0.2)
    raise TimeoutError(f"the dask scheduler did not start in 60 s: {log.read_text()[-2000:]}")


def _running_on(out: Path, pid: int) -> Path | None:
    """A run folder that process `pid` is training, with at least one epoch saved."""
    for status in (out / "runs").glob("*/status.json"):
        try:
            record = json.loads(status.read_text())
        except (OSError, ValueError):
            continue
        if record.get("status") == "running" and record.get("pid") == pid and record.get("saved_epochs", 0) >= 1:
            return status.parent
    return None


@pytest.fixture
def cluster(tmp_path):
    scheduler_file = tmp_path / "scheduler.json"
    processes = [_dask("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file",
                       str(scheduler_file), log=tmp_path / "scheduler.log")]
    try:
        from dask.distributed import Client
        address = _address(scheduler_file, processes[0], tmp_path / "scheduler.log")
        client = Client(address, timeout=30)
        for name in ("a", "b"):
            processes.append(_dask("worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                                   "--name", name, log=tmp_path / f"worker-{name}.log"))
        client.wait_for_workers(2, timeout=90)
        client.close()
        yield address, processes[1:]
    finally:  # nothing of theirs needs a graceful stop (a SIGTERM'd worker takes 20 s to leave)
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


@pytest.mark.slow
def test_a_grid_on_a_real_cluster_survives_a_killed_worker(tmp_path, cluster):
    address, (worker_a, worker_b) = cluster
    grid = tmp_path / "cluster.yaml"
    grid.write_text(GRID)
    out = tmp_path / "on-cluster"
    finished: dict = {}
    runner = threading.Thread(target=lambda: finished.update(
        table=run_grid(grid, out, scheduler=address, engine="inline", progress=False)), daemon=True)
    runner.start()
    deadline, victim = time.time() + 240, None
    while victim is None and runner.is_alive() and time.time() < deadline:
        victim = _running_on(out, worker_a.pid)
        time.sleep(0.05)
    assert victim is not None, "worker a never held a run mid-way"
    os.killpg(worker_a.pid, signal.SIGKILL)  # the worker and anything it started, mid-epoch
    runner.join(timeout=300)
    assert not runner.is_alive(), "the grid did not finish after a worker died"

    table = finished["table"]
    assert len(table) == 4 and set(table.status) == {"finished"}
    attempts = json.loads((victim / "status.json").read_text())["attempts"]
    assert [a["pid"] for a in attempts] == [worker_a.pid, worker_b.pid]  # retried once, on the other worker
    resumed = json.loads((victim / "metrics.json").read_text())["resumed_from_epoch"]
    assert resumed >= 1  # it went on from the epochs the dead worker saved
    for run in (out / "runs").iterdir():
        if run != victim:
            assert len(json.loads((run / "status.json").read_text())["attempts"]) == 1  # the others ran once

    run_grid(grid, tmp_path / "local", engine="inline", progress=False)
    a, b = collect(out), collect(tmp_path / "local")
    metrics = [c for c in a.columns if c.startswith(("val_", "test_")) and "seconds" not in c]
    assert list(a.run) == list(b.run)
    for column in metrics:
        assert a[column].tolist() == pytest.approx(b[column].tolist(), abs=1e-6), column
