"""Grids: a params YAML expanded into runs, executed through papermill, resumable, scalable with Dask.

A grid file is flat: a scalar fixes a config field, a list sweeps it, and `per_strategy`
overrides (or sweeps) fields for one strategy only, e.g. Auto-RGN's own learning rates:

    strategy: [ft, lp, auto_rgn]
    seed: [684, 559, 629]
    lr: [1e-3, 1e-4]
    per_strategy:
      auto_rgn: {lr: [1e-1, 1e-2, 1e-3, 1e-4, 1e-5]}

`imports: [my_strategies.py]` names the modules (or .py files, relative to the grid file) that
register your own strategies, backbones or datasets; every run's process imports them first.

Every run lands in `OUT/runs/<dataset>-<backbone>-<strategy>-<config hash>`; a finished run
with the same hash is skipped, a failed or interrupted one runs again.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from tqdm.auto import tqdm

from ..core import runfiles
from ..core.config import LIST_FIELDS, ConfigError, RunConfig, coerce, config_keys, parse_yaml, shown
from ..core.constants import ENGINES, KERNEL_ARGUMENTS
from ..core.fileio import LockTimeout, atomic_write, file_lock
from ..core.outfolder import claim_folder
from ..core.templates import shipped_grid, template
from ..data.stream import RUNS_PER_HOST
from ..training.rundir import RunDir
from ..training.runner import check_config
from . import plugins
from .stale import apply as mark_stale
from .stale import find_stale

META_KEYS = {"per_strategy", "name", "description", "imports"}
NOTEBOOK = template("notebooks", "experiment.ipynb")  # shipped in the package: works from a wheel
NOTEBOOK_PENDING = ".notebook-pending"  # in a run folder while its papermill notebook has not run to the end


@dataclass
class Grid:
    path: Path
    name: str
    runs: list[RunConfig]
    swept: list[str]  # the fields that vary, for names and tables
    imports: list[str] = field(default_factory=list)  # modules every run's process imports first

    def __repr__(self) -> str:
        return f"Grid({self.name}: {len(self.runs)} runs sweeping {', '.join(self.swept) or 'nothing'})"


def load_grid(path: str | Path, overrides: dict[str, Any] | None = None, allow_large: bool = False) -> Grid:
    """Parse and validate a grid file (plus fixed `overrides`); every problem is reported before any run starts.
    A grid of more than MAX_RUNS runs is refused unless `allow_large`."""
    path = Path(path)
    if not path.exists() and shipped_grid(str(path)):  # `studylib grid smoke`: a grid that ships with studylib
        path = shipped_grid(str(path))
    data, node = parse_yaml(path)
    if not data:
        raise ConfigError(f"{path} sets nothing (empty or only comments); a grid names what to run, e.g. "
                          "strategy: [ft, lp_ft] (studylib init DIR copies examples into DIR/params)")
    lines = _key_lines(node)
    data.update(overrides or {})
    data = _names_as_one_value(data)
    imports = _imports(data.get("imports", []), path, lines)  # before the keys are checked: they declare knobs
    _check_values(data, path, lines)
    per_strategy = data.get("per_strategy") or {}
    _check_per_strategy(per_strategy, path, lines)
    _refuse_unused_per_strategy(per_strategy, data, path, lines, overrides or {})
    base = {k: v for k, v in data.items() if k not in META_KEYS}
    runs, swept = _expand(base, per_strategy, path, allow_large)
    return Grid(path, _name(data.get("name", path.stem), path, lines), runs, swept, imports)


def _names_as_one_value(values: dict) -> dict:
    """`classes: [NORMAL, PNEUMONIA]` is one value of a list field (the class names), not a sweep over two
    one-class runs; a list of such lists sweeps. The same inside per_strategy."""
    def one(key: str, value: Any) -> Any:
        is_names = isinstance(value, list) and value and all(isinstance(v, str) for v in value)
        return coerce(key, value) if key in LIST_FIELDS and is_names else value

    out = {k: one(k, v) for k, v in values.items()}
    if isinstance(out.get("per_strategy"), dict):
        out["per_strategy"] = {s: {k: one(k, v) for k, v in o.items()} if isinstance(o, dict) else o
                               for s, o in out["per_strategy"].items()}
    return out


def _imports(specs: Any, path: Path, lines: dict[str, int]) -> list[str]:
    if not isinstance(specs, list) or not all(isinstance(s, str) and s for s in specs):
        raise ConfigError(f"{path} line {lines.get('imports', '?')}: imports must be a list of module names or .py "
                          f"files, got {shown(specs)}")
    resolved = plugins.resolve(specs, path.parent)
    plugins.import_all(resolved)
    return resolved


def _name(name: Any, path: Path, lines: dict[str, int]) -> str:
    """The grid's name (its default output folder): a short text, never a value spelled out in full."""
    if not isinstance(name, (str, int)) or isinstance(name, bool) or len(str(name)) > 100:
        raise ConfigError(f"{path} line {lines.get('name', '?')}: name must be a short text (it names the output "
                          f"folder), got {shown(name)}")
    return str(name)


def _key_lines(node) -> dict[str, int]:
    """Top-level key -> line number, for messages (parse_yaml already refused keys given twice)."""
    pairs = node.value if isinstance(node, yaml.MappingNode) else []
    return {key.value: key.start_mark.line + 1 for key, _ in pairs}


def _check_values(data: dict, path: Path, lines: dict[str, int]) -> None:
    for key, value in data.items():
        where = f"{path} line {lines.get(key, '?')}"
        if key in META_KEYS:
            continue
        if key not in config_keys():
            raise ConfigError(f"{where}: unknown key {key!r}; grid keys are config fields "
                              f"(python -m studylib config) or {', '.join(sorted(META_KEYS))}")
        if value == []:
            raise ConfigError(f"{where}: {key} is an empty list, which sweeps nothing; give at least one value")
        for item in value if isinstance(value, list) else [value]:
            coerce(key, item, where)


def _check_per_strategy(per_strategy: Any, path: Path, lines: dict[str, int]) -> None:
    """per_strategy maps registered strategy names to field overrides; a misspelt name is an error, not a no-op."""
    from ..training.strategies import STRATEGIES

    where = f"{path} line {lines.get('per_strategy', '?')}"
    if not isinstance(per_strategy, dict):
        raise ConfigError(f"{where}: per_strategy must map strategy names to fields, e.g. per_strategy: "
                          "{auto_rgn: {lr: [1e-2, 1e-3]}}")
    for strategy, overrides in per_strategy.items():
        if strategy not in STRATEGIES:
            raise ConfigError(f"{where}: per_strategy: {STRATEGIES.unknown_message(strategy)}")
        if not isinstance(overrides, dict):
            raise ConfigError(f"{where}: per_strategy.{strategy} must be a mapping of config fields")
        if "strategy" in overrides:  # per_strategy: {lp_ft: {strategy: lp}} would turn every LP-FT cell into LP
            raise ConfigError(f"{where}: per_strategy.{strategy} sets strategy itself; per_strategy holds the settings "
                              "of the strategy it names: list strategies under strategy: instead")
        _check_values(overrides, path, {k: lines.get("per_strategy", "?") for k in overrides})


def _refuse_unused_per_strategy(per_strategy: dict, data: dict, path: Path, lines: dict, overrides: dict) -> None:
    """per_strategy for a strategy the grid never runs is a leftover or a slip: say so (unless --set
    narrowed the strategies on purpose)."""
    if "strategy" in overrides:
        return
    value = data.get("strategy", RunConfig.strategy)
    runs = set(value if isinstance(value, list) else [value])
    unused = sorted(set(per_strategy) - runs)
    if unused:
        raise ConfigError(f"{path} line {lines.get('per_strategy', '?')}: per_strategy sets {', '.join(unused)}, which "
                          f"this grid never runs (strategy: {', '.join(map(str, sorted(runs)))}); add "
                          "them to strategy or remove their entries")


def _product(values: dict) -> list[dict]:
    keys = list(values)
    lists = [v if isinstance(v, list) else [v] for v in values.values()]
    return [dict(zip(keys, combo)) for combo in itertools.product(*lists)]


MAX_RUNS = 5000  # a grid larger than this is almost always a typo (100 x 100 x 100 values): refused until confirmed


def grid_size(base: dict, per_strategy: dict) -> int:
    """How many runs a grid expands to (before duplicates collapse), counted without building any."""
    lists = {k: v if isinstance(v, list) else [v] for k, v in base.items()}
    strategies = lists.get("strategy", [RunConfig.strategy])
    others = math.prod(len(v) for k, v in lists.items() if k != "strategy")
    return sum(others * math.prod(len(v) if isinstance(v, list) else 1 for v in per_strategy.get(s, {}).values())
               for s in strategies)


def _expand(base: dict, per_strategy: dict, path: Path, allow_large: bool = False) -> tuple[list[RunConfig], list[str]]:
    size = grid_size(base, per_strategy)
    if size > MAX_RUNS and not allow_large:
        shape = " x ".join(str(len(v)) for v in base.values() if isinstance(v, list) and len(v) > 1)
        raise ConfigError(f"{path} expands to {size:,} runs ({shape} values); more than {MAX_RUNS:,} is almost "
                          "always a mistake. Shorten the lists, or pass --yes (allow_large=True) if you mean it")
    runs, seen = [], set()
    swept = [k for k, v in base.items() if isinstance(v, list) and len(v) > 1]
    for combo in _product(base):
        overrides = per_strategy.get(combo.get("strategy", RunConfig.strategy), {})
        swept += [k for k, v in overrides.items() if isinstance(v, list) and len(v) > 1 and k not in swept]
        for extra in _product(overrides):
            try:
                cfg = check_config(RunConfig.from_dict({**combo, **extra}, source=str(path)))
            except ConfigError as err:
                raise ConfigError(f"{err} (in the combination {combo | extra})") from None
            if cfg.run_hash() not in seen:  # per_strategy overrides can collapse combinations
                seen.add(cfg.run_hash())
                runs.append(cfg)
    return runs, swept


def run_name(cfg: RunConfig) -> str:
    return f"{cfg.dataset}-{cfg.backbone}-{cfg.strategy}-{cfg.run_hash()[:10]}"


def _not_done(todo: list, finished: list) -> list:
    """The cells to (re)run: no results of their config, or a notebook cut short after its results were
    written (a kill in the plotting cells leaves the results but an unfinished notebook)."""
    done = {path for _, path in finished if not (path / NOTEBOOK_PENDING).exists()}
    return [(cfg, path) for cfg, path in todo if path not in done]


# --- execution -----------------------------------------------------------------------------

def execute_run(config: dict[str, Any], run_dir: str, engine: str = "papermill", notebook: str = str(NOTEBOOK),
                cwd: str = ".", gpu: int | None = None, imports: tuple[str, ...] = ()) -> dict:
    """Run one grid cell; never raises: the status it returns (and writes) says what happened.

    Args:
        config: the run's config as a dict (a Dask worker rebuilds the RunConfig).
        run_dir: the run folder.
        engine: "papermill" (the experiment notebook, kept in the folder) or "inline" (in this process).
        notebook: the experiment notebook papermill executes.
        cwd: the notebook's working folder.
        gpu: the GPU index this run may see (CUDA_VISIBLE_DEVICES), or None for all.
        imports: modules or .py files that register your own strategies, backbones or datasets.
    """
    if gpu is not None:  # inherited by the papermill kernel, before it initialises CUDA
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    rundir = RunDir(run_dir)
    try:
        if engine == "inline":
            from ..training.runner import run
            plugins.import_all(list(imports))
            run(RunConfig.from_dict(config), run_dir, overwrite=True, resume=True)
        else:
            _papermill({**config, "imports": list(imports)}, rundir, notebook, cwd)
    except Exception as err:  # recorded in the run folder; the grid goes on with the others
        _record_failure(rundir, err)
    return {"path": run_dir, **rundir.status()}


def _papermill(config: dict, rundir: RunDir, notebook: str, cwd: str) -> None:
    import papermill

    rundir.path.mkdir(parents=True, exist_ok=True)
    parameters = {**config, "out_dir": str(rundir.path.resolve()), "overwrite": True, "resume": True}
    pending = rundir.file(NOTEBOOK_PENDING)
    pending.touch()  # until the last cell ran: a grid started again re-runs the notebook (results are kept)
    papermill.execute_notebook(notebook, str(rundir.file("experiment.ipynb")), parameters=parameters,
                               progress_bar=False, cwd=cwd, kernel_name="python3", extra_arguments=KERNEL_ARGUMENTS)
    pending.unlink()


def _record_failure(rundir: RunDir, err: Exception) -> None:
    status = rundir.status()
    cell = getattr(err, "exec_count", None) or getattr(err, "cell_index", None)
    where = f"notebook cell {cell}: " if cell is not None else ""
    if status["status"] == "finished":  # the run finished; a later display cell failed
        rundir.mark("finished", notebook_error=where + f"{getattr(err, 'ename', type(err).__name__)}: "
                                                       f"{getattr(err, 'evalue', err)}")
        rundir.file(NOTEBOOK_PENDING).unlink(missing_ok=True)  # it would fail the same way again
        return
    if status["status"] == "interrupted":  # Ctrl-C or SIGTERM reached the run: it says so, and resumes next time
        return
    if status.get("status") == "failed":  # run() already wrote the reason and traceback
        kept = {k: v for k, v in status.items() if k not in ("status", "time", "reason")}
        rundir.mark("failed", reason=where + status.get("reason", ""), **kept)
        return
    name = type(err).__name__
    detail = f"{getattr(err, 'ename', name)}: {getattr(err, 'evalue', err)}"
    if name == "DeadKernelError":
        detail = f"the kernel died ({err}); out of memory is the usual cause"
    rundir.mark("failed", reason=where + detail)


def run_grid(grid_path: str | Path, out: str | Path, workers: int = 1, scheduler: str = "",
             engine: str = "papermill", dry_run: bool = False, progress: bool = True,
             overrides: dict[str, Any] | None = None, notebook: str | Path = NOTEBOOK,
             overwrite: bool = False, stale: str = "keep", allow_large: bool = False) -> pd.DataFrame:
    """Run every unfinished cell of a grid into `out`; returns the status table. `overwrite` lets it write
    into a folder that holds files of the names it writes (grid.yaml, results.csv, report.md) it did not write.
    Finished runs whose data changed since they trained are marked stale and kept out of the report
    (`stale="keep"`) or trained again (`stale="retrain"`).

    Args:
        grid_path: the grid YAML file, or the name of a grid shipped with studylib (e.g. smoke).
        out: the grid folder; runs go to OUT/runs/<run name>.
        workers: runs at once; more than 1: a local Dask cluster of processes.
        scheduler: address of an existing Dask scheduler that runs them; "": none.
        engine: "papermill" (each run executes the experiment notebook) or "inline" (in-process).
        dry_run: only return the plan (what each run would do); nothing runs and the folder is not claimed.
        progress: print the remaining-time estimate and show progress bars.
        overrides: config fields fixed on top of the grid file (e.g. from the command line).
        notebook: the experiment notebook papermill executes.
        overwrite: take a folder holding files studylib did not write under the names it writes.
        stale: what to do with finished runs whose data changed: "keep" (out of the report) or "retrain".
        allow_large: allow a grid of more than MAX_RUNS runs.
    """
    if engine not in ENGINES:
        raise ConfigError(f"engine {engine!r} is not valid; choose one of {', '.join(ENGINES)}")
    grid = load_grid(grid_path, overrides, allow_large)
    if engine == "papermill" and not Path(notebook).is_file():
        raise ConfigError(f"notebook {notebook} does not exist; give an experiment notebook (studylib init DIR "
                          "copies the shipped one) or leave --notebook out")
    out = Path(out).resolve()
    if not dry_run:
        claim_folder(out, "grid", overwrite, "the grid folder (--out)")
    todo = [(cfg, out / "runs" / run_name(cfg)) for cfg in grid.runs]
    finished = [(cfg, path) for cfg, path in todo if RunDir(path).finished(cfg.run_hash())]
    changed, notes = find_stale(finished)
    if dry_run:
        return plan_table(todo, _not_done(todo, finished), changed)
    again = set(mark_stale(changed, [p for _, p in finished], stale))
    finished = [(cfg, path) for cfg, path in finished if path not in again]
    pending = _not_done(todo, finished)
    if progress:
        print(f"grid {grid.name}: {remaining_time([t for t in todo if t not in pending], pending)}"
              + _stale_note(changed, stale), flush=True)
        for note in notes:
            print(f"note: {note}")
    tidy_finished([path for _, path in finished])
    atomic_write(out / "grid.yaml", grid.path.read_text() + _overrides_note(overrides))
    plugins.record(out, grid.imports)  # `studylib report OUT` imports them too: their knobs are compared
    jobs = [dict(config={**cfg.to_dict(), "quiet": True}, run_dir=str(path), engine=engine, cwd=os.getcwd(),
                 gpu=_gpu_for(i), notebook=str(notebook), imports=tuple(grid.imports))
            for i, (cfg, path) in enumerate(pending)]
    if workers > 1 or scheduler:
        _run_dask(jobs, workers, scheduler, progress)
    else:
        for job in tqdm(jobs, desc=f"grid {grid.name}", unit="run", disable=not progress):
            execute_run(**job)
    return status_table(todo, grid.swept)


def tidy_finished(paths: list[Path]) -> None:
    """Clear what kills left in finished run folders (temporaries, a stale resume.pt or status);
    a folder another process is working in is left alone."""
    for path in paths:
        try:
            with file_lock(path / runfiles.LOCK, timeout=0):
                RunDir(path).tidy()
        except LockTimeout:
            continue


def _overrides_note(overrides: dict[str, Any] | None) -> str:
    return f"\n# overridden on the command line: {overrides}\n" if overrides else ""


def _gpu_for(index: int) -> int | None:
    """Round-robin over GPUs when there are several; None leaves CUDA_VISIBLE_DEVICES alone."""
    try:
        import torch
        count = torch.cuda.device_count()
    except Exception:  # no torch CUDA runtime: nothing to pin
        return None
    return index % count if count > 1 else None


def _run_dask(jobs: list[dict], workers: int, scheduler: str, progress: bool) -> None:
    """Runs are independent tasks; a LocalCluster of processes (no threads: papermill can hang
    when kernels start from many threads) or an existing scheduler executes them."""
    import dask
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if not scheduler:  # the runs of this machine share its memory (MemoryBudget divides by their number)
        with environment_variable(RUNS_PER_HOST, os.environ.get(RUNS_PER_HOST) or str(workers)), \
                dask.config.set({SPAWN_ENVIRON: worker_environment()}):
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    with Client(scheduler or cluster) as client:
        futures = [client.submit(execute_run, **job, pure=False) for job in jobs]
        what = f"runs, {workers} at a time" if not scheduler else f"runs on {scheduler}"
        for _ in tqdm(as_completed(futures), total=len(futures), desc=what, unit="run", disable=not progress):
            pass
    if cluster is not None:
        cluster.close()


SPAWN_ENVIRON = "distributed.nanny.pre-spawn-environ"


def worker_environment() -> dict:
    """Dask's worker environment without its MALLOC_TRIM_THRESHOLD_ (64 kB): glibc then hands every freed
    activation buffer back to the kernel and faults it in again next step, and CPU training spends a third
    of its time in the kernel (6 demo runs on 2 cores: 52 s with it, 34 s without; results identical)."""
    import dask
    return {k: v for k, v in dask.config.get(SPAWN_ENVIRON, {}).items() if k != "MALLOC_TRIM_THRESHOLD_"}


@contextlib.contextmanager
def environment_variable(name: str, value: str):
    """`name`=`value` for processes started inside the block (dask's workers inherit it)."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _stale_note(changed: dict, policy: str) -> str:
    if not changed:
        return ""
    if policy == "retrain":
        return f"; {len(changed)} finished runs trained on data that has changed since: training them again"
    return (f"; {len(changed)} finished runs trained on data that has changed since (images, labels or split): "
            "marked stale, kept out of the report; --stale retrain trains them again")


def plan_table(todo: list, pending: list, changed: dict | None = None) -> pd.DataFrame:
    waiting = {str(p) for _, p in pending}

    def action(cfg: RunConfig, path: Path) -> str:
        if changed and path in changed:
            return "stale (data changed): kept, or retrained with --stale retrain"
        if str(path) not in waiting:
            return "skip (finished)"
        if RunDir(path).finished(cfg.run_hash()):
            return "finish its notebook (results kept)"
        return "resume (saved epochs)" if (path / runfiles.RESUME).is_file() else "run"

    table = pd.DataFrame([{"run": p.name, "strategy": c.strategy, "lr": c.lr, "seed": c.seed, "action": action(c, p)}
                          for c, p in todo])
    table.attrs["summary"] = remaining_time([(c, p) for c, p in todo if str(p) not in waiting], pending)
    return table


def remaining_time(finished: list, pending: list) -> str:
    """'N finished, M to resume, K to run' and the wall time left, estimated from finished runs of the
    same dataset and backbone."""
    seconds: dict[tuple[str, str], list[float]] = {}
    for cfg, path in finished:
        wall = (RunDir(path).metrics() or {}).get("wall_seconds")
        if wall is not None:
            seconds.setdefault((cfg.dataset, cfg.backbone), []).append(wall)
    resume = sum((path / runfiles.RESUME).is_file() or RunDir(path).finished(cfg.run_hash()) for cfg, path in pending)
    text = f"{len(finished)} finished, {resume} to resume, {len(pending) - resume} to run"
    estimates = [np.median(seconds[(c.dataset, c.backbone)]) for c, _ in pending if (c.dataset, c.backbone) in seconds]
    if pending and estimates:
        unknown = len(pending) - len(estimates)
        text += (f"; about {duration(sum(estimates))} of runs for the {len(estimates)} whose dataset and backbone "
                 "already have finished runs (median wall time, at most that: resumed runs have less left; divide "
                 "by the runs at a time)")
        text += f", {unknown} with no such run yet" if unknown else ""
    return text


def duration(seconds: float) -> str:
    """'40 s', '12 min', '3.1 h': a grid of seconds-long runs is not 'about 0.0 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def status_table(todo: list, swept: list[str]) -> pd.DataFrame:
    rows = []
    for cfg, path in todo:
        rundir = RunDir(path)
        status = rundir.status()
        row = {"run": path.name, **{k: getattr(cfg, k) for k in swept}, "status": status["status"]}
        if status["status"] == "finished":
            metrics = rundir.metrics()
            row.update(test_balanced_accuracy=metrics["test"].get("balanced_accuracy"),
                       seconds=round(metrics.get("wall_seconds") or 0, 1))
            if status.get("notebook_error"):
                row["reason"] = f"finished, but a later notebook cell failed: {status['notebook_error']}"
        else:
            # interrupted says so itself
            kept = (path / runfiles.RESUME).is_file() and status["status"] != "interrupted"
            saved = " [saved epochs kept: the next grid run resumes]" if kept else ""
            row["reason"] = status.get("reason", "") + saved
        rows.append(row)
    return pd.DataFrame(rows)
