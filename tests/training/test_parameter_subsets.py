"""BitFit, norm-only tuning and SSF against their definitions, on every study backbone: the trainable set is
exactly the bias terms (or the normalisation scales and shifts) plus the new head, and nothing else moves."""
import copy

import pytest
import torch
from conftest import trainer_for
from torch import nn

from studylib import RunConfig
from studylib.core.config import ConfigError
from studylib.models.backbones import create_backbone
from studylib.training.runner import check_config
from studylib.training.strategies import SSF, BitFit, NormTune

NORMS = (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)


@pytest.fixture(scope="module", params=["tinycnn", "resnet50", "densenet121", "vgg19"])
def backbone(request):
    return create_backbone(request.param, 3)


def parameters_where(model: nn.Module, keep) -> set[str]:
    """Parameter names of modules for which keep(module, parameter name within it) holds."""
    return {f"{prefix}.{name}" if prefix else name for prefix, module in model.named_modules()
            for name, _ in module.named_parameters(recurse=False) if keep(module, name)}


def trainable(cls, backbone) -> set[str]:
    cfg = RunConfig(strategy=cls.name, backbone=backbone.spec.name)
    return set(cls(cfg, backbone).plan(0, probe=None).trainable)


def test_bitfit_trains_every_bias_and_the_head_only(backbone):
    biases = parameters_where(backbone.model, lambda module, name: name == "bias")
    head = set(backbone.head_params)
    assert trainable(BitFit, backbone) == biases | head
    convolution_biases = parameters_where(backbone.model, lambda m, n: n == "bias" and isinstance(m, nn.Conv2d))
    if backbone.spec.name in ("resnet50", "densenet121"):  # no convolution bias: BatchNorm's shift it is
        assert not convolution_biases and biases - head <= parameters_where(backbone.model,
                                                                           lambda m, n: isinstance(m, NORMS))
    if backbone.spec.name == "vgg19":  # no BatchNorm: the convolution and classifier biases
        assert convolution_biases and not parameters_where(backbone.model, lambda m, n: isinstance(m, NORMS))


def test_norm_tune_trains_the_normalisation_layers_and_the_head_only(backbone):
    norms = parameters_where(backbone.model, lambda module, name: isinstance(module, NORMS))
    if not norms:  # VGG-19: only the head would train, which is linear probing
        with pytest.raises(ValueError, match="has no normalisation layers.*use strategy lp"):
            trainable(NormTune, backbone)
        return
    assert trainable(NormTune, backbone) == norms | set(backbone.head_params)


def test_norm_tune_refuses_the_policy_that_freezes_what_it_trains():
    with pytest.raises(ConfigError, match="norm_tune with bn_policy=freeze"):
        check_config(RunConfig(strategy="norm_tune", bn_policy="freeze"))


@pytest.mark.parametrize("strategy", ["bitfit", "norm_tune"])
def test_only_the_chosen_tensors_move_in_a_run(tiny, tiny_data, strategy):
    trainer = trainer_for(tiny(strategy=strategy, max_epochs=2, lr=0.01), tiny_data)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    allowed = trainable(type(trainer.strategy), trainer.backbone)
    trainer.fit()
    moved = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and moved <= allowed
    assert set(trainer.backbone.head_params) <= moved


@pytest.mark.parametrize("name", ["tinycnn", "resnet50", "densenet121"])
def test_ssf_adds_a_scale_and_shift_per_norm_channel_and_trains_only_them_and_the_head(name):
    backbone = create_backbone(name, 3)
    norms = [m for m in backbone.model.modules() if isinstance(m, NORMS)]
    strategy = SSF(RunConfig(strategy="ssf", backbone=name), backbone)
    added = parameters_where(backbone.model, lambda module, n: n in ("ssf_scale", "ssf_shift"))
    assert set(strategy.plan(0, probe=None).trainable) == added | set(backbone.head_params)
    assert sum(backbone.model.get_parameter(n).numel() for n in added) == 2 * sum(m.num_features for m in norms)
    assert {n for names in backbone.blocks.values() for n in names} >= added  # each in its norm layer's block


def test_ssf_is_refused_on_a_backbone_without_normalisation():
    with pytest.raises(ConfigError, match="ssf .* vgg19 has none"):
        check_config(RunConfig(strategy="ssf", backbone="vgg19"))


def test_ssf_folded_into_the_norm_layers_gives_the_unfolded_outputs(tiny, tiny_data):
    trainer = trainer_for(tiny(strategy="ssf", max_epochs=2, lr=0.05), tiny_data)
    original = {n for n, _ in create_backbone("tinycnn", tiny_data.num_classes).model.named_parameters()}
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.fit()
    moved = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
    assert moved <= set(trainer.strategy.plan(0, probe=None).trainable) and any("ssf_shift" in n for n in moved)
    model = trainer.model
    x = torch.randn(5, 3, tiny_data.images.shape[-1], tiny_data.images.shape[-1])
    unfolded_eval = model.eval()(x).detach()
    unfolded_train = copy.deepcopy(model).train()(x).detach()  # batch statistics: the fold holds there too
    trainer.strategy.merge()
    assert {n for n, _ in model.named_parameters()} == original  # the plain backbone again
    assert torch.allclose(model.eval()(x), unfolded_eval, atol=1e-5)
    assert torch.allclose(copy.deepcopy(model).train()(x), unfolded_train, atol=1e-5)
    assert not any("ssf" in n for names in trainer.backbone.blocks.values() for n in names)


def test_ssf_starts_as_the_plain_backbone_scale_1_shift_0():
    torch.manual_seed(0)
    backbone = create_backbone("tinycnn", 3)
    plain = copy.deepcopy(backbone.model).eval()
    SSF(RunConfig(strategy="ssf", backbone="tinycnn"), backbone)
    x = torch.randn(4, 3, 16, 16)
    assert torch.equal(backbone.model.eval()(x), plain(x))


@pytest.mark.parametrize("name, refused", [("resnet50", True), ("tinycnn", True), ("vgg19", False)])
def test_bitfit_refuses_a_frozen_policy_where_every_bias_is_a_batchnorm_shift(name, refused):
    cfg = RunConfig(strategy="bitfit", backbone=name, bn_policy="freeze")
    if refused:
        with pytest.raises(ConfigError, match="bitfit with bn_policy=freeze .* trains only the head"):
            check_config(cfg)
    else:
        check_config(cfg)  # VGG-19's convolution biases are not normalisation parameters: they still train
