"""Fault test: SIGKILL a grid at seeded random moments; nothing is lost, nothing is done twice.

For each engine the same tiny grid runs twice:

  A  uninterrupted, in this process: the reference;
  B  `python -m studylib grid` started in a session of its own and killed with SIGKILL (the grid and
     every notebook kernel it started) KILLS[engine] times at random moments while it works, then run once
     more to completion, in this process.

The kill moments are seeded, one in each quarter (papermill: third) of A's timeline (5%..80% of its wall time, so that B
cannot end before its last kill). B is killed where A stood at such a moment: when B has reached the
milestone A had reached then (a run's notebook started, its status 'running', an epoch logged, a run
finished) and spent as many seconds past it, or sooner, at A's next milestone, should B run faster.
So B's start-up (importing torch and friends) and the work it must do again after each kill do not
count, and the kills land all along the grid: in a kernel's start, in training, in the test, in file
writes, in the notebook's plotting cells.

It proves that a kill at any of those moments

  - never trains a finished run again: no file of a run that had finished changes later;
  - never loses a run: every run of B finishes, and its status.json says so;
  - never changes a result: every run of B, resumed or not, has the metrics, best epoch, epochs run
    and per-epoch history (losses, validation metrics) of A, bit for bit (timings aside);
  - leaves no half-written temporary file and no stale resume.pt in the run folders, and (papermill)
    every executed notebook ran all its cells and saved all its figures, as in A.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from studylib.study.grid import NOTEBOOK_PENDING, run_grid
from studylib.study.results import collect

ROOT = Path(__file__).resolve().parents[2]
SEED = 1729
KILLS = {"inline": 4, "papermill": 2}  # a papermill attempt pays a kernel start: fewer (in training, and in a
# kernel's start or the files of a finishing run, by the seeded schedule); the inline engine takes the rest
GRID = ("dataset: synthetic\nsynthetic_size: 160\nbackbone: tinycnn\nimage_size: 16\nbatch_size: 32\n"
        "max_epochs: 5\nlp_epochs: 2\ngu_epochs_per_stage: 1\npatience: 10\ndevice: cpu\nnum_threads: 1\n"
        "resume_every_s: 0\n")
STRATEGIES = {"inline": "[ft, lp_ft, gu_last_first, l2_sp]",
              "papermill": "[gu_last_first, l2_sp]"}  # a kernel start per run: keep it to two
TIMINGS = {"wall_seconds", "test_seconds", "peak_memory_mb", "resumed_from_epoch"}  # differ between A and B


def write_grid(folder: Path, engine: str) -> Path:
    path = folder / f"faults-{engine}.yaml"
    path.write_text(GRID + f"strategy: {STRATEGIES[engine]}\n")
    return path


def written_since(path: Path, since_ns: int) -> bool:
    try:
        return path.stat().st_mtime_ns >= since_ns
    except FileNotFoundError:  # not there (yet), or a run starting afresh just cleared it
        return False


def logged_epochs(history: Path) -> int:
    try:
        return max(0, len(history.read_text().splitlines()) - 1)
    except FileNotFoundError:
        return 0


def milestone(out: Path, since_ns: int) -> int:
    """How far the grid process started at `since_ns` has come, counted in milestones on disk.

    A finished run counts in full; an unfinished one counts what this process wrote into it: its
    notebook started (papermill), its status 'running' (the run began: kernel up, imports done),
    each epoch logged. What an earlier, killed process left behind does not count."""
    count = 0
    for folder in out.glob("runs/*"):
        history = folder / "history.csv"
        if (folder / "metrics.json").is_file():
            count += 3 + logged_epochs(history)
        else:
            count += sum(written_since(folder / name, since_ns) for name in ("experiment.ipynb", "status.json"))
            count += logged_epochs(history) if written_since(history, since_ns) else 0
    return count


def has_written(out: Path, since_ns: int) -> bool:
    """Whether a file of a run folder was written since `since_ns` (the grid process is past its start-up)."""
    return any(written_since(path, since_ns) for path in out.glob("runs/*/*") if not path.is_dir())


def run_reference(grid: Path, out: Path, engine: str) -> tuple[float, list[tuple[float, int]]]:
    """Run the grid uninterrupted; its wall time and its timeline: (seconds, milestone) at each new milestone."""
    timeline, done = [(0.0, 0)], threading.Event()

    def watch():
        while not done.wait(0.02):
            reached = milestone(out, 0)
            if reached != timeline[-1][1]:
                timeline.append((time.monotonic() - started, reached))

    started = time.monotonic()
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        run_grid(grid, out, engine=engine, progress=False)
    finally:
        done.set()
        watcher.join()
    return time.monotonic() - started, timeline


def kill_targets(seconds: float, timeline: list[tuple[float, int]], rng: random.Random,
                 kills: int) -> list[tuple[int, float, int]]:
    """Where to kill: one seeded moment in each kills-th of 5%..80% of the reference grid's time, said as
    the milestone the reference had reached then, the seconds it had spent past it, and its next milestone."""
    width = 0.75 / kills
    targets = []
    for k in range(kills):
        moment = seconds * (0.05 + width * (k + rng.random()))
        before = [point for point in timeline if point[0] <= moment]
        after = [point for point in timeline if point[0] > moment] or [(seconds, timeline[-1][1] + 1)]
        targets.append((before[-1][1], moment - before[-1][0], after[0][1]))
    return targets


def kill_at(proc: subprocess.Popen, out: Path, since_ns: int, target: tuple[int, float, int]) -> str | None:
    """SIGKILL the grid where the reference stood at a kill moment: once it has reached the same milestone
    (its start-up and the work it has to do again do not count), as many seconds later, or sooner if it
    gets to the reference's next milestone first (it runs faster). None if the grid exits first."""
    reached, past, next_one = target
    caught_up = None
    while proc.poll() is None:
        now, at = time.monotonic(), milestone(out, since_ns)
        if caught_up is None and at >= reached and has_written(out, since_ns):
            caught_up = now
        if caught_up is not None and (now >= caught_up + past or at >= next_one):
            kill_grid(proc)
            return f"killed {now - caught_up:.2f} s past milestone {reached}, standing at {at}"
        time.sleep(0.02)
    return None


def kill_grid(proc: subprocess.Popen) -> None:
    """SIGKILL the grid's process group and every process it started.

    jupyter_client starts each kernel in a session of its own, so the kernels are not in the
    grid's process group; the grid is frozen first so that no kernel starts while we look."""
    os.killpg(proc.pid, signal.SIGSTOP)
    family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    for group in {os.getpgid(p.pid) for p in family if p.is_running()}:
        os.killpg(group, signal.SIGKILL)
    proc.wait(timeout=30)
    _, alive = psutil.wait_procs(family[1:], timeout=30)
    assert not alive, f"processes survived SIGKILL: {alive}"


def finished_files(out: Path) -> dict[str, int]:
    """mtime_ns of every file in every finished run folder: one holding metrics.json and, under papermill,
    whose notebook ran to the end (no .notebook-pending); the hidden lock and marker files aside."""
    return {str(path.relative_to(out)): path.stat().st_mtime_ns
            for metrics in out.glob("runs/*/metrics.json") if not (metrics.parent / NOTEBOOK_PENDING).exists()
            for path in metrics.parent.iterdir() if path.is_file() and not path.name.startswith(".")}


def assert_unchanged(out: Path, stamps: dict[str, int]) -> None:
    changed = [name for name, stamp in stamps.items() if (out / name).stat().st_mtime_ns != stamp]
    assert not changed, f"files of runs that had finished were written again: {changed}"


def run_results(out: Path) -> dict[str, tuple[dict, pd.DataFrame]]:
    """Per run: metrics.json without timings, and history.csv without its timing columns."""
    results = {}
    for folder in sorted(out.glob("runs/*")):
        metrics = json.loads((folder / "metrics.json").read_text())
        history = pd.read_csv(folder / "history.csv")
        results[folder.name] = ({k: v for k, v in metrics.items() if k not in TIMINGS},
                                history.drop(columns=[c for c in history if c.endswith("seconds")]))
    return results


def interrupt_repeatedly(command: list[str], out: Path, targets: list[tuple], logs: Path) -> list[str]:
    """Start the grid and SIGKILL it at each target in turn; returns what each attempt did."""
    done, stamps = [], {}
    for attempt, target in enumerate(targets):
        started = time.time_ns()
        with open(logs / f"attempt-{attempt}.log", "w") as log:
            proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        killed = kill_at(proc, out, started, target)
        if killed is None:
            done.append(f"attempt {attempt}: the grid exited ({proc.returncode}) before its kill")
            break
        done.append(f"attempt {attempt}: {killed}; {len(list(out.glob('runs/*/metrics.json')))} runs finished")
        assert_unchanged(out, stamps)
        stamps.update(finished_files(out))
    assert_unchanged(out, stamps)
    return done


def notebook_record(folder: Path) -> tuple[int, list[str]]:
    """Code cells the executed experiment.ipynb ran, and the figures saved (papermill; none inline)."""
    notebook = folder / "experiment.ipynb"
    cells = json.loads(notebook.read_text())["cells"] if notebook.is_file() else []
    executed = sum(1 for cell in cells if cell["cell_type"] == "code" and cell.get("execution_count"))
    return executed, sorted(p.name for p in (folder / "figures").glob("*"))


def leftovers(out: Path, reference: Path) -> list[str]:
    """What a finished grid should not have: a run whose status.json is not 'finished', temporary
    files of an interrupted atomic write, a resume.pt that outlived its run, an executed notebook
    or figures short of the uninterrupted grid's."""
    found = []
    for folder in sorted(out.glob("runs/*")):
        status = json.loads((folder / "status.json").read_text())
        if status.get("status") != "finished":
            found.append(f"{folder.name}: status.json says {status}")
        found += [f"{folder.name}: temporary file left: {tmp.name}" for tmp in folder.glob(".*.tmp")]
        if (folder / "resume.pt").exists():
            found.append(f"{folder.name}: resume.pt left behind by a finished run")
        record, expected = notebook_record(folder), notebook_record(reference / "runs" / folder.name)
        if record != expected:
            found.append(f"{folder.name}: (executed cells, figures) {record}, uninterrupted {expected}")
    return found


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["inline", "papermill"])
def test_random_sigkills_lose_nothing_and_repeat_nothing(tmp_path, engine):
    grid = write_grid(tmp_path, engine)
    reference, interrupted = tmp_path / "A", tmp_path / "B"

    seconds, timeline = run_reference(grid, reference, engine)
    targets = kill_targets(seconds, timeline, random.Random(SEED), KILLS[engine])

    command = [sys.executable, "-m", "studylib", "grid", str(grid), "--out", str(interrupted), "--engine", engine]
    attempts = interrupt_repeatedly(command, interrupted, targets, tmp_path)
    story = "\n  ".join([f"{engine}: reference grid {seconds:.1f} s, {timeline[-1][1]} milestones", *attempts])
    print(story)
    assert len(attempts) == KILLS[engine] and all("killed" in a for a in attempts), story
    stamps = finished_files(interrupted)
    final = run_grid(grid, interrupted, engine=engine, progress=False)  # the last go, never killed
    assert set(final.status) == {"finished"}, final
    assert_unchanged(interrupted, stamps)

    expected, table = collect(reference), collect(interrupted)
    assert list(table.run) == list(expected.run) and set(table.status) == {"finished"}, table[["run", "status"]]
    compared = ["run", "status", "best_epoch", "epochs_run", "stopped_early"]
    compared += [c for c in expected if c.startswith(("val_", "test_"))]
    pd.testing.assert_frame_equal(table[compared], expected[compared], check_exact=True)

    a, b = run_results(reference), run_results(interrupted)
    assert a.keys() == b.keys()
    for name in a:
        differ = {k: (a[name][0].get(k), b[name][0].get(k)) for k in a[name][0].keys() | b[name][0].keys()
                  if a[name][0].get(k) != b[name][0].get(k)}
        assert not differ, f"{name}: metrics.json differs after the kills (A, B): {differ}\n{story}"
        pd.testing.assert_frame_equal(b[name][1], a[name][1], check_exact=True, obj=f"{name} history.csv")

    problems = leftovers(interrupted, reference)
    assert not problems, "\n".join(problems) + "\n" + story
