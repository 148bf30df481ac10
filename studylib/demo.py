"""python -m studylib demo: the whole study loop, offline, on the synthetic pair, in minutes on a CPU."""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from .core.templates import template
from .study.grid import run_grid
from .study.results import collect, write_results
from .training.pretrain import DEFAULT_CHECKPOINT, pretrain, pretrain_config

DEMO_GRID = template("params", "demo.yaml")
ANALYSIS = template("notebooks", "analysis.ipynb")


def demo(out: str | Path = "outputs/demo", engine: str = "papermill", workers: int = 1) -> pd.DataFrame:
    """Pretrain (once), run the demo grid from that checkpoint, analyse; prints where everything is."""
    started = time.perf_counter()
    out = Path(out).resolve()
    checkpoint = Path(DEFAULT_CHECKPOINT).resolve()
    print(f"1/3 pretraining tinycnn on the synthetic source task (reused when present): {checkpoint}")
    pretrain(checkpoint, pretrain_config(quiet=True))
    print("2/3 running params/demo.yaml: 8 strategies x 3 seeds on the synthetic target task")
    # demo.yaml names the checkpoint relative to the working directory, as the notebooks' kernels run there:
    # `studylib grid demo --out outputs/demo` (or efficiency) from here finds these runs finished
    run_grid(DEMO_GRID, out, workers=workers, engine=engine)
    runs = collect(out)
    results = write_results(out, table=runs)
    table = summary(out, runs)
    print(table.to_string())
    analysis = run_analysis(out)
    from .views.report import write_report
    _, page = write_report(out, runs=runs)
    print(f"\nresults table: {results}\nreport:        {page}\nrun folders:   {out / 'runs'}")
    if analysis:
        print(f"analysis:      {analysis} (figures in {out / 'figures'})")
    print(f"demo finished in {time.perf_counter() - started:.0f} s")
    return table


def summary(out: Path, runs: pd.DataFrame) -> pd.DataFrame:
    """Test balanced accuracy per strategy (mean, sd, seeds) and its paired gain over FT with the
    report's interval and corrected verdict: the same numbers as report.html."""
    from .study.analysis import Study

    study = Study(out, runs=runs)
    if study.best.empty:
        return pd.DataFrame()
    table = study.accuracy.set_index("strategy")[["mean", "std", "count"]].rename(columns={"count": "seeds"})
    gains = study.gains.set_index("strategy")[["gain", "low", "high", "verdict"]]
    table = table.join(gains.rename(columns={"gain": "gain_over_ft"}))
    return table.sort_values("mean", ascending=False).round(3).fillna({"verdict": "(baseline)"})


def run_analysis(out: Path) -> Path:
    """Execute the shipped analysis notebook on the demo results, into OUT/analysis.ipynb."""
    import papermill

    print("3/3 executing the analysis notebook")
    target = out / "analysis.ipynb"
    papermill.execute_notebook(str(ANALYSIS), str(target), parameters={"results_dir": str(out)},
                               progress_bar=False, cwd=str(out), kernel_name="python3")
    return target
