"""One experiment end to end: data, backbone, strategy, fit, a single test evaluation, the run folder."""
from __future__ import annotations

import functools
import os
import platform
import random
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..core import runfiles
from ..core.config import ConfigError, RunConfig
from ..core.fileio import (
    file_lock,
    save_torch,
    sha256_file,
    write_csv,
    write_json,
)
from ..core.outfolder import claim_folder
from ..data.bundle import DataBundle, DeviceBatches
from ..data.datasets import load_dataset
from ..data.rows import select
from ..data.stream import MemoryBudget
from ..models.backbones import Backbone, create_backbone
from .calibration import calibration_metrics, reliability_table
from .engine import Device, Trainer, evaluate
from .metrics import classification_metrics, confusion, per_class_metrics
from .provenance import check_not_pretrained_on, pretraining_summary
from .representations import Representations, probe_subset
from .rundir import RunDir
from .strategies import create_strategy


@dataclass
class RunResult:
    path: Path
    metrics: dict

    def __repr__(self) -> str:
        test = self.metrics["test"]
        return (f"RunResult({self.path}: test balanced accuracy {test['balanced_accuracy']:.3f}, "
                f"best epoch {self.metrics['best_epoch']})")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_config(cfg: RunConfig) -> RunConfig:
    """The one validation above the config: its dataset, backbone and strategy are registered, and
    the strategy accepts the configuration. Returns it with the strategy's `auto` values resolved
    (what config.json records). Runs and grids call it before anything runs."""
    from ..data.datasets import DATASETS
    from ..models.backbones import BACKBONES
    from .strategies import STRATEGIES

    for registry, name in ((DATASETS, cfg.dataset), (BACKBONES, cfg.backbone), (STRATEGIES, cfg.strategy)):
        if name not in registry:
            raise ConfigError(registry.unknown_message(name))
    STRATEGIES.get(cfg.strategy).check(cfg)
    return STRATEGIES.get(cfg.strategy).resolve(cfg)


def run(cfg: RunConfig, out_dir: str | Path, overwrite: bool = False, data: DataBundle | None = None,
        resume: bool = False) -> RunResult:
    """Train and evaluate one configuration into `out_dir`; on failure the folder says why.

    With `resume`, a folder that already holds a finished run of the same configuration is
    returned as it is (grids use this, so two grid processes never train one cell twice).

    Args:
        cfg: the configuration to run (checked, and its `auto` values resolved, first).
        out_dir: the run folder: new, empty, or one studylib wrote.
        overwrite: replace a finished run there, and write into a folder holding files studylib did not write.
        data: an already loaded dataset to use; None: loaded from cfg.
        resume: go on from saved epochs (resume.pt); a finished run of the same configuration is returned as it is.
    """
    cfg = check_config(cfg)
    rundir = RunDir(out_dir)
    claim_folder(rundir.path, "run", overwrite, "the run folder (--out)")
    with file_lock(rundir.file(runfiles.LOCK)):  # one writer per run folder, even across grid restarts
        rundir.tidy()
        finished = rundir.metrics() if resume else None
        if finished and finished.get("run_hash") == cfg.run_hash():
            return RunResult(rundir.path, finished)
        earlier = rundir.status_record().get("attempts", []) if resume else []  # prepare clears status.json
        rundir.prepare(overwrite, resume)
        write_json(rundir.file(runfiles.CONFIG), cfg.to_dict())
        rundir.start_attempt(earlier)
        try:
            return _run(cfg, rundir, data)
        except BaseException as err:
            rundir.fail(err)
            raise


def _run(cfg: RunConfig, rundir: RunDir, data: DataBundle | None) -> RunResult:
    threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    try:
        return _train_and_test(cfg, rundir, data)
    finally:
        torch.set_num_threads(threads)  # a notebook or test session keeps its own setting


def _train_and_test(cfg: RunConfig, rundir: RunDir, data: DataBundle | None) -> RunResult:
    started = time.perf_counter()
    data = data if data is not None else load_dataset(cfg, progress=not cfg.quiet)
    write_data_files(rundir, data)
    check_not_pretrained_on(cfg.weights, data)
    seed_everything(cfg.seed)
    backbone = create_backbone(cfg.backbone, data.num_classes, cfg.weights, cfg.weights_sha256, progress=not cfg.quiet,
                               keys=cfg.weights_keys, channels=cfg.weights_channels)
    if cfg.image_size < backbone.spec.min_size:
        raise ValueError(f"image_size={cfg.image_size} is too small for {cfg.backbone}: its downsampling stages need "
                         f"at least {backbone.spec.min_size} px; raise image_size or use another backbone")
    dev = Device.resolve(cfg, backbone)
    dev.place(backbone.model)
    identity = {"run_hash": cfg.run_hash(), "data": data.fingerprint()}  # hashing every image: once per run
    write_json(rundir.file(runfiles.ENV), environment(cfg, backbone, dev, identity["data"]))
    budget = MemoryBudget.for_run(cfg.memory_gb)  # train, then val, then test take what fits
    trainer = make_trainer(cfg, backbone, data, dev, budget)
    features = start_representations(cfg, backbone, data, dev, trainer)  # the starting features: before any step
    restore(trainer, rundir, identity, cfg.quiet, features)
    trainer.on_epoch_end = ResumeSaver(rundir, cfg, identity, trainer, features)
    if dev.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev.device)
    fit = trainer.fit()
    renamed = trainer.strategy.merge()  # SSF, LoRA: folded into the backbone's layers; the same outputs
    if features is not None and renamed:
        features.initial = {renamed.get(name, name): weights for name, weights in features.initial.items()}
    test = split_batches(data, "test", cfg, dev, budget=budget)
    test_started = time.perf_counter()
    test_loss, probs, labels = evaluate(backbone.model, test, dev, trainer.loss)  # the one test evaluation
    test_seconds = time.perf_counter() - test_started
    write_predictions(rundir, data, probs, labels)
    write_csv(rundir.file(runfiles.RELIABILITY), reliability_table(labels, probs, cfg.calibration_bins))
    if features is not None:
        features.record(fit.best_epoch, selected=True)
        write_csv(rundir.file(runfiles.REPRESENTATIONS), features.rows)
    if cfg.save_checkpoint:
        save_torch(rundir.file(runfiles.CHECKPOINT), backbone.model.state_dict())
    metrics = {
        "val": fit.best_val, **test_scores(cfg, data, test_loss, probs, labels),
        "best_epoch": fit.best_epoch, "epochs_run": len(fit.history), "stopped_early": fit.stopped_early,
        "resumed_from_epoch": fit.resumed_from_epoch,
        "wall_seconds": time.perf_counter() - started, "test_seconds": test_seconds,
        "peak_memory_mb": peak_memory_mb(dev),
        "trainable_params": fit.max_trainable, "total_params": sum(p.numel() for p in backbone.model.parameters()),
        "run_hash": cfg.run_hash(),
        "streamed": [name for name, batches in (("train", trainer.train_data), ("val", trainer.val_data),
                                                ("test", test)) if batches.streamed],
    }
    write_json(rundir.file(runfiles.METRICS), metrics)  # written last: the run is finished
    rundir.mark("finished")
    rundir.file(runfiles.RESUME).unlink(missing_ok=True)
    return RunResult(rundir.path, metrics)


def split_batches(data: DataBundle, split: str, cfg: RunConfig, dev: Device, balanced: bool = False,
                  budget: MemoryBudget | None = None) -> DeviceBatches:
    """One split's batches: resident while it fits `budget` (claimed in turn), otherwise streamed.

    Args:
        data: the prepared dataset.
        split: "train", "val" or "test".
        cfg: the run's config (batch_size, image_size as the crop, memory_gb).
        dev: device and memory format.
        balanced: draw training batches class-balanced (balanced_sampling).
        budget: memory budget shared with the other splits; None: a new one from cfg.memory_gb.
    """
    index = data.indices(split)
    if len(index) == 0:
        raise ValueError(f"dataset {data.name} has no {split} images; check the split column or the fractions")
    budget = budget or MemoryBudget.for_run(cfg.memory_gb)
    return DeviceBatches(select(data.images, index), data.labels[index], cfg.batch_size, cfg.image_size,
                         dev.device, dev.channels_last, balanced, budget, dev.mean, dev.std)


def start_representations(cfg: RunConfig, backbone: Backbone, data: DataBundle, dev: Device,
                   trainer: Trainer) -> Representations | None:
    """CKA per block against the starting network on `repr_images` validation images (None when 0).

    Args:
        cfg: the run's config (repr_images, batch_size, image_size, seed).
        backbone: the network, still at its starting weights.
        data: the prepared dataset; the probe images come from its validation split.
        dev: device, autocast and memory format.
        trainer: the run's trainer (its layer log holds the starting weights).
    """
    if not cfg.repr_images:
        return None
    index = probe_subset(data, cfg.repr_images, cfg.seed)
    batches = DeviceBatches(data.images[index], data.labels[index], cfg.batch_size, cfg.image_size, dev.device,
                            dev.channels_last, mean=dev.mean, std=dev.std)
    return Representations(backbone, batches, dev.autocast, trainer.layers.initial)


def class_weights(cfg: RunConfig, data: DataBundle) -> torch.Tensor | None:
    """Per-class loss weights inverse to the training counts when class_weighted_loss, else None."""
    if not cfg.class_weighted_loss:
        return None
    counts = np.bincount(data.labels[data.indices("train")], minlength=data.num_classes).astype(np.float64)
    return torch.tensor(counts.sum() / (len(counts) * np.maximum(counts, 1)), dtype=torch.float32)


def make_trainer(cfg: RunConfig, backbone: Backbone, data: DataBundle, dev: Device,
                 budget: MemoryBudget | None = None) -> Trainer:
    """A Trainer for `cfg`: its strategy, class weights (class_weighted_loss) and the train and val batches.

    Args:
        cfg: the run's config.
        backbone: the network, already on the device.
        data: the prepared dataset (its train and val splits are used).
        dev: device, autocast and memory format.
        budget: memory budget the train split, then the val split, claim in turn; None: a new one from cfg.memory_gb.
    """
    if data.images.shape[-1] < cfg.image_size:
        raise ValueError(f"prepared images are {data.images.shape[-1]} px but image_size={cfg.image_size}; "
                         "lower image_size or raise resize_size")
    strategy = create_strategy(cfg, backbone)
    weights = class_weights(cfg, data)
    budget = budget or MemoryBudget.for_run(cfg.memory_gb)
    return Trainer(cfg, backbone, strategy, split_batches(data, "train", cfg, dev, cfg.balanced_sampling, budget),
                   split_batches(data, "val", cfg, dev, budget=budget), dev, weights)


class ResumeSaver:
    """After each epoch: the logs, and resume.pt when `resume_due` says so.

    Grids run with resume=True, so a run killed mid-way (pre-emption, a dead kernel, Ctrl-C)
    goes on from its last saved epoch instead of from scratch, and trains exactly as it would have.
    """

    def __init__(self, rundir: RunDir, cfg: RunConfig, identity: dict, trainer: Trainer,
                 features: Representations | None = None):
        self.rundir, self.cfg, self.trainer, self.features = rundir, cfg, trainer, features
        self.identity = identity  # config hash and data fingerprint: resume.pt is only used for these
        self.last = time.monotonic()
        self.save_seconds = 0.0  # what the last save cost (none yet: the first epoch is saved)

    def __call__(self, fit) -> None:
        logged = self.cfg.log_representations_every
        if self.features is not None and logged and len(fit.history) % logged == 0:
            self.features.record(len(fit.history) - 1)
            write_csv(self.rundir.file(runfiles.REPRESENTATIONS), self.features.rows)
        write_logs(self.rundir, fit, self.trainer)
        over = self.trainer.loop.done or self.trainer.loop.next_epoch >= self.cfg.max_epochs
        if not resume_due(time.monotonic() - self.last, self.save_seconds, self.cfg.resume_every_s, over):
            return
        started = time.monotonic()
        save_torch(self.rundir.file(runfiles.RESUME), {**self.trainer.checkpoint(), **self.identity})
        self.rundir.mark_running(saved_epochs=len(fit.history))  # what an interrupted run can go on from
        self.last = time.monotonic()
        self.save_seconds = self.last - started


SAVE_SHARE = 0.05  # an epoch is saved whenever saving costs at most this share of the time since the last save


def resume_due(since_last: float, save_seconds: float, every: float, training_over: bool) -> bool:
    """Whether to write resume.pt after this epoch: never with every = -1; otherwise after the last
    epoch (an interrupt during the test pass keeps the trained weights), once `every` seconds passed,
    and whenever a save is cheap against the epochs since the last one (short runs: every epoch).

    Args:
        since_last: seconds since the last save (or since the run started).
        save_seconds: seconds the last save took (0 before the first).
        every: resume_every_s: save at least this often, in seconds; -1: never.
        training_over: no epoch is left to train (early stopping fired or max_epochs reached).
    """
    if every < 0:
        return False
    return training_over or since_last >= every or save_seconds <= SAVE_SHARE * since_last


def restore(trainer: Trainer, rundir: RunDir, identity: dict, quiet: bool,
            features: Representations | None = None) -> None:
    """Continue from resume.pt when it belongs to this configuration and data; else start afresh.

    Args:
        trainer: the freshly built trainer the saved state is loaded into.
        rundir: the run folder that may hold resume.pt.
        identity: run_hash and data fingerprint; resume.pt must record the same values.
        quiet: no "resuming ..." message.
        features: the run's CKA log, whose per-epoch rows up to the resumed epoch are read back; None: off.
    """
    path = rundir.file(runfiles.RESUME)
    if not path.is_file():
        return
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a torn or foreign file costs the saved epochs, never the run
        set_aside(path, f"could not be read ({type(err).__name__})")
        return
    if {key: state.get(key) for key in identity} != identity:
        set_aside(path, "belongs to another configuration or data")
        return
    trainer.restore(state)
    saved = rundir.file(runfiles.REPRESENTATIONS)
    if features is not None and saved.is_file():  # per-epoch rows up to the resumed epoch
        rows = pd.read_csv(saved)
        features.rows = rows[~rows.selected & (rows.epoch < trainer.loop.next_epoch)].to_dict("records")
    write_logs(rundir, trainer.result, trainer)  # the logs up to there, even if no epoch is left to train
    rundir.mark_running(resumed_from_epoch=trainer.loop.next_epoch, saved_epochs=trainer.loop.next_epoch)
    if not quiet:
        print(f"resuming {rundir.path.name} after epoch {trainer.loop.next_epoch - 1}")


def set_aside(path: Path, why: str) -> None:
    """Keep saved epochs that cannot be used under a name of their own (nothing is deleted, nothing set
    aside before is replaced) and start afresh."""
    kept = path.with_name("resume-set-aside.pt")
    number = 1
    while kept.exists():
        number += 1
        kept = path.with_name(f"resume-set-aside-{number}.pt")
    os.replace(path, kept)
    print(f"note: {path} {why}; moved to {kept.name} (delete it when you do not need it) and starting this "
          "run from epoch 0")


def write_logs(rundir: RunDir, fit, trainer: Trainer) -> None:
    write_csv(rundir.file(runfiles.HISTORY), fit.history)
    write_csv(rundir.file(runfiles.LAYERS), trainer.layers.rows)
    if trainer.layers.per_tensor:
        write_csv(rundir.file(runfiles.TENSORS), trainer.layers.tensor_rows)


def write_data_files(rundir: RunDir, data: DataBundle) -> None:
    frame = pd.DataFrame({"id": data.ids, "label": data.labels, "split": data.split})
    if data.groups is not None:
        frame["group"] = data.groups
    elif data.probable_groups is not None:
        frame["probable_group"] = data.probable_groups
    write_csv(rundir.file(runfiles.SPLITS), frame)
    write_json(rundir.file(runfiles.DATA_REPORT), data.report)


def test_scores(cfg: RunConfig, data: DataBundle, loss: float, probs: np.ndarray, labels: np.ndarray) -> dict:
    """metrics.json's test part: every metric, calibration, the confusion matrix and per-class scores.

    Args:
        cfg: the run's config (calibration_bins).
        data: the dataset (its class names).
        loss: mean test loss.
        probs: test class probabilities, shape (n, k).
        labels: test labels, shape (n,).
    """
    return {"test": {"loss": loss, **classification_metrics(labels, probs),
                     **calibration_metrics(labels, probs, cfg.calibration_bins)},
            "test_confusion": confusion(labels, probs).tolist(), "classes": data.classes,
            "test_per_class": per_class_metrics(labels, probs, data.classes)}


def write_predictions(rundir: RunDir, data: DataBundle, probs: np.ndarray, labels: np.ndarray) -> None:
    """predictions.csv: id, label, predicted class and one probability column per class, per test image.

    Args:
        rundir: the run folder.
        data: the dataset (test ids and class names).
        probs: test class probabilities, shape (n, k), in the test split's order.
        labels: test labels, shape (n,), in the same order.
    """
    index = data.indices("test")
    frame = pd.DataFrame({"id": [data.ids[i] for i in index], "label": labels, "pred": probs.argmax(1)})
    for k, name in enumerate(data.classes):
        frame[f"prob_{name}"] = probs[:, k]
    write_csv(rundir.file(runfiles.PREDICTIONS), frame)


def peak_memory_mb(dev: Device) -> float:
    if dev.device.type == "cuda":
        return torch.cuda.max_memory_allocated(dev.device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def environment(cfg: RunConfig, backbone: Backbone, dev: Device, fingerprint: str) -> dict:
    """env.json: versions, device, precision, git commit, weights (their SHA-256 when a file), data fingerprint.

    Args:
        cfg: the run's config (its weights).
        backbone: the network (recorded as its repr).
        dev: device, autocast dtype and memory format.
        fingerprint: the data's content hash (DataBundle.fingerprint).
    """
    from importlib.metadata import PackageNotFoundError, version

    import sklearn

    weights = {"weights": cfg.weights}
    path = Path(cfg.weights)
    if path.is_file():
        weights["sha256"] = sha256_file(path)
        if pretrained := pretraining_summary(cfg.weights):
            weights["pretraining"] = pretrained  # the checkpoint's source data and recipe, from its record
    return {
        "python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
        "torchvision": version("torchvision"), "numpy": np.__version__, "sklearn": sklearn.__version__,
        "studylib": _studylib_version(version, PackageNotFoundError),
        "device": str(dev.device), "device_name": torch.cuda.get_device_name(dev.device) if dev.device.type == "cuda"
        else f"CPU {platform.machine()}", "amp": str(dev.amp_dtype), "channels_last": dev.channels_last,
        "input_mean": list(dev.mean), "input_std": list(dev.std), "weights_channels_adapted": backbone.adapted,
        "threads": torch.get_num_threads(), "git_commit": git_commit(), **weights,
        "data_fingerprint": fingerprint, "backbone": repr(backbone),
    }


def _studylib_version(version, missing) -> str | None:
    try:
        return version("studylib")
    except missing:  # running from a source tree that was never installed
        return None


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The checkout's commit; None for an installed wheel (git would name whatever repository encloses it).
    Asked once per process: a grid of many runs in one process starts git once."""
    checkout = Path(__file__).resolve().parents[2]
    if not (checkout / "pyproject.toml").is_file():
        return None
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
