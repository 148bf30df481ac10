"""In-domain pretraining: any dataset as the source, a record of what the checkpoint learned from, and no test on
images the checkpoint was pretrained on."""
import json

import pytest
import torch
from conftest import tiny_config, write_image_folder

from studylib.core.config import ConfigError
from studylib.models.backbones import create_backbone
from studylib.training.pretrain import pretrain, pretrain_config, source_fields
from studylib.training.provenance import record_path
from studylib.training.runner import run


def folder_source(root, **changes) -> dict:
    return {**source_fields(str(root)), **changes}


@pytest.fixture(scope="module")
def folder_checkpoint(tmp_path_factory):
    """tinycnn pretrained on a class-folder dataset of PNG files (seed 0 split: train / val / test re-drawn)."""
    root = write_image_folder(tmp_path_factory.mktemp("source") / "d", per_class=10, splits=())
    cfg = pretrain_config(image_size=16, epochs=2, quiet=True, data=folder_source(root, workers=1, device="cpu"))
    return root, pretrain(tmp_path_factory.mktemp("ck") / "folder.pt", cfg)


def test_the_record_says_what_the_checkpoint_learned_from(folder_checkpoint):
    root, checkpoint = folder_checkpoint
    record = json.loads(record_path(checkpoint).read_text())
    assert record["source"]["dataset"] == "folder" and record["source"]["data_root"] == str(root)
    assert record["source"]["classes"] == ["a", "b", "c"] and record["source"]["data_fingerprint"]
    trained = sum(record["source"]["counts"]["train"].values())
    assert len(record["source"]["train_file_sha256"]) == trained
    assert record["recipe"]["max_epochs"] == 2 and record["recipe"]["strategy"] == "ft"
    assert record["checkpoint_sha256"] in checkpoint.with_suffix(".sha256").read_text()


def test_the_checkpoint_loads_as_weights(folder_checkpoint):
    _, checkpoint = folder_checkpoint
    state = torch.load(checkpoint, weights_only=True)
    loaded = create_backbone("tinycnn", 5, weights=str(checkpoint)).model.state_dict()
    torch.testing.assert_close(loaded["stage2.0.0.weight"], state["stage2.0.0.weight"])


def test_testing_on_images_the_checkpoint_was_pretrained_on_is_refused(folder_checkpoint, tmp_path):
    root, checkpoint = folder_checkpoint
    other_split = tiny_config(dataset="folder", data_root=str(root), weights=str(checkpoint), seed=1, workers=1)
    with pytest.raises(ConfigError, match="validation and test images were training images"):
        run(other_split, tmp_path / "leaky")
    same_split = other_split.replace(seed=0, max_epochs=1)  # the pretraining's own split: its test stayed unseen
    assert run(same_split, tmp_path / "fine").metrics["test"]["balanced_accuracy"] >= 0


def test_unknown_sources_are_named(tmp_path):
    with pytest.raises(ConfigError, match="neither a registered dataset"):
        source_fields(str(tmp_path / "nowhere"))
    assert source_fields("synthetic") == {"dataset": "synthetic"}


@pytest.mark.slow
def test_pretrain_on_one_real_set_then_fine_tune_on_another(shared_data, tmp_path):
    """Chest X-rays (Kermany, re-split by patient) as the source, brain MRI (class folders) as the target; and the
    source itself as a target, under another seed, refused: its test would hold pretraining images."""
    chest = {"dataset": "chest_xray_pneumonia", "data_root": str(shared_data / "chest-xray-kermany"),
             "official_split": False, "max_steps_per_epoch": 4}  # 32 px, as the real-data tests: the cache is shared
    checkpoint = pretrain(tmp_path / "chest.pt", pretrain_config(image_size=32, epochs=1, quiet=True, data=chest))
    record = json.loads(record_path(checkpoint).read_text())
    assert record["source"]["classes"] == ["NORMAL", "PNEUMONIA"]
    assert len(record["source"]["train_file_sha256"]) == sum(record["source"]["counts"]["train"].values())
    brain = tiny_config(dataset="folder", data_root=str(shared_data / "brain-mri-nickparvar"), weights=str(checkpoint),
                        strategy="lp", image_size=32, max_epochs=1)
    result = run(brain, tmp_path / "brain")
    env = json.loads((result.path / "env.json").read_text())
    assert env["sha256"] == record["checkpoint_sha256"]  # the run names the checkpoint it started from
    assert env["pretraining"]["source"]["data_fingerprint"] == record["source"]["data_fingerprint"]
    assert len(result.metrics["test_confusion"]) == 4  # four tumour classes, from a two-class source
    itself = tiny_config(**{k: v for k, v in chest.items() if k != "max_steps_per_epoch"}, weights=str(checkpoint),
                         image_size=32, seed=684)
    with pytest.raises(ConfigError, match="were training images when"):
        run(itself, tmp_path / "leaky")


def test_the_pretrain_command_takes_any_dataset_and_backbone(folder_checkpoint, tmp_path, capsys, monkeypatch):
    from studylib.cli import main

    pytest.importorskip("timm")
    root, _ = folder_checkpoint
    monkeypatch.chdir(tmp_path)
    assert main(["pretrain", "--data", str(root), "-s", "workers=1", "-s", "device=cpu", "--backbone",
                 "timm:test_resnet", "--image-size", "32", "--epochs", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    checkpoint = tmp_path / "outputs" / "pretrained" / "timm-test_resnet-d.pt"  # BACKBONE-SOURCE, ':' made safe
    assert checkpoint.is_file() and "pretrained on folder" in out
    assert "-s backbone=timm:test_resnet -s weights=outputs/pretrained/timm-test_resnet-d.pt" in out
    assert main(["pretrain", "--data", str(tmp_path / "missing")]) == 2
