"""The README's "Extend studylib" recipes: a new strategy, backbone and dataset in a few lines each."""
import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config
from torch import nn

from studylib import run
from studylib.data.datasets import DATASETS, DatasetInfo, register_dataset
from studylib.models.backbones import BACKBONES, BackboneSpec, register_backbone
from studylib.training.strategies import (
    STRATEGIES,
    EpochPlan,
    Strategy,
    register_strategy,
)


@pytest.fixture
def head_then_all():
    @register_strategy
    class HeadThenAll(Strategy):
        """Head alone for one epoch, then everything at a tenth of the rate."""

        name, label = "head_then_all", "H-A"
        description = "head for 1 epoch, then all blocks at lr / 10"

        def plan(self, epoch, probe):
            if epoch == 0:
                return EpochPlan(self.head, self.uniform(self.head), "head", (0, 1), final_stage=False)
            names = self.params_of(self.all_blocks)
            return EpochPlan(names, self.uniform(names, self.cfg.lr / 10), "all", (epoch - 1, self.cfg.max_epochs - 1))

    yield HeadThenAll
    STRATEGIES.remove("head_then_all")


def test_a_new_strategy_runs_and_logs_its_plan(head_then_all, tmp_path):
    run(tiny_config(strategy="head_then_all", max_epochs=3, lr=0.01), tmp_path)
    layers = pd.read_csv(tmp_path / "layers.csv")
    assert layers.groupby("epoch").trainable.sum().tolist() == [1, 5, 5]
    assert layers[layers.epoch == 1].lr_max.max() == pytest.approx(0.001)


def test_a_new_backbone_and_dataset(tmp_path):
    class Small(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                          nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            return self.fc(self.features(x))

    register_backbone(BackboneSpec("small", "a one-conv example", Small,
                                   lambda m: {"features": ["features"], "head": ["fc"]}, head="fc",
                                   channels_last=False))
    rng = np.random.default_rng(0)
    parts = {f"{s}_images": rng.integers(0, 255, (n, 20, 20), dtype=np.uint8) for s, n in (("train", 40), ("val", 12), ("test", 12))}
    parts.update({f"{s}_labels": rng.integers(0, 3, (n, 1)) for s, n in (("train", 40), ("val", 12), ("test", 12))})
    np.savez(tmp_path / "mine.npz", **parts)
    register_dataset(DatasetInfo("mine", "my modality", 3, "64", "me", "CC0", "-", "local file", "npz",
                                 {"file": "mine.npz"}, default_root=str(tmp_path)))
    try:
        result = run(tiny_config(dataset="mine", data_root=str(tmp_path), backbone="small", strategy="gu_last_first",
                                 max_epochs=3, gu_epochs_per_stage=1), tmp_path / "run")
        assert result.metrics["classes"] == ["0", "1", "2"]
    finally:
        BACKBONES.remove("small")
        DATASETS.remove("mine")


@pytest.fixture
def head_decay():
    from studylib.training.strategies import FullFineTuning

    @register_strategy
    class HeadDecay(FullFineTuning):
        """FT plus a penalty on the new head's weights: only `penalty()` is defined."""

        name, label = "head_decay", "FT+HD"
        description = "full fine-tuning with 5 * ||w_head||^2 added to the loss"

        def penalty(self):
            return 5 * sum(self.backbone.model.get_parameter(n).pow(2).sum() for n in self.head)

    yield HeadDecay
    STRATEGIES.remove("head_decay")


def test_a_strategy_that_defines_only_penalty_trains_with_it(head_decay, tmp_path):
    with_penalty = run(tiny_config(strategy="head_decay", max_epochs=2, lr=0.01), tmp_path / "hd")
    plain = run(tiny_config(strategy="ft", max_epochs=2, lr=0.01), tmp_path / "ft")
    history = pd.read_csv(tmp_path / "hd" / "history.csv")
    assert (history.train_penalty > 0).all()  # the engine added it to the loss
    head = lambda path: pd.read_csv(path / "layers.csv").query("block == 'head'").weight_norm.iloc[-1]
    assert head(tmp_path / "hd") < head(tmp_path / "ft")  # and it pulled the head's weights down
    assert with_penalty.metrics["test"] != plain.metrics["test"] or head(tmp_path / "hd") != head(tmp_path / "ft")


def test_an_abstract_strategy_without_a_plan_is_refused_at_once():
    class NoPlan(Strategy):
        name = "no_plan"

        def penalty(self):
            return None

    with pytest.raises(TypeError, match="abstract"):
        NoPlan(tiny_config(), None)
