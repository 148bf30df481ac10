"""One run end to end: the run folder, selection on validation, a single test pass, failures."""
import json

import numpy as np
import pandas as pd
import pytest
from conftest import Preempted, stop_training_at

import studylib.training.runner as runner_module
from studylib import run
from studylib.cli import main
from studylib.core import outfolder, runfiles
from studylib.training.engine import NonFiniteLossError
from studylib.training.rundir import RunDir, RunExistsError
from studylib.training.strategies import L2SP, STUDY_STRATEGIES, list_strategies

RUN_FILES = ["config.json", "metrics.json", "history.csv", "layers.csv", "predictions.csv", "env.json",
             "status.json", "splits.csv"]


@pytest.mark.parametrize("strategy", list_strategies())
def test_each_registered_strategy_writes_a_complete_run_folder(tiny, tmp_path, strategy):
    epochs = 5 if strategy.startswith("gu_") else 2  # gradual unfreezing must reach its last stage (5 blocks)
    result = run(tiny(strategy=strategy, max_epochs=epochs, lp_epochs=1, gu_epochs_per_stage=1), tmp_path)
    for name in RUN_FILES:
        assert (tmp_path / name).is_file(), name
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"accuracy", "balanced_accuracy", "macro_f1", "auroc", "kappa"}
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert len(predictions) == sum(map(sum, result.metrics["test_confusion"])) > 0
    assert [c for c in predictions.columns if c.startswith("prob_")] == [f"prob_{c}" for c in metrics["classes"]]
    assert predictions.filter(like="prob_").sum(axis=1).round(5).eq(1).all()
    recall = [metrics["test_per_class"][c]["recall"] for c in metrics["classes"]]
    truth = [(predictions.pred[predictions.label == k] == k).mean() for k in range(len(metrics["classes"]))]
    assert recall == pytest.approx(truth) and np.mean(recall) == pytest.approx(metrics["test"]["balanced_accuracy"])
    layers = pd.read_csv(tmp_path / "layers.csv")
    assert set(layers.columns) >= {"epoch", "block", "trainable", "lr", "grad_norm", "weight_norm", "rgn", "dist_init"}
    assert RunDir(tmp_path).status()["status"] == "finished"


def test_best_validation_weights_are_restored_and_test_is_evaluated_once(tiny, tmp_path, monkeypatch):
    calls = []
    real = runner_module.evaluate
    monkeypatch.setattr(runner_module, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    result = run(tiny(max_epochs=4, lr=0.02), tmp_path)
    assert len(calls) == 1
    history = pd.read_csv(tmp_path / "history.csv")
    best = history.loc[history.val_balanced_accuracy.idxmax()]
    assert result.metrics["best_epoch"] == best.epoch
    assert result.metrics["val"]["balanced_accuracy"] == pytest.approx(best.val_balanced_accuracy)


def test_same_seed_same_metrics_on_cpu(tiny, tmp_path):
    a = run(tiny(max_epochs=2, seed=5), tmp_path / "a").metrics
    b = run(tiny(max_epochs=2, seed=5), tmp_path / "b").metrics
    c = run(tiny(max_epochs=2, seed=6), tmp_path / "c").metrics
    assert a["test"] == b["test"] and a["val"] == b["val"]
    assert a["val"] != c["val"]


def test_early_stopping_counts_patience_in_the_last_stage(tiny, tmp_path):
    result = run(tiny(max_epochs=30, patience=1, lr=1e-6), tmp_path)
    assert result.metrics["stopped_early"] and result.metrics["epochs_run"] < 30


def test_overwrite_with_fewer_measurements_leaves_no_earlier_measurement_file(tiny, tmp_path):
    """Every file a run writes is in the run-file catalogue, so --overwrite clears it: a run with
    representations, tensors and a checkpoint overwritten by one without leaves none of them."""
    run(tiny(max_epochs=1, repr_images=16, log_tensors=True, save_checkpoint=True), tmp_path)
    written = {p.name for p in tmp_path.iterdir()} - {runfiles.LOCK, outfolder.MARKER}
    assert written <= set(runfiles.RUN_FILES), written - set(runfiles.RUN_FILES)
    assert {runfiles.REPRESENTATIONS, runfiles.TENSORS, runfiles.CHECKPOINT} <= written
    run(tiny(max_epochs=1, repr_images=0), tmp_path, overwrite=True)
    left = {runfiles.REPRESENTATIONS, runfiles.TENSORS, runfiles.CHECKPOINT} & {p.name for p in tmp_path.iterdir()}
    assert not left, f"--overwrite kept the first run's {left}"


def test_finished_run_is_refused_unless_overwrite(tiny, tmp_path):
    run(tiny(max_epochs=1), tmp_path)
    before = (tmp_path / "metrics.json").read_text()
    with pytest.raises(RunExistsError, match="--overwrite"):
        run(tiny(max_epochs=1), tmp_path)
    assert (tmp_path / "metrics.json").read_text() == before
    run(tiny(max_epochs=1, seed=1), tmp_path, overwrite=True)


def test_nan_loss_stops_the_run_marks_it_failed_and_keeps_the_log(tiny, tmp_path, monkeypatch):
    real = L2SP.add_penalty_grad
    steps = {"n": 0}

    def flaky(self):
        steps["n"] += 1
        value = real(self)
        return value * float("nan") if steps["n"] > 6 else value  # 5 steps per epoch: NaN in epoch 2

    monkeypatch.setattr(L2SP, "add_penalty_grad", flaky)
    with pytest.raises(NonFiniteLossError, match="nan"):
        run(tiny(strategy="l2_sp", max_epochs=3), tmp_path)
    status = RunDir(tmp_path).status()
    assert status["status"] == "failed" and "NonFiniteLossError" in status["reason"]
    assert not (tmp_path / "metrics.json").exists()
    assert len(pd.read_csv(tmp_path / "history.csv")) == 1  # epoch 0 was logged and kept


def test_cli_run_and_listings(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["run", "-s", "image_size=16", "-s", "synthetic_size=120", "-s", "max_epochs=1", "-s", "quiet=true",
                 "-s", "device=cpu", "-s", "strategy=lp", "--out", str(out)])
    assert code == 0 and (out / "metrics.json").is_file()
    assert main(["run", "--out", str(out), "-s", "image_size=16"]) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    stamp = (out / "metrics.json").stat().st_mtime_ns
    same = ["-s", "image_size=16", "-s", "synthetic_size=120", "-s", "max_epochs=1", "-s", "quiet=true",
            "-s", "device=cpu", "-s", "strategy=lp", "--out", str(out), "--resume"]
    assert main(["run", *same]) == 0 and (out / "metrics.json").stat().st_mtime_ns == stamp  # finished: as it is
    assert main(["run", *same, "-s", "lr=0.5"]) == 2  # --resume never replaces another config's finished run
    main(["strategies"])
    listing = capsys.readouterr().out
    assert all(f"\n{s} " in "\n" + listing for s in STUDY_STRATEGIES)


def test_cli_params_yaml(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("image_size: 16\nsynthetic_size: 120\nmax_epochs: 1\nquiet: true\ndevice: cpu\n")
    assert main(["run", "--params", str(params), "-s", "strategy=l1_sp", "--out", str(tmp_path / "r")]) == 0
    assert json.loads((tmp_path / "r" / "config.json").read_text())["strategy"] == "l1_sp"


@pytest.mark.slow  # seconds in-process: out of the quick suite
@pytest.mark.parametrize("backbone", ["resnet50", "densenet121", "vgg19"])
def test_study_backbones_smoke(tiny, tmp_path, backbone):
    cfg = tiny(backbone=backbone, image_size=32, synthetic_size=64, max_epochs=1, max_steps_per_epoch=1,
               batch_size=8, strategy="lp")
    result = run(cfg, tmp_path)
    assert result.metrics["epochs_run"] == 1
    blocks = {"resnet50": 6, "densenet121": 9, "vgg19": 6}[backbone]
    assert len(pd.read_csv(tmp_path / "layers.csv")) == blocks  # one epoch x every block


def test_resume_returns_a_finished_run_of_the_same_config_without_training(tiny, tmp_path):
    first = run(tiny(max_epochs=1), tmp_path)
    stamp = (tmp_path / "metrics.json").stat().st_mtime_ns
    again = run(tiny(max_epochs=1), tmp_path, overwrite=True, resume=True)
    assert again.metrics == first.metrics and (tmp_path / "metrics.json").stat().st_mtime_ns == stamp
    changed = run(tiny(max_epochs=1, seed=9), tmp_path, overwrite=True, resume=True)  # another config: trains
    assert ((tmp_path / "metrics.json").stat().st_mtime_ns != stamp
            and changed.metrics["run_hash"] != first.metrics["run_hash"])


def test_bf16_autocast_and_channels_last_paths_train_on_cpu(tiny, tmp_path):
    """The CUDA defaults (bf16 autocast, channels_last inputs and weights) forced on the CPU."""
    import pandas as pd
    import torch

    from studylib.data.datasets import load_dataset
    from studylib.models.backbones import create_backbone
    from studylib.training.engine import Device
    from studylib.training.runner import make_trainer

    cfg = tiny(backbone="resnet18", image_size=32, amp="bf16", channels_last="on", max_epochs=2)
    backbone = create_backbone("resnet18", 4)
    dev = Device.resolve(cfg, backbone)
    assert (dev.amp_dtype, dev.channels_last) == (torch.bfloat16, True)
    trainer = make_trainer(cfg, backbone, load_dataset(cfg, progress=False), dev)
    x, _ = next(iter(trainer.train_data.batches()))
    assert x.is_contiguous(memory_format=torch.channels_last)
    with dev.autocast():
        assert backbone.model(x).dtype == torch.bfloat16
    result = run(cfg, tmp_path / "bf16")
    assert (result.metrics["test"]["loss"] < 10
            and pd.read_csv(tmp_path / "bf16" / "history.csv").train_loss.notna().all())
    assert json.loads((tmp_path / "bf16" / "env.json").read_text())["amp"] == "torch.bfloat16"


@pytest.mark.parametrize("strategy", ["ft", "gu_last_first", "lp_ft", "auto_rgn", "l2_sp", "delta", "ssf", "lora"])
def test_a_run_stopped_mid_way_resumes_and_trains_exactly_as_one_that_never_stopped(tiny, tmp_path, monkeypatch,
                                                                                  strategy):
    cfg = tiny(strategy=strategy, max_epochs=6, lp_epochs=2, gu_epochs_per_stage=1, patience=6, resume_every_s=0,
               lr=0.01)
    whole = run(cfg, tmp_path / "whole").metrics

    undo = stop_training_at(monkeypatch, 3)
    with pytest.raises(Preempted):
        run(cfg, tmp_path / "cut", resume=True)
    assert (tmp_path / "cut" / "resume.pt").is_file() and RunDir(tmp_path / "cut").status()["status"] == "failed"
    undo()

    resumed = run(cfg, tmp_path / "cut", resume=True).metrics
    assert resumed["resumed_from_epoch"] == 3 and whole["resumed_from_epoch"] is None
    assert resumed["test"] == whole["test"] and resumed["best_epoch"] == whole["best_epoch"]
    for name in ("history.csv", "layers.csv"):
        drop = ["seconds", "train_seconds", "val_seconds"]
        a, b = (pd.read_csv(tmp_path / d / name).drop(columns=drop, errors="ignore") for d in ("whole", "cut"))
        pd.testing.assert_frame_equal(a, b)
    assert not (tmp_path / "cut" / "resume.pt").exists()  # a finished run keeps no resume state


def test_resume_state_of_another_config_or_a_torn_file_is_not_used(tiny, tmp_path, monkeypatch):
    cfg = tiny(max_epochs=3, resume_every_s=0)
    undo = stop_training_at(monkeypatch, 2)
    with pytest.raises(Preempted):
        run(cfg, tmp_path, resume=True)
    undo()
    other = run(tiny(max_epochs=3, resume_every_s=0, lr=0.02), tmp_path, resume=True).metrics
    assert other["resumed_from_epoch"] is None and other["epochs_run"] == 3
    assert (tmp_path / "resume-set-aside.pt").is_file()  # the other config's saved epochs are kept aside
    torn = tmp_path / "torn"
    torn.mkdir()
    (torn / "resume.pt").write_bytes(b"torn")  # a half-written or foreign file: start afresh, say so
    assert run(cfg, torn, resume=True).metrics["resumed_from_epoch"] is None
    assert (torn / "resume-set-aside.pt").read_bytes() == b"torn"


def test_resume_state_is_written_when_due(tiny, tmp_path, monkeypatch):
    from studylib.training.runner import resume_due
    assert not resume_due(10.0, 0.0, -1, True)  # -1: never
    assert resume_due(1.0, 0.01, 300, False)  # a save that costs 1% of the epoch: every epoch
    assert not resume_due(1.0, 0.2, 300, False)  # one that costs 20%: not yet ...
    assert resume_due(300.0, 0.2, 300, False)  # ... until resume_every_s passed
    assert resume_due(1.0, 0.2, 300, True)  # the last epoch is always saved: the test pass may be interrupted
    undo = stop_training_at(monkeypatch, 2)
    for every, kept in ((-1, False), (3600, True)):  # tinycnn's saves are cheap: saved every epoch
        with pytest.raises(Preempted):
            run(tiny(max_epochs=3, resume_every_s=every), tmp_path / str(every), resume=True)
        assert (tmp_path / str(every) / "resume.pt").exists() == kept
    undo()


def test_a_run_stopped_after_its_last_epoch_resumes_straight_to_the_test(tiny, tmp_path, monkeypatch):
    cfg = tiny(max_epochs=2)  # the default resume_every_s: the last epoch is saved whatever it is
    evaluate = runner_module.evaluate
    monkeypatch.setattr(runner_module, "evaluate", lambda *a, **k: (_ for _ in ()).throw(Preempted()))
    with pytest.raises(Preempted):
        run(cfg, tmp_path, resume=True)
    monkeypatch.setattr(runner_module, "evaluate", evaluate)
    metrics = run(cfg, tmp_path, resume=True).metrics
    assert metrics["resumed_from_epoch"] == 2 and metrics["epochs_run"] == 2
    assert len(pd.read_csv(tmp_path / "history.csv")) == 2


