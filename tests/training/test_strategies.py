"""Each strategy's defining behaviour, on tinycnn and tiny synthetic data."""
import copy

import pandas as pd
import pytest
import torch
from conftest import trainer_for

from studylib.models.backbones import create_backbone
from studylib.training.runner import run
from studylib.training.strategies import (
    STRATEGIES,
    STUDY_STRATEGIES,
    Strategy,
    create_strategy,
    list_strategies,
)

BN_STATS = ("running_mean", "running_var")




def backbone_state(trainer):
    head = set(trainer.backbone.head_params)
    return {k: v.clone() for k, v in trainer.model.state_dict().items() if k not in head}


def test_study_strategy_ids_are_registered():
    assert set(STUDY_STRATEGIES) <= set(list_strategies())
    assert "auto_snr" in list_strategies()


def test_lp_changes_no_backbone_weight_and_no_batchnorm_statistic(tiny, tiny_data):
    trainer = trainer_for(tiny(strategy="lp", bn_policy="train"), tiny_data)  # even with bn_policy=train
    before, head_before = backbone_state(trainer), trainer.model.fc.weight.detach().clone()
    trainer.fit()
    after = backbone_state(trainer)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(head_before, trainer.model.fc.weight)


@pytest.mark.parametrize("strategy, expected", [
    ("gu_last_first", [["head"], ["stage3", "head"], ["stage2", "stage3", "head"],
                       ["stage1", "stage2", "stage3", "head"], ["stem", "stage1", "stage2", "stage3", "head"]]),
    ("gu_first_last", [["head"], ["stem", "head"], ["stem", "stage1", "head"], ["stem", "stage1", "stage2", "head"],
                       ["stem", "stage1", "stage2", "stage3", "head"]]),
])
def test_gradual_unfreezing_order(tiny, tiny_data, strategy, expected):
    cfg = tiny(strategy=strategy, gu_epochs_per_stage=2, max_epochs=12)
    trainer = trainer_for(cfg, tiny_data)
    block_of = trainer.backbone.block_of()
    seen = []
    for epoch in range(0, 12, 2):
        plan = trainer.strategy.plan(epoch, trainer.probe)
        blocks = [b for b in trainer.backbone.block_names if any(block_of[n] == b for n in plan.trainable)]
        seen.append(blocks)
        assert plan.final_stage == (blocks == trainer.backbone.block_names)
    assert seen[:5] == expected and seen[5] == expected[-1]


def perturb(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)


@pytest.mark.parametrize("strategy", ["l1_sp", "l2_sp"])
def test_sp_penalties_equal_their_formulas(tiny, strategy):
    cfg = tiny(strategy=strategy, l1sp_alpha=0.3, l2sp_alpha=0.2, sp_beta=0.05)
    backbone = create_backbone("tinycnn", 4)
    w0 = {n: p.detach().clone() for n, p in backbone.model.named_parameters()}
    sp = create_strategy(cfg, backbone)
    perturb(backbone.model)
    head = set(backbone.head_params)
    expected = 0.0
    for name, p in backbone.model.named_parameters():
        if name in head:
            expected += 0.05 / 2 * (p ** 2).sum()
        elif strategy == "l1_sp":
            expected += 0.3 * (p - w0[name]).abs().sum()
        else:
            expected += 0.2 / 2 * ((p - w0[name]) ** 2).sum()
    assert float(sp.penalty().detach()) == pytest.approx(float(expected.detach()), rel=1e-5)


FUSED = [name for name, cls in STRATEGIES.items() if cls.backward is not Strategy.backward]


def test_every_fused_backward_equals_autograd_of_loss_plus_penalty(tiny):
    """A strategy's own `backward` is an optimisation: the same gradients as the default (autograd)."""
    assert FUSED  # L1-SP and L2-SP at least
    for name in FUSED:
        cfg = tiny(strategy=name, l1sp_alpha=0.3, l2sp_alpha=0.2, sp_beta=0.05)
        backbone = create_backbone("tinycnn", 4)
        perturb(backbone.model)
        strategy = create_strategy(cfg, backbone)
        x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))

        def loss(backbone=backbone, x=x):  # any differentiable loss
            return backbone.model(x).logsumexp(1).mean()

        params = list(backbone.model.parameters())
        Strategy.backward(strategy, loss())
        expected = [p.grad.clone() for p in params]
        backbone.model.zero_grad(set_to_none=True)
        strategy.backward(loss())
        for p, g in zip(params, expected):
            assert torch.allclose(p.grad, g, atol=1e-6), name


@pytest.mark.parametrize("strategy", ["l1_sp", "l2_sp"])
def test_direct_penalty_gradient_equals_autograd_of_the_formula(tiny, strategy):
    cfg = tiny(strategy=strategy, l1sp_alpha=0.3, l2sp_alpha=0.2, sp_beta=0.05)
    backbone = create_backbone("tinycnn", 4)
    sp = create_strategy(cfg, backbone)
    perturb(backbone.model)
    params = list(backbone.model.parameters())
    sp.penalty().backward()
    expected = [p.grad.clone() for p in params]
    backbone.model.zero_grad(set_to_none=False)  # zeros, as after a loss backward that did not reach them
    value = sp.add_penalty_grad()
    assert float(value) == pytest.approx(float(sp.penalty().detach()), rel=1e-5)
    for p, g in zip(params, expected):
        assert torch.allclose(p.grad, g, atol=1e-6)


def test_sp_penalty_is_zero_at_the_start_but_for_the_head(tiny):
    backbone = create_backbone("tinycnn", 4)
    sp = create_strategy(tiny(strategy="l2_sp", sp_beta=0.0), backbone)
    assert float(sp.penalty().detach()) == 0.0


def test_auto_rgn_learning_rates_follow_the_formula(tiny):
    """lr_i = base_lr * RGN_i / max RGN, RGN_i = mean over probe batches of ||g_i|| / ||w_i||."""
    cfg = tiny(strategy="auto_rgn", lr=0.01, rgn_probe_batches=2)
    backbone = create_backbone("tinycnn", 4)
    strategy = create_strategy(cfg, backbone)
    params = dict(backbone.model.named_parameters())
    gen = torch.Generator().manual_seed(3)
    fake = [{n: torch.randn(params[n].shape, generator=gen) * (i + 1) for n in params} for i in range(2)]

    def probe(names, n_batches, on_grads):
        assert n_batches == 2
        for grads in fake:
            on_grads({n: grads[n] for n in names})

    plan = strategy.plan(0, probe)
    rgn = {n: sum(float(g[n].norm() / params[n].detach().norm()) for g in fake) / 2 for n in plan.trainable}
    top = max(rgn.values())
    for name in plan.trainable:
        assert plan.lrs[name] == pytest.approx(0.01 * rgn[name] / top)
    assert max(plan.lrs.values()) == pytest.approx(0.01)
    assert plan.reset_optimizer
    assert not any(n in strategy.norm_params for n in plan.trainable)  # BatchNorm frozen by default


def test_auto_rgn_rates_are_recomputed_each_epoch_with_a_fresh_optimizer(tiny, tiny_data):
    trainer = trainer_for(tiny(strategy="auto_rgn", max_epochs=3), tiny_data)
    optimizers, rates = [], []
    original = trainer.apply

    def spy(plan):
        original(plan)
        optimizers.append(trainer.optimizer)
        rates.append(dict(plan.lrs))
        assert len(trainer.optimizer.state) == 0  # Adam state reset every epoch

    trainer.apply = spy
    trainer.fit()
    assert len({id(o) for o in optimizers}) == 3
    assert rates[0] != rates[1] != rates[2]


def test_lp_ft_second_stage_starts_from_the_probed_head(tiny, tiny_data):
    cfg = tiny(strategy="lp_ft", lp_epochs=2, max_epochs=4, lr=0.01, lpft_lr_factor=0.1)
    trainer = trainer_for(cfg, tiny_data)
    initial_head = trainer.model.fc.weight.detach().clone()
    before = backbone_state(trainer)
    snapshots = []
    original = trainer.apply

    def spy(plan):
        snapshots.append((plan.stage, trainer.model.fc.weight.detach().clone(), backbone_state(trainer)))
        original(plan)
        if plan.stage == "ft":
            assert [g["initial_lr"] for g in trainer.optimizer.param_groups] == [pytest.approx(0.001)]

    trainer.apply = spy
    trainer.fit()
    stages = [s for s, _, _ in snapshots]
    assert stages == ["lp", "lp", "ft", "ft"]
    probed_head, backbone_at_stage2 = snapshots[2][1], snapshots[2][2]
    assert not torch.equal(probed_head, initial_head)  # stage 1 trained the head
    assert all(torch.equal(before[k], backbone_at_stage2[k]) for k in before)  # and nothing else


@pytest.mark.parametrize("strategy", list_strategies())
@pytest.mark.parametrize("policy", ["freeze", "freeze_stats"])
def test_every_strategy_honours_the_batchnorm_policy(tiny, tiny_data, strategy, policy):
    cfg = tiny(strategy=strategy, bn_policy=policy, max_epochs=2, lp_epochs=1, gu_epochs_per_stage=1)
    trainer = trainer_for(cfg, tiny_data)
    norms = [m for b in trainer.backbone.block_names for m in trainer.backbone.norm_modules(b)]
    before = [copy.deepcopy(m.state_dict()) for m in norms]
    trainer.fit()
    for module, state in zip(norms, before):
        for key in BN_STATS:
            assert torch.equal(module.state_dict()[key], state[key]), (strategy, key)
        if policy == "freeze":
            assert torch.equal(module.weight, state["weight"]) and torch.equal(module.bias, state["bias"])


def test_bn_policy_train_does_update_statistics(tiny, tiny_data):
    trainer = trainer_for(tiny(strategy="ft", bn_policy="train", max_epochs=1), tiny_data)
    before = trainer.model.stem[1].running_mean.clone()
    trainer.fit()
    assert not torch.equal(before, trainer.model.stem[1].running_mean)


def test_surgical_trains_one_block_and_the_head(tiny, tiny_data):
    trainer = trainer_for(tiny(strategy="surgical", surgical_block="stage2"), tiny_data)
    plan = trainer.strategy.plan(0, trainer.probe)
    block_of = trainer.backbone.block_of()
    assert {block_of[n] for n in plan.trainable} == {"stage2", "head"}


def test_discriminative_lr_decays_from_the_head_down(tiny, tiny_data):
    trainer = trainer_for(tiny(strategy="discriminative_lr", lr=0.1, dlr_decay=0.5), tiny_data)
    plan = trainer.strategy.plan(0, trainer.probe)
    block_of = trainer.backbone.block_of()
    by_block = {block_of[n]: lr for n, lr in plan.lrs.items()}
    assert by_block == pytest.approx({"head": 0.1, "stage3": 0.05, "stage2": 0.025, "stage1": 0.0125, "stem": 0.00625})


# --- the strategies' signatures in layers.csv, through the public run() ---------------------

def layers_of(tiny, tmp_path, strategy, **changes):
    cfg = tiny(strategy=strategy, **changes)
    run(cfg, tmp_path / strategy, overwrite=True)
    return pd.read_csv(tmp_path / strategy / "layers.csv")


def test_layers_csv_signatures(tiny, tmp_path):
    lp = layers_of(tiny, tmp_path, "lp")
    assert set(lp[lp.trainable].block) == {"head"}
    assert (lp[lp.block != "head"].dist_init == 0).all()

    glf = layers_of(tiny, tmp_path, "gu_last_first", gu_epochs_per_stage=1, max_epochs=5)
    counts = glf.groupby("epoch").trainable.sum().tolist()
    assert counts == [1, 2, 3, 4, 5]

    rgn = layers_of(tiny, tmp_path, "auto_rgn", lr=0.01)
    first = rgn[rgn.epoch == 0]
    assert first.lr_max.max() == pytest.approx(0.01)
    assert first[first.trainable].lr.nunique() > 1

    ft = layers_of(tiny, tmp_path, "ft", lr=0.01)
    l2 = layers_of(tiny, tmp_path, "l2_sp", lr=0.01, l2sp_alpha=1.0)
    last = lambda frame: frame[(frame.epoch == frame.epoch.max()) & (frame.block != "head")].dist_init.sum()  # noqa: E731
    assert last(l2) < last(ft)


@pytest.mark.parametrize("strategy", ["lp", "lp_ft"])
def test_cached_features_give_the_same_training_as_the_full_forward(tiny, tmp_path, strategy):
    changes = dict(strategy=strategy, max_epochs=3, lp_epochs=2, lr=0.05)
    fast = run(tiny(**changes, feature_cache=True), tmp_path / "fast").metrics
    slow = run(tiny(**changes, feature_cache=False), tmp_path / "slow").metrics
    for split in ("val", "test"):
        for key in ("balanced_accuracy", "loss"):
            assert fast[split][key] == pytest.approx(slow[split][key], abs=1e-4)
    history = pd.read_csv(tmp_path / "fast" / "history.csv")
    expected = [True, True, True] if strategy == "lp" else [True, True, False]  # LP-FT's stage 2 moves the backbone
    assert history.cached_features.tolist() == expected


def test_head_only_epochs_run_the_frozen_backbone_in_eval_mode_dropout_included(tiny, tiny_data):
    """LP's backbone is a fixed feature extractor: VGG-19's frozen classifier dropout is off, so
    cached features and the full forward train alike; FT keeps that dropout on."""
    from studylib.models.backbones import create_backbone
    from studylib.training.engine import Device
    from studylib.training.runner import make_trainer

    backbone, modes = create_backbone("vgg19", tiny_data.num_classes), {}  # one VGG-19: neither plan changes it
    for strategy in ("lp", "ft"):
        cfg = tiny(strategy=strategy, backbone="vgg19")
        trainer = make_trainer(cfg, backbone, tiny_data, Device.resolve(cfg, backbone))
        trainer.apply(trainer.strategy.plan(0, trainer.probe))
        modes[strategy] = {name: m.training for name, m in trainer.model.named_modules()
                           if isinstance(m, torch.nn.Dropout)}
    assert modes["lp"] == {"classifier.2": False, "classifier.5": False}
    assert modes["ft"] == {"classifier.2": True, "classifier.5": True}


def test_no_cached_features_with_augmentation(tiny, tmp_path):
    run(tiny(strategy="lp", augment=True, max_epochs=1), tmp_path)
    assert not pd.read_csv(tmp_path / "history.csv").cached_features.any()


def test_tensor_log_matches_the_auto_rgn_rates(tiny, tmp_path):
    run(tiny(strategy="auto_rgn", lr=0.01, max_epochs=2, log_tensors=True), tmp_path)
    tensors = pd.read_csv(tmp_path / "tensors.csv")
    layers = pd.read_csv(tmp_path / "layers.csv")
    first = tensors[(tensors.epoch == 0) & tensors.trainable]
    assert first.lr.max() == pytest.approx(0.01)  # lr_i = lr x RGN_i / max RGN: the top tensor gets the base rate
    assert (first.lr / 0.01).round(6).equals(first.score.round(6))
    by_block = first.groupby("block").lr.mean()
    blocks = layers[(layers.epoch == 0) & layers.trainable].set_index("block").lr
    assert by_block.reindex(blocks.index).to_numpy() == pytest.approx(blocks.to_numpy())
    from studylib.views import runfigures as plots
    assert plots.tensor_heatmap(tmp_path).axes[0].get_title().endswith("lr per tensor (log10, blank = frozen)")
