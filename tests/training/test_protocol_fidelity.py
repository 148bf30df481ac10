"""The study protocol as the engine actually runs it: each test pins down one behaviour that a
plausible edit of the library could silently break (fresh LP-FT optimizer, frozen BatchNorm
statistics, no weight decay under the SP penalties, patience counted only in the last stage,
probe on training batches only, selection on validation, Auto-RGN dropout and maximum, the
gradual-unfreezing length check). All on tinycnn at 16 px."""
import copy
import json

import pandas as pd
import pytest
import torch
from conftest import tiny_config
from torch import nn

from studylib.core.config import ConfigError
from studylib.models.backbones import create_backbone
from studylib.training.engine import Device
from studylib.training.runner import check_config, make_trainer, run

BN_STATS = ("running_mean", "running_var")


def trainer_for(cfg, data, edit=None):
    """A Trainer as run() builds it; `edit(model)` may change the model before the trainer exists."""
    torch.manual_seed(cfg.seed)
    backbone = create_backbone(cfg.backbone, data.num_classes)
    if edit is not None:
        edit(backbone.model)
    return make_trainer(cfg, backbone, data, Device.resolve(cfg, backbone))


def train_one_epoch(trainer, epoch):
    """What fit() does for one epoch, short of validation: plan, apply, train."""
    plan = trainer.strategy.plan(epoch, trainer.probe)
    trainer.apply(plan)
    forward, train_data, _ = trainer.inputs(plan)
    trainer.train_epoch(epoch, plan, forward, train_data)
    return plan


def bn_statistics(trainer):
    return [{key: getattr(m, key).clone() for key in BN_STATS}
            for block in trainer.backbone.block_names for m in trainer.backbone.norm_modules(block)]


# 1. LP-FT starts its fine-tuning stage with a fresh optimizer -------------------------------

def test_lp_ft_fine_tuning_stage_starts_a_fresh_optimizer_then_keeps_its_state(tiny_data):
    cfg = tiny_config(strategy="lp_ft", lp_epochs=1, max_epochs=3, lr=0.01)
    trainer = trainer_for(cfg, tiny_data)
    params = dict(trainer.model.named_parameters())
    head = [params[n] for n in trainer.backbone.head_params]

    lp = train_one_epoch(trainer, 0)
    assert lp.stage == "lp"
    assert all(p in trainer.optimizer.state and trainer.optimizer.state[p] for p in head)  # the head has Adam state

    ft_plan = trainer.strategy.plan(1, trainer.probe)
    assert ft_plan.stage == "ft"
    trainer.apply(ft_plan)
    assert len(trainer.optimizer.state) == 0  # no parameter, head included, carries the LP stage's moments
    assert not any(p in trainer.optimizer.state for p in params.values())

    forward, train_data, _ = trainer.inputs(ft_plan)
    trainer.train_epoch(1, ft_plan, forward, train_data)
    first_ft_state = {p: copy.deepcopy(s) for p, s in trainer.optimizer.state.items()}
    steps = len(trainer.train_data)
    assert first_ft_state and all(int(s["step"]) == steps for s in first_ft_state.values())

    later = trainer.strategy.plan(2, trainer.probe)  # a later FT-stage epoch: the state is kept
    assert later.stage == "ft"
    trainer.apply(later)
    kept = trainer.optimizer.state
    assert set(kept) == set(first_ft_state)
    for p, s in first_ft_state.items():
        assert int(kept[p]["step"]) == steps
        assert torch.equal(kept[p]["exp_avg"], s["exp_avg"]) and torch.equal(kept[p]["exp_avg_sq"], s["exp_avg_sq"])


# 2. LP-FT freezes BatchNorm statistics by default -------------------------------------------

def test_lp_ft_resolves_its_batchnorm_policy_to_frozen_statistics():
    assert check_config(tiny_config(strategy="lp_ft", lp_epochs=1)).bn_policy == "freeze_stats"
    assert check_config(tiny_config(strategy="ft")).bn_policy == "train"


def test_lp_ft_never_moves_batchnorm_statistics_while_ft_does(tiny_data):
    # compared after every epoch, as trained: fit() ends by restoring the best epoch's state (buffers
    # included), which could be an LP epoch whose statistics never moved anyway
    lpft = trainer_for(tiny_config(strategy="lp_ft", lp_epochs=1, max_epochs=3, lr=0.01), tiny_data)
    assert lpft.strategy.bn_policy == "freeze_stats"
    before = bn_statistics(lpft)
    assert before
    seen = []
    lpft.on_epoch_end = lambda result: seen.append(bn_statistics(lpft))
    result = lpft.fit()
    assert [row["stage"] for row in result.history] == ["lp", "ft", "ft"]  # both stages ran
    assert len(seen) == 3
    for after in seen:
        for b, a in zip(before, after):
            for key in BN_STATS:
                assert torch.equal(b[key], a[key]), key

    ft = trainer_for(tiny_config(strategy="ft", max_epochs=1, lr=0.01), tiny_data)  # FT's default (train) moves them
    before = bn_statistics(ft)
    seen = []
    ft.on_epoch_end = lambda result: seen.append(bn_statistics(ft))
    ft.fit()
    assert all(not torch.equal(b["running_mean"], a["running_mean"]) for b, a in zip(before, seen[0]))


# 3. The SP strategies get no plain weight decay ---------------------------------------------

@pytest.mark.parametrize("strategy, expected", [("l2_sp", 0.0), ("l1_sp", 0.0), ("ft", 0.1)])
def test_sp_strategies_apply_no_plain_weight_decay(tiny_data, strategy, expected):
    trainer = trainer_for(tiny_config(strategy=strategy, weight_decay=0.1), tiny_data)
    trainer.apply(trainer.strategy.plan(0, trainer.probe))
    groups = trainer.optimizer.param_groups
    assert groups and all(g["weight_decay"] == expected for g in groups)
    assert sum(len(g["params"]) for g in groups) == len(list(trainer.model.parameters()))


# 4. Early stopping counts patience only in the final stage ----------------------------------

@pytest.mark.parametrize("patience", [1, 2])
def test_gradual_unfreezing_reaches_its_last_stage_before_early_stopping(tiny_data, patience):
    # lr so small that no weight moves and frozen statistics: validation never improves after epoch 0
    cfg = tiny_config(strategy="gu_last_first", gu_epochs_per_stage=1, patience=patience, lr=1e-12,
                      max_epochs=20, bn_policy="freeze_stats")
    trainer = trainer_for(cfg, tiny_data)
    result = trainer.fit()
    history = result.history
    assert [row["best"] for row in history] == [True] + [False] * (len(history) - 1)  # the premise
    stages = len(trainer.backbone.block_names)
    assert stages == 5
    # 4 non-final stages of one epoch each, then `patience` epochs without improvement in the last stage
    assert len(history) == stages - 1 + patience
    assert result.stopped_early
    final = trainer.strategy.plan(stages - 1, trainer.probe)
    assert final.final_stage
    assert history[-1]["stage"] == "+".join(trainer.backbone.block_names)  # the last row trains every block
    assert history[-1]["trainable_params"] == sum(p.numel() for p in trainer.model.parameters())
    assert all(row["stage"] != history[-1]["stage"] for row in history[:stages - 1])


# 5. The Auto-RGN probe draws training batches only ------------------------------------------

def test_auto_rgn_probe_draws_training_batches_only(tiny_data, monkeypatch):
    cfg = tiny_config(strategy="auto_rgn", rgn_probe_batches=2)
    trainer = trainer_for(cfg, tiny_data)
    drawn = []

    def recording(split, data):
        real = data.batches

        def batches(*args, **kwargs):
            drawn.append(split)
            return real(*args, **kwargs)
        monkeypatch.setattr(data, "batches", batches)

    recording("train", trainer.train_data)
    recording("val", trainer.val_data)
    order = trainer.generator.get_state().clone()
    plan = trainer.strategy.plan(0, trainer.probe)
    assert drawn == ["train"]
    assert plan.ratios and max(plan.ratios.values()) == pytest.approx(1.0)
    assert torch.equal(trainer.generator.get_state(), order)  # the training batch order is untouched


# 6. Selection on validation, predictions on test --------------------------------------------

def test_run_selects_on_validation_and_predicts_the_test_split(tmp_path):
    cfg = tiny_config(max_epochs=4, lr=0.02, val_fraction=0.1, test_fraction=0.3)
    run(cfg, tmp_path)
    splits = pd.read_csv(tmp_path / "splits.csv")
    history = pd.read_csv(tmp_path / "history.csv")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    n_val, n_test = (splits.split == "val").sum(), (splits.split == "test").sum()
    assert n_val != n_test  # so the two can be told apart
    assert (history.val_images == n_val).all()
    best = int(history.val_balanced_accuracy.to_numpy().argmax())  # the first maximum
    assert metrics["best_epoch"] == int(history.epoch[best])
    assert metrics["val"]["balanced_accuracy"] == pytest.approx(history.val_balanced_accuracy[best])
    assert sorted(predictions.id.astype(str)) == sorted(splits.id[splits.split == "test"].astype(str))
    assert len(predictions) == n_test


# 7. Auto-RGN runs dropout in eval mode ------------------------------------------------------

def with_dropout(model):
    model.stage3.append(nn.Dropout(0.5))  # tinycnn has none; this adds no parameter


@pytest.mark.parametrize("strategy, mode", [("auto_rgn", False), ("ft", True)])
def test_auto_rgn_keeps_dropout_in_eval_mode(tiny_data, strategy, mode):
    cfg = tiny_config(strategy=strategy, rgn_probe_batches=2, max_steps_per_epoch=2)
    assert check_config(cfg).dropout == ("eval" if strategy == "auto_rgn" else "train")
    trainer = trainer_for(cfg, tiny_data, with_dropout)
    dropout = trainer.model.stage3[-1]
    assert isinstance(dropout, nn.Dropout)
    seen = []
    dropout.register_forward_hook(lambda module, inputs, output: seen.append(module.training))

    plan = trainer.strategy.plan(0, trainer.probe)
    if strategy == "auto_rgn":
        assert seen == [False, False]  # during the probe's two batches
    seen.clear()
    trainer.apply(plan)
    assert dropout.training is mode
    forward, train_data, _ = trainer.inputs(plan)
    trainer.train_epoch(0, plan, forward, train_data)
    assert seen == [mode, mode]  # while training


# 8. Auto-RGN rgn_max_over --------------------------------------------------------------------

def test_auto_rgn_max_over_backbone_trains_the_head_at_lr(tiny_data):
    lr = 0.01
    trainer = trainer_for(tiny_config(strategy="auto_rgn", lr=lr, rgn_max_over="backbone"), tiny_data)
    plan = trainer.strategy.plan(0, trainer.probe)
    head = set(trainer.backbone.head_params)
    assert head and all(plan.lrs[n] == lr for n in head)
    assert plan.max_tensor and plan.max_tensor not in head
    assert plan.lrs[plan.max_tensor] == pytest.approx(lr) and plan.ratios[plan.max_tensor] == pytest.approx(1.0)
    backbone_lrs = [v for n, v in plan.lrs.items() if n not in head]
    assert max(backbone_lrs) == pytest.approx(lr) and min(backbone_lrs) < lr


def test_auto_rgn_max_over_all_gives_lr_to_the_top_tensor_only(tiny_data):
    lr = 0.01
    trainer = trainer_for(tiny_config(strategy="auto_rgn", lr=lr, rgn_max_over="all"), tiny_data)
    plan = trainer.strategy.plan(0, trainer.probe)
    assert max(plan.lrs.values()) == pytest.approx(lr)
    assert plan.ratios[plan.max_tensor] == pytest.approx(1.0)
    assert plan.lrs[plan.max_tensor] == pytest.approx(lr)
    assert max(plan.ratios, key=plan.ratios.get) == plan.max_tensor
    assert sum(r == pytest.approx(1.0) for r in plan.ratios.values()) == 1


def test_auto_rgn_logs_the_tensor_that_sets_the_maximum(tmp_path):
    run(tiny_config(strategy="auto_rgn", lr=0.01, max_epochs=2, log_tensors=True), tmp_path)
    tensors = pd.read_csv(tmp_path / "tensors.csv")
    history = pd.read_csv(tmp_path / "history.csv")
    per_epoch = tensors.groupby("epoch").sets_max.sum()
    assert per_epoch.tolist() == [1, 1]
    assert history.max_tensor.notna().all() and (history.max_tensor.astype(str).str.len() > 0).all()
    top = tensors[tensors.sets_max].set_index("epoch").tensor
    assert history.set_index("epoch").max_tensor.to_dict() == top.to_dict()
    assert tensors[tensors.sets_max].score.tolist() == pytest.approx([1.0, 1.0])


# 9. Gradual unfreezing must fit max_epochs ---------------------------------------------------

@pytest.mark.parametrize("strategy", ["gu_last_first", "gu_first_last"])
def test_gradual_unfreezing_that_cannot_reach_its_last_stage_is_refused(tmp_path, strategy):
    refused = tiny_config(strategy=strategy, gu_epochs_per_stage=3, max_epochs=12)
    with pytest.raises(ConfigError) as err:
        check_config(refused)
    message = str(err.value)
    assert "5 stages" in message and "13" in message and "max_epochs=12" in message
    with pytest.raises(ConfigError):
        run(refused, tmp_path / "refused")
    assert not (tmp_path / "refused" / "history.csv").exists()
    assert check_config(tiny_config(strategy=strategy, gu_epochs_per_stage=3, max_epochs=13)).max_epochs == 13
