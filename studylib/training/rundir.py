"""A run folder on disk: atomic writes, a status file, and the finished/failed markers.

`metrics.json` is written last and only by a finished run: a folder without it is
visibly unfinished. `status.json` says running / failed (with the reason) / finished, and
names the process (pid, host) that owns a running run. The owner holds the folder's lock
for as long as it lives, so a "running" whose lock is free is a run that was killed:
`status()` reports it as interrupted, with the epochs it saved.
"""
from __future__ import annotations

import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any

from ..core import runfiles
from ..core.fileio import (
    CorruptFileError,
    is_locked,
    read_json_dict,
    read_json_dict_or_empty,
    write_json,
)


class RunExistsError(FileExistsError):
    """The output folder already holds a finished run, or the saved epochs of an interrupted one."""


class RunDir:
    """The folder of one run."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def metrics(self) -> dict | None:
        """The finished run's metrics, or None when the run is unfinished or its metrics.json is unreadable."""
        try:
            metrics = read_json_dict(self.file(runfiles.METRICS))
        except (FileNotFoundError, NotADirectoryError, CorruptFileError):
            return None
        return metrics if isinstance(metrics.get("test"), dict) else None

    def finished(self, run_hash: str | None = None) -> bool:
        """The one test of "finished": a readable metrics.json with test scores (and, given `run_hash`, written
        by that configuration: a grid reruns a folder whose config changed)."""
        metrics = self.metrics()
        return metrics is not None and (run_hash is None or metrics.get("run_hash") == run_hash)

    def status(self) -> dict:
        """{'status': finished | stale | running | interrupted | failed | incomplete | corrupt | missing, ...};
        a finished run whose notebook failed after it finished carries 'notebook_error'."""
        if self.finished():
            stale = self.status_record().get("stale")  # a grid found its data changed since it trained
            return ({"status": "stale", "reason": str(stale)} if stale
                    else {"status": "finished", **self._notebook_error()})
        if self.file(runfiles.METRICS).is_file():
            return {"status": "corrupt", "reason": f"{self.file('metrics.json')} is not a finished run's metrics; "
                                                   "a grid runs it again, or run with --overwrite"}
        try:
            status = read_json_dict(self.file(runfiles.STATUS))
        except (FileNotFoundError, NotADirectoryError):
            return {"status": "missing"}
        except CorruptFileError as err:
            return {"status": "corrupt", "reason": f"{err}; a grid runs it again, or run with --overwrite"}
        if not isinstance(status.get("status"), str):
            return {"status": "corrupt", "reason": f"{self.file('status.json')} has no status; a grid runs it again"}
        if status["status"] == "finished":  # metrics.json was removed afterwards
            return {"status": "incomplete", "reason": "metrics.json is missing"}
        if status["status"] == "running" and not is_locked(self.file(runfiles.LOCK)):
            return self._interrupted(status)
        return status

    def status_record(self) -> dict:
        """status.json as written ({} when absent or unreadable)."""
        return read_json_dict_or_empty(self.file(runfiles.STATUS))

    def _notebook_error(self) -> dict:
        error = self.status_record().get("notebook_error")
        return {"notebook_error": str(error)} if error else {}

    def _interrupted(self, status: dict) -> dict:
        saved = status.get("saved_epochs")
        if self.file(runfiles.RESUME).is_file():
            kept = _epochs_saved(saved) if saved else "saved epochs kept"
            fix = "use --resume to go on from them (a grid resumes by itself)"
        else:
            kept, fix = "no epochs saved", "run it again (a grid does so by itself)"
        owner = f"pid {status.get('pid', '?')} on {status.get('host', '?')}"
        return {**status, "status": "interrupted",
                "reason": f"interrupted: its process ({owner}) stopped without finishing; {kept}; {fix}"}

    def tidy(self) -> None:
        """Undo what a kill can leave; the caller holds the folder's lock. Half-written temporaries of
        atomic writes go; a finished run (metrics.json) keeps no resume.pt and its status says finished
        (a kill between those writes leaves them behind)."""
        for tmp in self.path.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        if not self.finished():
            return
        self.file(runfiles.RESUME).unlink(missing_ok=True)
        if self.status_record().get("status") != "finished":
            self.mark("finished")

    def prepare(self, overwrite: bool = False, resume: bool = False) -> None:
        """Refuse a finished run unless `overwrite`, and saved epochs unless `resume` or `overwrite`;
        clear the files of an unfinished one."""
        if self.finished() and not overwrite:
            raise RunExistsError(f"{self.path} already holds a finished run (metrics.json). Choose another "
                                 "output folder, or pass --overwrite (overwrite=True) to replace it.")
        if self.file(runfiles.RESUME).is_file() and not (resume or overwrite):
            raise RunExistsError(f"{self.path} holds the saved epochs of an interrupted run ({runfiles.RESUME}). "
                                 "Pass --resume (resume=True) to go on from them, or --overwrite (overwrite=True) to "
                                 "discard them.")
        self.path.mkdir(parents=True, exist_ok=True)
        for name in runfiles.RUN_FILES:
            self.file(name).unlink(missing_ok=True)
        if not resume:
            self.file(runfiles.RESUME).unlink(missing_ok=True)

    def mark(self, status: str, **extra: Any) -> None:
        """status.json; the list of attempts (which process ran the folder, when) is carried along."""
        attempts = extra.pop("attempts", None) or self.status_record().get("attempts")
        write_json(self.file(runfiles.STATUS), {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                              **extra, **({"attempts": attempts} if attempts else {})})

    def mark_running(self, **extra: Any) -> None:
        """status.json "running", naming this process (a later command can tell whether it still lives)."""
        self.mark("running", pid=os.getpid(), host=socket.gethostname(), **extra)

    def start_attempt(self, earlier: list[dict]) -> None:
        """Marks the run running as one more attempt after `earlier` (a grid that retried a run
        whose worker died shows both processes here)."""
        mine = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self.mark_running(attempts=[*earlier, mine])

    def fail(self, error: BaseException) -> None:
        """Record why the run stopped: interrupted (Ctrl-C, SIGTERM: nothing is wrong with the run) or failed;
        when even that cannot be written (a full disk), the folder's free lock makes later commands
        report the run as interrupted instead of running."""
        try:
            if isinstance(error, KeyboardInterrupt):
                saved = self.status_record().get("saved_epochs")
                kept = _epochs_saved(saved) if saved and self.file(runfiles.RESUME).is_file() else "no epochs saved"
                signal = "SIGTERM" if type(error).__name__ == "Terminated" else "Ctrl-C (SIGINT)"
                self.mark("interrupted", reason=f"interrupted by {signal}; {kept}; run the grid again (or --resume) "
                                                "to go on", saved_epochs=saved)
            else:
                self.mark("failed", reason=f"{type(error).__name__}: {error}", traceback=traceback.format_exc())
        except OSError:
            pass

    def __repr__(self) -> str:
        return f"RunDir({self.path}, {self.status()['status']})"


def _epochs_saved(count: int) -> str:
    return f"{count} epoch{'s' if count != 1 else ''} saved"
