import urllib.error

import pytest
import torch
from torch import nn

from studylib.core.fileio import sha256_file
from studylib.models.backbones import (
    BACKBONES,
    WeightsError,
    create_backbone,
    get_backbone_spec,
    list_backbones,
    weight_sets,
)

EXPECTED_BLOCKS = {
    "resnet50": ["stem", "layer1", "layer2", "layer3", "layer4", "head"],
    "resnet18": ["stem", "layer1", "layer2", "layer3", "layer4", "head"],
    "densenet121": ["stem", "denseblock1", "transition1", "denseblock2", "transition2", "denseblock3",
                    "transition3", "denseblock4", "head"],
    "vgg19": ["conv1", "conv2", "conv3", "conv4", "conv5", "classifier"],
    "tinycnn": ["stem", "stage1", "stage2", "stage3", "head"],
}


@pytest.fixture(scope="module", params=list_backbones())
def backbone(request):
    torch.manual_seed(0)
    return create_backbone(request.param, num_classes=3)


def test_block_map_matches_design_and_covers_every_parameter_once(backbone):
    if backbone.spec.name in EXPECTED_BLOCKS:  # DESIGN.md's maps are the oracle where it gives one
        assert backbone.block_names == EXPECTED_BLOCKS[backbone.spec.name]
    assert len(backbone.block_names) >= 2  # every backbone: at least one block below the head
    covered = [p for names in backbone.blocks.values() for p in names]
    assert sorted(covered) == sorted(n for n, _ in backbone.model.named_parameters())
    assert set(backbone.head_params) <= set(backbone.blocks[backbone.block_names[-1]])


def test_new_head_is_sized_to_the_classes(backbone):
    backbone.model.eval()
    with torch.no_grad():
        out = backbone.model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 3)
    assert all(backbone.model.get_parameter(p).shape[0] == 3 for p in backbone.head_params)


def test_normalisation_layers_are_found_by_type(backbone):
    found = {id(m) for b in backbone.block_names for m in backbone.norm_modules(b)}
    expected = {id(m) for m in backbone.model.modules() if isinstance(m, nn.BatchNorm2d)}
    assert found == expected  # includes ResNet downsample and DenseNet 'norm' layers


def test_resnet50_downsample_batchnorm_is_in_its_layer():
    bb = create_backbone("resnet50", 2)
    layer1 = bb.norm_modules("layer1")
    assert bb.model.layer1[0].downsample[1] in layer1


@pytest.mark.parametrize("weights", ["DEFAULT", "IMAGENET1K_V9"])
def test_unpinned_or_unknown_weight_names_are_refused(weights):
    with pytest.raises(WeightsError, match="IMAGENET1K_V1"):
        create_backbone("resnet50", 2, weights)


def test_offline_download_error_explains_the_cache(monkeypatch):
    spec = get_backbone_spec("resnet18")

    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(type(weight_sets(spec).IMAGENET1K_V1), "get_state_dict", offline)
    with pytest.raises(WeightsError, match=r"pre-fill the cache.*checkpoints.*weights=/path/to"):
        create_backbone("resnet18", 2, "IMAGENET1K_V1")


def test_local_checkpoint_loads_all_but_the_head_and_checks_sha256(tmp_path):
    torch.manual_seed(1)
    source = create_backbone("tinycnn", 16)
    path = tmp_path / "source.pt"
    torch.save({"state_dict": source.model.state_dict()}, path)
    target = create_backbone("tinycnn", 4, str(path), sha256=sha256_file(path))
    for name, value in source.model.state_dict().items():
        if not name.startswith("fc."):
            assert torch.equal(value, target.model.state_dict()[name])
    assert target.model.fc.out_features == 4
    with pytest.raises(WeightsError, match="SHA-256"):
        create_backbone("tinycnn", 4, str(path), sha256="0" * 64)


def test_checkpoint_of_another_architecture_names_the_mismatch(tmp_path):
    path = tmp_path / "r18.pt"
    torch.save(create_backbone("resnet18", 2).model.state_dict(), path)
    with pytest.raises(WeightsError, match=r"does not fit backbone tinycnn.*missing.*Was it saved"):
        create_backbone("tinycnn", 2, str(path))


def test_checkpoint_with_wrong_shapes_names_them(tmp_path):
    from studylib.models.backbones import TinyCNN
    path = tmp_path / "wide.pt"
    torch.save(TinyCNN(widths=(8, 32, 64, 96)).state_dict(), path)
    with pytest.raises(WeightsError, match=r"shapes differ \(stem.0.weight"):
        create_backbone("tinycnn", 2, str(path))


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        create_backbone("tinycnn", 2, str(tmp_path / "nope.pt"))


def test_registry_refuses_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        BACKBONES.add("tinycnn", get_backbone_spec("tinycnn"))


@pytest.mark.parametrize("name", list_backbones())
def test_each_backbone_runs_at_its_declared_minimum_size(name):
    """min_size is what the size check promises: a forward at it works (and below it, for those that
    declare one, the network itself fails, so the check is not stricter than needed)."""
    spec = get_backbone_spec(name)
    model = create_backbone(name, 3).model.eval()
    size = max(spec.min_size, 8)
    with torch.no_grad():
        assert model(torch.zeros(1, 3, size, size)).shape == (1, 3)
        if spec.min_size > 8:
            with pytest.raises(RuntimeError):
                model(torch.zeros(1, 3, spec.min_size - 8, spec.min_size - 8))


def xrv_layout(state: dict) -> dict:
    """A torchvision DenseNet-121 state dict in torchxrayvision's layout: the old 'norm.1' style layer names, a
    1-channel first convolution (the sum over R, G, B), its own 18-class classifier and an op_threshs tensor."""
    import re

    out = {re.sub(r"(denselayer\d+)\.(norm|relu|conv)([12])", r"\1.\2.\3", k): v.clone() for k, v in state.items()
           if not k.startswith("classifier")}
    out["features.conv0.weight"] = state["features.conv0.weight"].sum(1, keepdim=True)
    out["classifier.weight"], out["classifier.bias"] = torch.zeros(18, 1024), torch.zeros(18)
    out["op_threshs"] = torch.rand(18)
    return out


XRV_KEYS = r"(denselayer\d+)\.(norm|relu|conv)\.([12])=>\1.\2\3;^op_threshs$=>"  # docs/backbones.md


def test_a_single_channel_densenet_checkpoint_with_torchxrayvision_keys_loads(tmp_path):
    from safetensors.torch import save_file


    source = create_backbone("densenet121", 5).model.state_dict()
    path = tmp_path / "xrv-densenet121.safetensors"
    save_file(xrv_layout(source), path)
    with pytest.raises(WeightsError, match="weights_channels=repeat"):
        create_backbone("densenet121", 3, str(path), keys=XRV_KEYS)
    with pytest.raises(WeightsError, match="weights missing"):
        create_backbone("densenet121", 3, str(path), channels="repeat")  # the old names do not fit
    loaded = create_backbone("densenet121", 3, str(path), sha256_file(path), keys=XRV_KEYS, channels="repeat")
    state = loaded.model.state_dict()
    grey = source["features.conv0.weight"].sum(1, keepdim=True)
    torch.testing.assert_close(state["features.conv0.weight"], grey.repeat(1, 3, 1, 1) / 3)
    name = "features.denseblock2.denselayer3.norm1.weight"
    torch.testing.assert_close(state[name], source[name])
    image = torch.rand(1, 1, 64, 64)  # a grey image, R = G = B: the adapted stem answers as the checkpoint's
    torch.testing.assert_close(torch.nn.functional.conv2d(image.repeat(1, 3, 1, 1), state["features.conv0.weight"]),
                               torch.nn.functional.conv2d(image, grey), rtol=1e-5, atol=1e-5)


def test_luminance_channels_see_the_image_converted_to_grey(tmp_path):
    source = create_backbone("tinycnn", 5).model.state_dict()
    single = {k: (v.sum(1, keepdim=True) if k == "stem.0.weight" else v) for k, v in source.items()}
    torch.save(single, tmp_path / "grey.pt")
    stem = create_backbone("tinycnn", 3, str(tmp_path / "grey.pt"), channels="luminance").model.stem[0].weight
    rgb = torch.rand(1, 3, 16, 16)
    grey = (0.299 * rgb[:, :1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:])  # PIL's convert("L") weights
    torch.testing.assert_close(torch.nn.functional.conv2d(rgb, stem.detach()),
                               torch.nn.functional.conv2d(grey, single["stem.0.weight"]), rtol=1e-5, atol=1e-5)


def test_a_run_records_its_channel_handling_and_the_report_says_it(tmp_path):
    import json

    from studylib import RunConfig, run
    from studylib.study.analysis import Study
    from studylib.views.report import report_words

    single = {k: (v.sum(1, keepdim=True) if k == "stem.0.weight" else v)
              for k, v in create_backbone("tinycnn", 5).model.state_dict().items()}
    torch.save(single, tmp_path / "grey.pt")
    cfg = RunConfig(weights=str(tmp_path / "grey.pt"), weights_channels="luminance", image_size=16, synthetic_size=120,
                    max_epochs=1, quiet=True, device="cpu", repr_images=0)
    result = run(cfg, tmp_path / "runs" / "r")
    assert json.loads((result.path / "config.json").read_text())["weights_channels"] == "luminance"
    assert json.loads((result.path / "env.json").read_text())["weights_channels_adapted"] == ["stem.0.weight"]
    assert "weights_channels luminance: how a 1-channel checkpoint's" in report_words(Study(tmp_path, n_boot=50))


def test_weights_key_rules_and_channels_are_checked_in_the_config():
    from studylib import RunConfig
    from studylib.core.config import ConfigError

    with pytest.raises(ConfigError, match="no '=>'"):
        RunConfig.from_dict({"weights_keys": "features"})
    with pytest.raises(ConfigError, match="weights_keys rule"):
        RunConfig.from_dict({"weights_keys": "(unclosed=>x"})
    with pytest.raises(ConfigError, match="use repeat"):
        RunConfig.from_dict({"weights_channels": "sum"})
    plain = RunConfig.from_dict({})
    assert plain.run_hash() == RunConfig.from_dict({"weights_keys": "", "weights_channels": ""}).run_hash()
    assert RunConfig.from_dict({"weights_channels": "repeat"}).run_hash() != plain.run_hash()
