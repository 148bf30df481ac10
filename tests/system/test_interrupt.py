"""Ctrl-C keeps finished work: a run interrupted in its test pass keeps its trained epochs, says
'interrupted' (never 'failed'), and the rerun says what is finished, resumed and to run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from studylib.cli import main
from studylib.training.rundir import RunDir

GRID = ("dataset: synthetic\nsynthetic_size: 120\nbackbone: tinycnn\nimage_size: 16\nbatch_size: 32\n"
        "max_epochs: 3\npatience: 10\ndevice: cpu\nnum_threads: 1\nstrategy: [ft, lp]\n")

# The grid, with the first run's test pass held long enough to be interrupted in it.
_HELD = textwrap.dedent("""
    import pathlib, sys, time
    import studylib.training.runner as runner
    from studylib.cli import main
    real, marker = runner.evaluate, pathlib.Path(sys.argv[1])
    def held(*args, **kwargs):
        if not marker.exists():
            marker.touch()
            time.sleep(120)
        return real(*args, **kwargs)
    runner.evaluate = held
    sys.exit(main(["grid", sys.argv[2], "--out", sys.argv[3], "--engine", "inline"]))
""")


@pytest.mark.slow
def test_ctrl_c_during_a_test_pass_keeps_the_trained_run_and_the_rerun_says_what_it_does(tmp_path, capsys):
    grid, out, marker = tmp_path / "g.yaml", tmp_path / "out", tmp_path / "in-test-pass"
    grid.write_text(GRID)
    child = subprocess.Popen([sys.executable, "-c", _HELD, str(marker), str(grid), str(out)], text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 120
    while not marker.exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), child.communicate()
    os.killpg(child.pid, signal.SIGINT)  # what Ctrl-C in the terminal does: the whole process group
    stdout, stderr = child.communicate(timeout=60)
    assert child.returncode == 130, (stdout, stderr)
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].startswith("interrupted: finished runs")
    [interrupted] = [RunDir(p) for p in out.glob("runs/*") if RunDir(p).status()["status"] != "missing"]
    status = interrupted.status()
    assert status["status"] == "interrupted" and "Ctrl-C" in status["reason"] and "3 epochs saved" in status["reason"]

    capsys.readouterr()
    assert main(["grid", str(grid), "--out", str(out), "--engine", "inline"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == "grid g: 0 finished, 1 to resume, 1 to run"
    metrics = json.loads(interrupted.file("metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == 3 and metrics["epochs_run"] == 3  # no epoch trained again
    assert [RunDir(p).status()["status"] for p in out.glob("runs/*")] == ["finished", "finished"]
    assert main(["grid", str(grid), "--out", str(out), "--dry-run"]) == 0
    assert "2 finished, 0 to resume, 0 to run" in capsys.readouterr().out
