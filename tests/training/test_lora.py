"""LoRA on convolutions and linear layers (through peft) against its definition: the added parameters are
r (in k_h k_w + out) per chosen layer, only they and the head train, and merging them into the weights
changes no output."""
import pytest
import torch
from conftest import trainer_for
from torch import nn

from studylib import RunConfig
from studylib.core.config import ConfigError
from studylib.models.backbones import create_backbone
from studylib.training.runner import check_config
from studylib.training.strategies import LoRA

pytestmark = pytest.mark.slow  # importing peft (and with it transformers) takes seconds


def expected_count(model: nn.Module, prefixes: tuple[str, ...], head: str, rank: int) -> int:
    """r x (inputs of one output, k_h k_w included) for A, plus outputs x r for B, per layer."""
    total = 0
    for name, module in model.named_modules():
        if name == head or not name.startswith(prefixes):
            continue
        if isinstance(module, nn.Conv2d):
            total += rank * (module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1])
            total += module.out_channels * rank
        elif isinstance(module, nn.Linear):
            total += rank * module.in_features + module.out_features * rank
    return total


@pytest.mark.parametrize("name, blocks, prefixes", [("tinycnn", "stage2,stage3", ("stage2.", "stage3.")),
                                                     ("resnet50", "layer4", ("layer4.",))])
def test_lora_adds_the_formulas_parameters_on_the_chosen_blocks_and_trains_only_them_and_the_head(
        name, blocks, prefixes):
    backbone = create_backbone(name, 3)
    expected = expected_count(backbone.model, prefixes, backbone.spec.head, rank=3)
    strategy = LoRA(RunConfig(strategy="lora", backbone=name, lora_blocks=blocks, lora_rank=3), backbone)
    trainable = strategy.plan(0, probe=None).trainable
    params = dict(backbone.model.named_parameters())
    added = [n for n in trainable if n not in backbone.head_params]
    assert sum(params[n].numel() for n in added) == expected
    assert all(n.startswith(prefixes) and (".lora_A." in n or ".lora_B." in n) for n in added)


def test_unknown_lora_blocks_are_named():
    with pytest.raises(ConfigError, match=r"lora_blocks names \['stage9'\]"):
        check_config(RunConfig(strategy="lora", backbone="tinycnn", lora_blocks="stage1,stage9"))


def test_merged_lora_gives_the_unmerged_outputs_on_the_plain_backbone(tiny, tiny_data):
    trainer = trainer_for(tiny(strategy="lora", max_epochs=2, lr=0.05, lora_rank=2, lora_dropout=0.1), tiny_data)
    original = {n for n, _ in create_backbone("tinycnn", tiny_data.num_classes).model.named_parameters()}
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.fit()
    moved = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
    assert moved <= set(trainer.strategy.plan(0, probe=None).trainable) and any(".lora_B." in n for n in moved)
    x = torch.randn(5, 3, tiny_data.images.shape[-1], tiny_data.images.shape[-1])
    unmerged = trainer.model.eval()(x).detach()
    renamed = trainer.strategy.merge()
    assert {n for n, _ in trainer.model.named_parameters()} == original  # the plain backbone again
    assert set(renamed.values()) <= original and all(".base_layer." in n for n in renamed)
    assert torch.allclose(trainer.model(x), unmerged, atol=1e-5)
    assert not any("lora" in n for names in trainer.backbone.blocks.values() for n in names)


def test_lora_starts_as_the_plain_backbone_with_the_update_scaled_alpha_over_r():
    import copy

    torch.manual_seed(0)
    backbone = create_backbone("tinycnn", 3)
    plain = copy.deepcopy(backbone.model).eval()
    LoRA(RunConfig(strategy="lora", backbone="tinycnn", lora_rank=4, lora_alpha=6.0), backbone)
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(backbone.model.eval()(x), plain(x))  # B starts at 0
    layers = [m for m in backbone.model.modules() if hasattr(m, "scaling") and isinstance(m.scaling, dict)]
    assert layers and all(m.scaling["default"] == pytest.approx(6.0 / 4) for m in layers)
