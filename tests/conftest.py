"""Shared fixtures: tiny configs on the synthetic data, the optional ../shared/data folder."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from studylib import RunConfig
from studylib.data.datasets import load_dataset

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

torch.set_num_threads(2)


def tiny_config(**changes) -> RunConfig:
    """Seconds-long runs: tinycnn, 16 px crops, a few hundred synthetic images."""
    base = dict(backbone="tinycnn", image_size=16, synthetic_size=160, batch_size=32, max_epochs=3,
                patience=10, quiet=True, device="cpu", delta_attention_batches=1)  # DELTA: one ablation pass
    return RunConfig.from_dict({**base, **changes})


def trainer_for(cfg, data):
    """A Trainer for `cfg` on prepared `data`, its backbone seeded by the config (no run folder)."""
    from studylib.models.backbones import create_backbone
    from studylib.training.engine import Device
    from studylib.training.runner import make_trainer

    torch.manual_seed(cfg.seed)
    backbone = create_backbone(cfg.backbone, data.num_classes)
    return make_trainer(cfg, backbone, data, Device.resolve(cfg, backbone))


@pytest.fixture
def tiny():
    return tiny_config


@pytest.fixture(scope="session")
def tiny_data():
    return load_dataset(tiny_config(), progress=False)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent (it only exists beside the project checkout)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def processes_only_in_slow_tests(request, monkeypatch):
    """A test that starts a process (a subprocess, a notebook kernel, a browser, a worker pool) must be marked
    `slow`, so `pytest -m "not slow"` stays the quick, in-process suite; this fails the ones that do not say so."""
    if request.node.get_closest_marker("slow"):
        yield
        return
    import multiprocessing.process
    import platform
    import subprocess

    started: list[str] = []

    def spy(real):
        def record(self, *args, **kwargs):
            started.append(str(args[0] if args else kwargs.get("args", type(self).__name__))[:80])
            return real(self, *args, **kwargs)
        return record

    from studylib.training.runner import git_commit
    git_commit()  # asked once per process (env.json), before the spy: not a process this test starts
    platform.processor()  # the same (uname -p, cached by platform)
    monkeypatch.setattr(subprocess.Popen, "__init__", spy(subprocess.Popen.__init__))
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", spy(multiprocessing.process.BaseProcess.start))
    yield
    assert not started, f"this test starts a process ({started[0]}): mark it @pytest.mark.slow"


@pytest.fixture(autouse=True, scope="session")
def isolated_cache(tmp_path_factory):
    """Prepared-image cache in a temporary folder, shared by the whole session."""
    import os
    path = tmp_path_factory.mktemp("cache")
    old = os.environ.get("STUDYLIB_CACHE")
    os.environ["STUDYLIB_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("STUDYLIB_CACHE", None)
    else:
        os.environ["STUDYLIB_CACHE"] = old


def write_image_folder(root: Path, classes=("a", "b", "c"), per_class=8, splits=("train", "test"), size=40,
                       seed=0) -> Path:
    """Class folders of PNGs made from the synthetic generator (distinct images per class)."""
    import numpy as np
    from PIL import Image

    from studylib.data.synthetic import make_synthetic

    images, labels, _ = make_synthetic("target", per_class * len(classes) * max(1, len(splits)) * 4, size, seed)
    counter = {}
    for image, label in zip(images, labels):
        if label >= len(classes):
            continue
        n = counter.get(label, 0)
        if n >= per_class * max(1, len(splits)):
            continue
        counter[label] = n + 1
        split = splits[n % len(splits)] if splits else ""
        folder = root / split / classes[label] if split else root / classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0))).save(folder / f"img{label}_{n}.png")
    return root


class Preempted(BaseException):
    """Stands in for a kill mid-run (SIGTERM, pre-emption, a dead kernel)."""


def stop_training_at(monkeypatch, epoch: int):
    """Make every run raise Preempted when it starts training `epoch`; returns the undo."""
    import studylib.training.engine as engine

    train_epoch = engine.Trainer.train_epoch

    def stopping(self, at, *args):
        if at == epoch:
            raise Preempted()
        return train_epoch(self, at, *args)

    monkeypatch.setattr(engine.Trainer, "train_epoch", stopping)
    return lambda: monkeypatch.setattr(engine.Trainer, "train_epoch", train_epoch)
