"""python -m studylib demo: the whole study loop, offline, on the synthetic pair, in minutes on a CPU; with
--real DATA, transfer from real dermoscopy images to real brain MRI, with and without the pretraining."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd

from .core.config import metric_name
from .core.constants import KERNEL_ARGUMENTS
from .core.templates import template
from .study.grid import run_grid
from .study.results import collect, write_results
from .training.pretrain import DEFAULT_CHECKPOINT, pretrain, pretrain_config

DEMO_GRID = template("params", "demo.yaml")
REAL_GRID = template("params", "demo_real.yaml")
REAL_SOURCE, REAL_TARGET = "ham10000-small", "brain-mri-nickparvar"  # the folders --real DATA must hold
REAL_CHECKPOINT = Path("outputs/pretrained/tinycnn-ham10000-small.pt")  # demo_real.yaml's second weights value
ANALYSIS = template("notebooks", "analysis.ipynb")


def demo(out: str | Path = "outputs/demo", engine: str = "inline", workers: int = 0) -> pd.DataFrame:
    """Pretrain (once), run the demo grid from that checkpoint, analyse; prints where everything is.

    The runs go inline in `workers` processes (0: one per core, up to 4; each run uses one thread), so the
    demo fits in minutes on a laptop; engine="papermill" executes the experiment notebook per run instead,
    as `studylib grid` does (the analysis notebook always runs through papermill)."""
    started = time.perf_counter()
    workers = workers or min(4, os.cpu_count() or 1)
    out = Path(out).resolve()
    checkpoint = Path(DEFAULT_CHECKPOINT).resolve()
    print(f"1/3 pretraining tinycnn on the synthetic source task (reused when present): {checkpoint}")
    pretrain(checkpoint, pretrain_config(quiet=True))
    print(f"2/3 running params/demo.yaml: 8 strategies x 3 seeds on the synthetic target task ({engine}, "
          f"{workers} at a time)")
    # demo.yaml names the checkpoint relative to the working directory, as the notebooks' kernels run there:
    # `studylib grid demo --out outputs/demo` (or efficiency) from here finds these runs finished
    run_grid(DEMO_GRID, out, workers=workers, engine=engine)
    runs = collect(out)
    results = write_results(out, table=runs)
    table = summary(out, runs)
    print(table.attrs.get("caption", ""))
    print(table.to_string())
    print(table.attrs.get("decision", ""))
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
    report's interval and corrected verdict over the seeds both ran (`pairs`; the same numbers as report.html),
    then the test ECE and how
    much the top block's features changed (CKA to the start: 1 = unchanged), means over seeds; attrs["decision"]:
    the report's "which strategy for my data" sentence."""
    from .study import measures
    from .study.analysis import grid_study

    study = grid_study(DEMO_GRID, out, runs)
    if study.best.empty:
        return pd.DataFrame()
    table = study.accuracy.set_index("arm")[["mean", "std", "count"]].rename(columns={"count": "seeds"})
    gains = study.gains.set_index("arm")[["seeds", "gain", "low", "high", "verdict"]]
    table = table.join(gains.rename(columns={"gain": "gain_over_ft", "seeds": "pairs"}))  # paired seeds only
    table["pairs"] = table["pairs"].astype("Int64")
    calibration = measures.calibration_table(study.best)
    if "ece" in calibration:
        table = table.join(calibration.set_index("arm")["ece"])
    relation = measures.study_relation(study)
    if len(relation):
        table = table.join(relation.set_index("arm")["cka_top"])
    params = study.best.groupby("arm").trainable_params.median()
    table["trainable"] = params.reindex(table.index).astype("Int64")
    table = table.sort_values("mean", ascending=False).round(3).fillna({"verdict": "(baseline)"})
    k = study.classes
    table.attrs["caption"] = (f"test {metric_name(study.metric)} per strategy (mean, sd over seeds"
                              + (f"; {k} classes, chance {1 / k:.2f}" if k else "") + "), paired gain over FT with "
                              "the report's 95% interval and corrected verdict, test ECE, top-block CKA to the start, "
                              "trainable parameters:")
    from .study import decisions
    table.attrs["decision"] = "\n".join(
        "Which strategy for my data? " + decisions.recommendation(group, metric_name(study.metric), study.rope)
        for _, group in decisions.study_which(study).groupby(["protocol", "modality", "backbone"], sort=False))
    return table


def real_demo(data: str | Path, out: str | Path = "outputs/demo_real", engine: str = "inline",
              workers: int = 0) -> pd.DataFrame:
    """Pretrain tinycnn on DATA/ham10000-small (once), run params/demo_real.yaml on DATA/brain-mri-nickparvar from
    random init and from that checkpoint, analyse; prints the table of both sources side by side."""
    from .core.config import ConfigError
    from .training.pretrain import source_fields
    from .training.provenance import describe_record

    started = time.perf_counter()
    data = Path(data).resolve()
    missing = [name for name in (REAL_SOURCE, REAL_TARGET) if not (data / name).is_dir()]
    if missing:
        raise ConfigError(f"--real {data} lacks {', '.join(missing)}: it needs {REAL_SOURCE}/ (HAM10000 images in "
                          f"class folders with HAM10000_metadata.csv) and {REAL_TARGET}/ (train/ and test/ of class "
                          "folders); docs/demo.md says where to get them")
    workers = workers or min(4, os.cpu_count() or 1)
    out = Path(out).resolve()
    checkpoint = REAL_CHECKPOINT.resolve()
    print(f"1/3 pretraining tinycnn on {data / REAL_SOURCE} (dermoscopy, reused when present): {checkpoint}")
    source = {**source_fields("ham10000"), "data_root": str(data / REAL_SOURCE), "augment": True}
    pretrain(checkpoint, pretrain_config(image_size=32, quiet=True, data=source))
    print(describe_record(checkpoint))
    print(f"2/3 running params/demo_real.yaml on {data / REAL_TARGET}: 8 strategies x 3 seeds x 2 sources ({engine},"
          f" {workers} at a time)")
    target = {"data_root": str(data / REAL_TARGET)}
    run_grid(REAL_GRID, out, workers=workers, engine=engine, overrides=target)
    runs = collect(out)
    write_results(out, table=runs)
    table = real_summary(out, runs, target)
    print(table.attrs.get("caption", ""))
    print(table.to_string())
    analysis = run_analysis(out)
    from .views.report import write_report
    _, page = write_report(out, runs=runs)
    print(f"\nreport:        {page}\nrun folders:   {out / 'runs'}\nanalysis:      {analysis}")
    print(f"demo finished in {time.perf_counter() - started:.0f} s")
    return table


def real_summary(out: Path, runs: pd.DataFrame, overrides: dict) -> pd.DataFrame:
    """Per strategy: test balanced accuracy from random init and from the in-domain checkpoint (mean, sd over
    seeds), the checkpoint's paired gain over random init, and each source's paired gain over FT (verdicts as the
    report's)."""
    from .study import sources
    from .study.analysis import grid_study

    study = grid_study(REAL_GRID, out, runs, overrides)
    if study.best.empty:
        return pd.DataFrame()
    label = sources.source_labels(study.done.groupby("protocol").weights.first())
    short = {name: "ckpt" if name != sources.RANDOM_INIT else "init" for name in label}  # narrow columns
    accuracy = study.accuracy.assign(source=lambda t: t.protocol.map(label).map(short))
    table = accuracy.pivot(index="arm", columns="source", values=["mean", "std"])
    table.columns = [f"{source} {stat.replace('std', 'sd')}" for stat, source in table.columns]
    table = table[sorted(table.columns, key=lambda c: (c.split()[0] != "init", c))]
    gains = sources.study_sources(study).set_index("arm")
    table["ckpt-init"] = gains.gain
    table["low"], table["high"], table["verdict"] = gains.low, gains.high, gains.verdict
    for source, rows in study.gains.assign(source=lambda t: t.protocol.map(label).map(short)).groupby("source"):
        table[f"vs FT ({source})"] = rows.set_index("arm").verdict
    fills = {column: "(baseline)" for column in table.columns if column.startswith("vs FT")}
    table = table.round(3).sort_values("ckpt mean", ascending=False).fillna(fills)
    k = study.classes
    ckpt = next((name for name in label if name != sources.RANDOM_INIT), "?")
    table.attrs["caption"] = ("test balanced accuracy per strategy (mean, sd over seeds"
                              + (f"; {k} classes, chance {1 / k:.2f}" if k else "") + f") from random init (init) "
                              f"and from the checkpoint {ckpt} (ckpt); the checkpoint's paired gain over random "
                              "init with its 95% interval and corrected verdict; each source's verdict against FT:")
    return table


def run_analysis(out: Path) -> Path:
    """Execute the shipped analysis notebook on the demo results, into OUT/analysis.ipynb."""
    import papermill

    print("3/3 executing the analysis notebook")
    target = out / "analysis.ipynb"
    papermill.execute_notebook(str(ANALYSIS), str(target), parameters={"results_dir": str(out)},
                               progress_bar=False, cwd=str(out), kernel_name="python3",
                               extra_arguments=KERNEL_ARGUMENTS)
    return target
