"""Command line: python -m studylib demo | run | grid | report | init | pretrain | data | download | strategies |
backbones | datasets | config"""
from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
from pathlib import Path

from .core.config import (
    METRICS,
    ConfigError,
    RunConfig,
    load_yaml,
    parse_assignment,
)
from .core.constants import ENGINES, N_BOOT, ROPE
from .core.fileio import DiskSpaceError, Terminated
from .core.templates import shipped_grids


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure ends in one readable line on stderr and a non-zero exit status
    (2: the input needs fixing, 1: the environment or an unexpected error, 130: interrupted).
    `--debug` or STUDYLIB_DEBUG=1 shows the traceback instead."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    previous = signal.signal(signal.SIGTERM, _terminated) if _main_thread() else None
    try:
        return args.func(args) or 0
    except KeyboardInterrupt as err:
        print(f"{'terminated' if isinstance(err, Terminated) else 'interrupted'}: finished runs and saved epochs "
              "are kept; run the same command again to go on", file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug or os.environ.get("STUDYLIB_DEBUG", "") not in ("", "0"):
            raise
        message, code = describe_error(err)
        print(f"error: {message}", file=sys.stderr)
        return code
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


MIN_BOOT = 100  # fewer resamples estimate the test-image variance too poorly for the intervals to mean 95%


def resamples(text: str) -> int:
    """--boot: a whole number of at least MIN_BOOT (0 would drop the test-image variance without a word)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < MIN_BOOT:
        raise argparse.ArgumentTypeError(f"{value} resamples estimate the test-image variance too poorly; give at "
                                         f"least {MIN_BOOT} (default {N_BOOT})")
    return value


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


def _terminated(signum, frame) -> None:
    """SIGTERM (a scheduler's pre-emption, kill) ends a command as Ctrl-C does: runs say interrupted, not failed."""
    raise Terminated()


def describe_error(err: Exception) -> tuple[str, int]:
    """One line saying what went wrong and what to do, and the exit status."""
    from .core.fileio import LockTimeout
    from .data.cache import CacheError

    if isinstance(err, (CacheError, LockTimeout, DiskSpaceError)):  # the machine, not the input
        return one_line(err), 1
    if isinstance(err, known_errors()):
        return one_line(err), 2
    if isinstance(err, OSError):
        return os_error_message(err), 1
    return (f"unexpected {type(err).__name__}: {one_line(err)[:300]} (rerun with --debug for the traceback, "
            "and please report it)"), 1


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def os_error_message(err: OSError) -> str:
    """Disk full, permissions, missing files: the path, the cause and the way out."""
    where = err.filename or "a file"
    if err.errno == errno.ENOSPC:
        return (f"the disk is full while writing {where}; free some space, or write elsewhere (--out, or "
                "STUDYLIB_CACHE for the image cache), then run the same command again")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"no permission to write {where} ({err.strerror}); choose a folder you can write to"
    if err.errno == errno.ENOTDIR:
        return f"{where}: part of this path is a file, not a folder; choose another path"
    if err.errno == errno.ENOENT:
        return f"{where} does not exist ({err.strerror}); check the path"
    return f"{err.strerror or err} ({where})"


def known_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message already says what to do."""
    from .core.fileio import CorruptFileError, OutputPathError
    from .core.registry import UnknownNameError
    from .data.download import DownloadError
    from .models.backbones import WeightsError
    from .training.engine import NonFiniteLossError
    from .training.rundir import RunExistsError

    return (ConfigError, UnknownNameError, WeightsError, RunExistsError, NonFiniteLossError, ValueError,
            DownloadError, OutputPathError, CorruptFileError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m studylib", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(title="commands")

    def add(name, func, help):
        command = sub.add_parser(name, help=help, description=help)
        command.set_defaults(func=func)
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show the full traceback of an error")
        return command

    p = add("run", cmd_run, "train and evaluate one configuration into a run folder")
    p.add_argument("--params", help="YAML file of config fields (single values)")
    p.add_argument("--set", "-s", action="append", default=[], metavar="KEY=VALUE",
                   help="set one config field, e.g. -s strategy=lp_ft -s lr=1e-4 (after --params)")
    p.add_argument("--out", default="outputs/run", help="run folder (default outputs/run)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    p.add_argument("--resume", action="store_true",
                   help="go on from the saved epochs (resume.pt) of an interrupted run of the same config in --out; "
                        "a finished one is returned as it is")

    p = add("grid", cmd_grid, "run every unfinished cell of a params grid (papermill; resumable; Dask to scale out)")
    p.add_argument("params", help="grid YAML, e.g. my.yaml, or the name of a shipped grid: "
                                  + ", ".join(shipped_grids()))
    p.add_argument("--out", help="grid folder (default outputs/grids/<grid name>)")
    p.add_argument("--set", "-s", action="append", default=[], metavar="KEY=VALUE", help="fix a field for every run")
    p.add_argument("--workers", type=int, default=1, help="runs at a time (a Dask LocalCluster when > 1)")
    p.add_argument("--runs-per-gpu", type=int, default=0,
                   help="K runs at once on every visible GPU (sets --workers to GPUs x K; runs spread round-robin)")
    p.add_argument("--scheduler", default="", help="address of a running Dask scheduler (e.g. tcp://host:8786)")
    p.add_argument("--engine", default="papermill", choices=ENGINES,
                   help="papermill (default) keeps an executed notebook per run; inline calls the library directly")
    p.add_argument("--dry-run", action="store_true", help="list what would run and what is already finished")
    p.add_argument("--overwrite", action="store_true",
                   help="write into --out even where files of the names a grid writes (grid.yaml, results.csv, "
                        "report.md) are not studylib's")
    p.add_argument("--yes", action="store_true", help="run a grid of more than 5,000 runs (refused otherwise: "
                                                       "almost always a typo)")
    p.add_argument("--stale", default="keep", choices=("keep", "retrain"),
                   help="finished runs whose data changed since they trained: keep them out of the report (default) "
                        "or train them again")
    p.add_argument("--notebook", help="experiment notebook papermill runs (default: the shipped one; e.g. "
                                      "DIR/notebooks/experiment.ipynb after studylib init DIR, edited)")

    p = add("report", cmd_report, "results table (CSV), failures, and a self-contained report (HTML, Markdown)")
    p.add_argument("folder")
    p.add_argument("--out", help="CSV path (default FOLDER/results.csv)")
    p.add_argument("--metric", default="balanced_accuracy", choices=METRICS, help="metric for selection and gains")
    p.add_argument("--rope", type=float, default=ROPE,
                   help=f"gains within +-ROPE of the metric count as practically equivalent (default {ROPE}: one point "
                        "of balanced accuracy)")
    p.add_argument("--boot", type=resamples, default=N_BOOT,
                   help=f"test-image resamples for the gain intervals (at least {MIN_BOOT}; default {N_BOOT})")
    p.add_argument("--posthoc", default="nemenyi", choices=("nemenyi", "wilcoxon"),
                   help="post-hoc after the Friedman test: nemenyi (the critical-difference diagram's) or wilcoxon "
                        "(pairwise signed-rank with Holm, which does not depend on the other strategies in the pool)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into FOLDER even where files of the names the report writes are not studylib's")

    p = add("wise", cmd_wise, "WiSE-FT from a grid's finished runs (no training): each fine-tuned run interpolated "
                              "with its linear probe at the validation-best alpha, written as derived runs")
    p.add_argument("folder", help="grid folder whose runs kept their weights (save_checkpoint: true) and include lp")

    p = add("soup", cmd_soup, "model soups from a grid's finished runs (no training): uniform and greedy averages of "
                              "runs that differ only in tuned settings, written as derived runs")
    p.add_argument("folder", help="grid folder whose runs kept their weights (save_checkpoint: true)")
    p.add_argument("--strategy", help="soup only this strategy's runs")

    p = add("demo", cmd_demo, "the main job, offline: pretrain on synthetic source, run params/demo.yaml, analyse")
    p.add_argument("--out", help="results folder (default outputs/demo, with --real outputs/demo_real)")
    p.add_argument("--engine", default="inline", choices=ENGINES,
                   help="inline (default): runs in worker processes, no notebook kernel per run (about 12 s less "
                        "each); papermill: each run through the experiment notebook, as grids do")
    p.add_argument("--workers", type=int, default=0, help="runs at once; 0: one per core, up to 4")
    p.add_argument("--real", metavar="DATA", help="the real-image demo instead: pretrain on DATA/ham10000-small "
                                                  "(dermoscopy), study on DATA/brain-mri-nickparvar (MRI): ~10 min")

    p = add("pretrain", cmd_pretrain, "pretrain a backbone on a source dataset: the synthetic source task (the offline "
                                      "ImageNet stand-in) or, with --data, your own or a registered one (in-domain)")
    p.add_argument("--data", help="source dataset: a registered name, or a folder of class folders / .csv / .npz "
                                  "path; default: the synthetic source task")
    p.add_argument("--set", "-s", action="append", default=[], metavar="KEY=VALUE",
                   help="more config fields of the source run (data_root, label_column, group_column, augment, lr...)")
    p.add_argument("--out", help="checkpoint file (default: outputs/pretrained/BACKBONE-SOURCE.pt)")
    p.add_argument("--backbone", default="tinycnn")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--size", type=int, default=4000, help="number of synthetic source images (without --data)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--force", action="store_true", help="retrain even if the checkpoint exists")
    p.add_argument("--quiet", action="store_true")

    p = add("data", cmd_data, "load a dataset and print its data report (counts, sizes, duplicates, skipped files)")
    p.add_argument("--params", help="YAML file of config fields")
    p.add_argument("--set", "-s", action="append", default=[], metavar="KEY=VALUE")

    p = add("download", cmd_download, "download and extract a dataset that has a public direct download")
    p.add_argument("name")
    p.add_argument("--root", help="where to put it (default: STUDYLIB_DATA/<its folder>)")
    p.add_argument("--merge", action="store_true",
                   help="extract into a non-empty folder: add missing files, never overwrite (differing files refuse)")

    p = add("init", cmd_init, "copy the notebooks and params templates into a working folder (for JupyterLab)")
    p.add_argument("folder", help="working folder, e.g. work (then: jupyter lab work)")

    add("strategies", cmd_strategies, "list the fine-tuning strategies")
    p = add("backbones", cmd_backbones, "list the backbones and their blocks (and timm's families, when installed)")
    p.add_argument("names", nargs="*", metavar="NAME", help="show these backbones' block maps, e.g. timm:convnext_tiny")
    add("datasets", cmd_datasets, "list the datasets and whether each is present locally")
    add("config", cmd_config, "list every config field with its default and meaning")
    return parser


def config_from_args(params: str | None, assignments: list[str]) -> RunConfig:
    values = load_yaml(params) if params else {}
    for text in assignments:
        key, value = parse_assignment(text)
        values[key] = value
    return RunConfig.from_dict(values, source=params or "--set")


def cmd_run(args) -> int:
    from .training.runner import run

    cfg = config_from_args(args.params, args.set)
    result = run(cfg, args.out, overwrite=args.overwrite, resume=args.resume)
    test = result.metrics["test"]
    shown = {"balanced accuracy": "balanced_accuracy", "accuracy": "accuracy", "macro F1": "macro_f1", "AUROC": "auroc"}
    scores = "  ".join(f"{label} {_score(test.get(key))}" for label, key in shown.items())
    print(f"finished: {result.path}  test {scores}")
    return 0


def _score(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"  # JSON keeps an undefined metric (NaN) as null


def cmd_grid(args) -> int:
    import pandas as pd

    from .study.grid import load_grid, run_grid

    overrides = dict(parse_assignment(text) for text in args.set)
    out = Path(args.out or Path("outputs/grids") / load_grid(args.params, overrides, args.yes).name)
    workers = args.workers
    if args.runs_per_gpu:
        import torch
        workers = max(1, torch.cuda.device_count()) * args.runs_per_gpu
    extra = {"notebook": args.notebook} if args.notebook else {}
    table = run_grid(args.params, out, workers, args.scheduler, args.engine, args.dry_run, overrides=overrides,
                     overwrite=args.overwrite, stale=args.stale, allow_large=args.yes, **extra)
    with pd.option_context("display.width", 160, "display.max_rows", 500):
        print(table.to_string(index=False))
    if args.dry_run:
        print(f"\n{table.attrs['summary']}")
    else:
        from .study.results import write_results
        print(f"\nresults table: {write_results(out)}")
    failed = 0 if args.dry_run else int((~table.status.isin(["finished", "stale"])).sum())
    if failed:
        print(f"{failed} runs did not finish (reasons above); run the same command again to retry them")
    return 1 if failed else 0


def cmd_report(args) -> int:
    from .study.results import collect, failures, write_results

    if not Path(args.folder).is_dir():
        raise ConfigError(f"{args.folder} is not a folder; give a grid's output folder (the --out of grid or demo)")
    if not args.rope >= 0:
        raise ConfigError(f"--rope {args.rope} must be 0 or more (a half-width of the metric, e.g. 0.01)")
    table = collect(args.folder)  # read every run folder once, for the table, failures and report
    if table.empty:
        raise ConfigError(f"{args.folder} holds no run folders (none has a config.json); give a grid's output "
                          "folder (the --out of grid or demo)")
    from .core.outfolder import claim_folder
    from .views.report import write_report
    claim_folder(args.folder, "grid", args.overwrite, "the report folder")
    markdown, page = write_report(args.folder, args.metric, args.boot, table, overwrite=args.overwrite, rope=args.rope,
                                  posthoc=args.posthoc)
    path = write_results(args.folder, args.out, table)  # after the report: a failed report leaves both as they were
    print(f"{len(table)} runs, {int((table.status == 'finished').sum()) if len(table) else 0} finished; "
          f"results table: {path}")
    failed = failures(table)
    if len(failed):
        print("not finished:\n" + failed.to_string(index=False))
    print(f"report: {page} (and {markdown.name})")
    return 0


def cmd_wise(args) -> int:
    from .study.derived import wise

    written = wise(args.folder)
    print(f"{len(written)} WiSE-FT runs written under {Path(args.folder) / 'derived'}; "
          f"python -m studylib report {args.folder} compares them")
    return 0


def cmd_soup(args) -> int:
    from .study.derived import soup

    written = soup(args.folder, args.strategy)
    print(f"{len(written)} soups written under {Path(args.folder) / 'derived'}; "
          f"python -m studylib report {args.folder} compares them")
    return 0


def cmd_demo(args) -> int:
    from .demo import demo, real_demo

    if args.real:
        real_demo(args.real, args.out or "outputs/demo_real", args.engine, args.workers)
    else:
        demo(args.out or "outputs/demo", engine=args.engine, workers=args.workers)
    return 0


def cmd_pretrain(args) -> int:
    from .training.pretrain import DEFAULT_CHECKPOINT, pretrain, pretrain_config, source_fields
    from .training.provenance import describe_record

    extra = dict(parse_assignment(text) for text in args.set)
    data = {**source_fields(args.data), **extra} if args.data else \
        ({"dataset": "synthetic_source", "synthetic_size": args.size, **extra} if extra else None)
    cfg = pretrain_config(args.backbone, args.image_size, args.size, args.epochs, quiet=args.quiet, data=data)
    name = Path(args.data.rstrip("/\\")).stem if args.data else "synthetic-source"
    default = DEFAULT_CHECKPOINT if not args.data and args.backbone == "tinycnn" else \
        Path("outputs/pretrained") / f"{args.backbone.replace(':', '-')}-{name}.pt"
    path = pretrain(args.out or default, cfg, reuse=not args.force)
    print(describe_record(path))
    return 0


def cmd_data(args) -> int:
    from .data.datasets import format_report, load_dataset

    print(format_report(load_dataset(config_from_args(args.params, args.set))))
    return 0


def cmd_download(args) -> int:
    from .data.datasets import dataset_root, get_dataset_info
    from .data.download import fetch_dataset

    info = get_dataset_info(args.name)
    root = fetch_dataset(info, Path(args.root) if args.root else dataset_root(info), merge=args.merge)
    print(f"{info.name} is in {root}")
    return 0


def cmd_init(args) -> int:
    from .core.fileio import ensure_folder
    from .core.templates import copy_templates

    folder = ensure_folder(Path(args.folder), "the working folder")
    copied, kept = copy_templates(folder)
    for path in copied:
        print(f"  {path}")
    if kept:
        print(f"kept as they were (not overwritten): {', '.join(p.name for p in kept)}")
    print(f"next: jupyter lab {folder}   (notebooks/experiment.ipynb runs one experiment; "
          f"studylib grid {folder}/params/smoke.yaml runs a grid)")
    return 0


def cmd_strategies(args) -> int:
    from .training.strategies import STRATEGIES, STUDY_STRATEGIES

    for name, cls in STRATEGIES.items():
        tag = "study" if name in STUDY_STRATEGIES else "extra"
        owned = ", ".join(f"{k.name}={k.default!r}" for k in cls.all_knobs())
        print(f"{name:18} {cls.label:9} [{tag}] {cls.description}\n{'':18} reads: {', '.join(cls.reads)}"
              + (f"; knobs: {owned}" if owned else ""))
    return 0


def cmd_backbones(args) -> int:
    from .models.backbones import BACKBONES, block_names, weight_names
    from .models.timm_backbones import TESTED

    def show(name: str) -> None:
        spec = BACKBONES.get(name)
        weights = ", ".join(weight_names(spec) + ["none", "a checkpoint file"])
        blocks = block_names(name)
        shown = ", ".join(blocks) if len(blocks) <= 9 else f"{', '.join(blocks[:4])}, ..., {', '.join(blocks[-3:])}"
        print(f"{name:12} {spec.description}\n{'':12} blocks ({len(blocks)}): {shown}\n{'':12} weights: {weights}")

    if args.names:
        for name in args.names:
            show(name)
        return 0
    for name in list(BACKBONES):
        show(name)
    try:
        import timm
    except ImportError:
        print("\ntimm is not installed: pip install 'studylib[timm]' to use any timm model as backbone timm:NAME")
        return 0
    print(f"\nAny timm {timm.__version__} model (timm.list_models()) as backbone timm:NAME, its block map from timm's "
          "group_matcher. Families tested (random init), with an example:")
    for family, (_, model) in TESTED.items():
        print(f"{family}:")
        show(f"timm:{model}")
    return 0


def cmd_datasets(args) -> int:
    from .data.datasets import DATASETS, local_status

    print(f"{'name':21}{'modality':46}{'licence':18}local copy")
    for name, info in DATASETS.items():
        print(f"{name:21}{info.modality[:45]:46}{info.licence[:17]:18}{local_status(info)}")
    print("\nHow to obtain each (set STUDYLIB_DATA, default ./data, or data_root):")
    for name, info in DATASETS.items():
        if info.study:
            print(f"  {name}: {info.obtain}\n    cite: {info.citation}")
    return 0


def cmd_config(args) -> int:
    from .core.config import documentation

    print("# [role]: case/method/seed are what a study compares; tuned is chosen on validation per run;\n"
          "# protocol/data/engine are held fixed inside one comparison (the analysis groups runs by them);\n"
          "# runtime never changes a result (left out of the run hash). Strategy knobs belong to the strategies\n"
          "# named in their help (python -m studylib strategies); a run hashes only its own strategy's knobs.")
    section = None
    for doc in documentation():
        if doc.section != section:
            section = doc.section
            print(f"# --- {section} ---")
        print(f"{doc.name:22} = {doc.default!r:22} # [{doc.role}] {doc.help}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
