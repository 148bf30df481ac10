"""timm backbones: block maps taken from the model itself, on random-init tiny models of each family."""
import pytest
import torch

from studylib.core.config import ConfigError, RunConfig
from studylib.models.backbones import (
    BACKBONES,
    NORM_TYPES,
    WeightsError,
    block_names,
    create_backbone,
    get_backbone_spec,
)
from studylib.models.timm_backbones import TESTED
from studylib.training.runner import check_config

timm = pytest.importorskip("timm")



@pytest.fixture(scope="module", params=[test_model for test_model, _ in TESTED.values()])  # what the docs list
def backbone(request):
    torch.manual_seed(0)
    return create_backbone(f"timm:{request.param}", num_classes=3)


def test_block_map_comes_from_timm_groups_and_covers_every_parameter_once(backbone):
    from timm.models import group_parameters

    model = backbone.model
    groups = list(group_parameters(model, model.group_matcher(coarse=True)).values())
    # the oracle: timm's own coarse groups, in order, are studylib's blocks
    assert [sorted(backbone.blocks[b]) for b in backbone.block_names] == [sorted(g) for g in groups]
    covered = [p for names in backbone.blocks.values() for p in names]
    assert sorted(covered) == sorted(n for n, _ in model.named_parameters())
    assert backbone.block_names[0] == "stem" and backbone.block_names[-1] == "head"
    assert set(backbone.head_params) <= set(backbone.blocks["head"])


def test_norm_layers_of_every_type_are_found(backbone):
    found = {id(m) for b in backbone.block_names for m in backbone.norm_modules(b)}
    assert found == {id(m) for m in backbone.model.modules() if isinstance(m, NORM_TYPES)}


def test_block_ends_are_modules_whose_output_ends_the_block(backbone):
    ends = backbone.block_ends()
    assert list(ends) == backbone.block_names[:-1]
    for module in ends.values():
        backbone.model.get_submodule(module)  # a module (a ViT's stem also lists cls_token, a bare tensor)


def test_new_head_and_minimum_size(backbone):
    spec = backbone.spec
    model = backbone.model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, max(spec.min_size, 32), max(spec.min_size, 32))).shape == (2, 3)


def test_vit_block_map_and_sizes():
    spec = get_backbone_spec("timm:test_vit")
    assert block_names("timm:test_vit") == ("stem", *(f"blocks.{i}" for i in range(6)), "head")
    assert spec.min_size == 16  # one patch; dynamic position embeddings take any multiple
    bb = create_backbone("timm:test_vit", 2)
    assert bb.blocks["stem"][:2] == ["cls_token", "pos_embed"] and "norm.weight" in bb.blocks["blocks.5"]


def test_unknown_timm_names_suggest_the_close_ones():
    assert "timm:convnex_tiny" not in BACKBONES
    with pytest.raises(ConfigError, match="did you mean convnext_tiny"):
        check_config(RunConfig(backbone="timm:convnex_tiny"))


def test_pretrained_weights_offline_say_how_to_pass_a_file(monkeypatch):
    def offline(*args, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return real(*args, **kwargs)

    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(WeightsError, match="weights=/path/to/file.safetensors"):
        create_backbone("timm:test_resnet", 2, weights="pretrained")
    with pytest.raises(WeightsError, match="has weights 'pretrained'"):
        create_backbone("timm:test_resnet", 2, weights="IMAGENET1K_V1")


def test_a_timm_checkpoint_file_loads(tmp_path):
    from safetensors.torch import save_file

    source = create_backbone("timm:test_convnext", 5).model
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "w.safetensors"))
    bb = create_backbone("timm:test_convnext", 2, weights=str(tmp_path / "w.safetensors"))
    torch.testing.assert_close(bb.model.state_dict()["stages.1.downsample.1.weight"],
                               source.state_dict()["stages.1.downsample.1.weight"])


def test_ssf_on_a_convnext_scales_per_channel_and_folds_exactly():
    """timm's LayerNorm2d normalises (B, C, H, W) maps over C: SSF scales channel-second there, channel-last after a
    token LayerNorm; folded into the norms' affine, the network gives the unfolded outputs."""
    from studylib.training.strategies import SSF

    torch.manual_seed(0)
    bb = create_backbone("timm:test_convnext", 3)
    strategy = SSF(RunConfig(strategy="ssf", backbone="timm:test_convnext"), bb)
    with torch.no_grad():
        for name, p in bb.model.named_parameters():
            if name.endswith(("ssf_scale", "ssf_shift")):
                p.copy_(torch.randn_like(p) * 0.3 + (1 if name.endswith("scale") else 0))
    x = torch.randn(2, 3, 32, 32)
    unfolded = bb.model.eval()(x).detach()
    strategy.merge()
    assert not any("ssf" in n for n, _ in bb.model.named_parameters())
    torch.testing.assert_close(bb.model(x), unfolded, atol=1e-5, rtol=1e-4)


def test_lora_leaves_depthwise_convolutions_out():
    pytest.importorskip("peft")
    from studylib.training.strategies import STRATEGIES

    bb = create_backbone("timm:test_convnext", 3)
    depthwise = [n for n, m in bb.model.named_modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    targets = STRATEGIES.get("lora")(RunConfig(strategy="lora", backbone="timm:test_convnext"), bb).targets
    assert depthwise and not set(depthwise) & set(targets)
    assert "stages.0.blocks.0.mlp.fc1" in targets and "stem.0" in targets


@pytest.mark.slow  # about 15 s
@pytest.mark.parametrize("model", ["test_vit", "test_convnext"])
def test_every_strategy_trains_on_a_timm_cnn_and_vit(model, tmp_path):
    """Each strategy of the registry, one step per epoch; gradual unfreezing for as many epochs as blocks."""
    from studylib.training.runner import run
    from studylib.training.strategies import STRATEGIES

    name = f"timm:{model}"
    stages = len(block_names(name))
    for strategy in STRATEGIES.names():
        epochs = stages if strategy.startswith("gu_") else 2
        cfg = RunConfig(dataset="synthetic", synthetic_size=48, backbone=name, image_size=32, batch_size=16,
                        max_epochs=epochs, patience=epochs, lp_epochs=1, gu_epochs_per_stage=1, max_steps_per_epoch=1,
                        strategy=strategy, quiet=True, repr_images=0, resume_every_s=-1, delta_attention_batches=1,
                        device="cpu")
        result = run(cfg, tmp_path / strategy)
        assert result.metrics["epochs_run"] == epochs, strategy


def test_the_backbones_command_prints_a_timm_models_block_map(capsys):
    from studylib.cli import main

    assert main(["backbones", "timm:test_vit"]) == 0
    out = capsys.readouterr().out
    assert "blocks (8): stem, blocks.0, blocks.1, blocks.2, blocks.3, blocks.4, blocks.5, head" in out
    assert "weights: pretrained, none, a checkpoint file" in out
    assert main(["backbones", "timm:no_such_net"]) == 2


def test_a_vits_images_are_normalised_with_its_weights_statistics(tmp_path):
    """timm's ViT weights were trained on images scaled to [-1, 1] (mean and std 0.5), torchvision's with ImageNet's
    statistics: each run normalises with its backbone's, and env.json says which."""
    import json

    from studylib.training.runner import run

    assert get_backbone_spec("timm:vit_small_patch16_224").mean == (0.5, 0.5, 0.5)
    assert get_backbone_spec("timm:convnext_tiny").std == pytest.approx((0.229, 0.224, 0.225))
    cfg = RunConfig(backbone="timm:test_vit", image_size=32, synthetic_size=48, max_epochs=1, quiet=True,
                    device="cpu", repr_images=0, strategy="lp")
    env = json.loads((run(cfg, tmp_path / "r").path / "env.json").read_text())
    assert env["input_mean"] == list(get_backbone_spec("timm:test_vit").mean)
    import numpy as np

    from studylib.data.bundle import DeviceBatches

    white = np.full((2, 3, 8, 8), 255, dtype=np.uint8)
    inputs, _ = next(DeviceBatches(white, np.array([0, 1]), 2, 8, torch.device("cpu"), mean=(0.5,) * 3,
                                   std=(0.5,) * 3).batches())
    torch.testing.assert_close(inputs, torch.ones_like(inputs))  # (255 - 127.5) / 127.5


def test_a_vits_features_are_per_channel_for_cka_and_delta():
    """A ViT block ends in (B, N, C) tokens, its stem in (B, H, W, C): CKA pools each to one value per channel and
    DELTA compares (and drops) channels, never tokens or rows."""
    import contextlib

    import numpy as np

    from studylib.data.bundle import DeviceBatches
    from studylib.training.representations import BlockFeatures
    from studylib.training.strategies import STRATEGIES

    torch.manual_seed(0)
    bb = create_backbone("timm:test_vit", 3)
    width = bb.model.embed_dim
    assert bb.channel_dims() == {"stem": 3, **{f"blocks.{i}": 2 for i in range(6)}}
    images = np.random.default_rng(0).integers(0, 255, (4, 3, 32, 32), dtype=np.uint8)
    batches = DeviceBatches(images, np.arange(4) % 3, 4, 32, torch.device("cpu"))
    features = BlockFeatures(bb, batches, contextlib.nullcontext)()
    assert {block: f.shape for block, f in features.items()} == {block: (4, width) for block in features}
    delta = STRATEGIES.get("delta")(RunConfig(strategy="delta", backbone="timm:test_vit"), bb)
    x = torch.randn(2, 3, 32, 32)
    maps = delta.pretrained_maps(x)
    assert all(m.shape[1] == width for m in maps)
    dropped = delta.pretrained_maps(x, drop=(1, 5))[1]
    assert dropped[:, 5].abs().sum() == 0 and maps[1][:, 5].abs().sum() > 0


@pytest.mark.parametrize("name, message", [
    ("timm:test_resnet.no_such_tag", "timm cannot build 'test_resnet.no_such_tag'"),
    ("timm:deit_tiny_distilled_patch16_224", "2 classifiers"),
])
def test_models_studylib_cannot_use_are_refused_with_the_reason(name, message):
    assert name not in BACKBONES
    with pytest.raises(ConfigError, match=message):
        check_config(RunConfig(backbone=name))
