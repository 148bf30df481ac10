"""docs/extending.md's recipes: a new strategy (with knobs of its own), backbone and dataset in a few lines each."""
import json
import re

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, tiny_config
from torch import nn

from studylib import ConfigError, run
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
    parts = {f"{s}_images": rng.integers(0, 255, (n, 20, 20), dtype=np.uint8)
             for s, n in (("train", 40), ("val", 12), ("test", 12))}
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

    def head(path):
        return pd.read_csv(path / "layers.csv").query("block == 'head'").weight_norm.iloc[-1]

    assert head(tmp_path / "hd") < head(tmp_path / "ft")  # and it pulled the head's weights down
    assert with_penalty.metrics["test"] != plain.metrics["test"] or head(tmp_path / "hd") != head(tmp_path / "ft")


def test_an_abstract_strategy_without_a_plan_is_refused_at_once():
    class NoPlan(Strategy):
        name = "no_plan"

        def penalty(self):
            return None

    with pytest.raises(TypeError, match="abstract"):
        NoPlan(tiny_config(), None)


# A strategy with two knobs, as a user writes it: one file, registered on import. Its knobs are config keys
# from then on: grids sweep them, -s sets them, `studylib config` and the notebook's parameters cell list them.
HEAD_BOOST = """
from studylib.core.knobs import AT_LEAST_0, POSITIVE, Knob
from studylib.training.strategies import EpochPlan, Strategy, register_strategy


@register_strategy
class HeadBoost(Strategy):
    \"\"\"The new head alone for warm_epochs, then every block, the head at lr * head_lr_factor.\"\"\"

    name, label = "head_boost", "HB"
    description = "head alone for warm_epochs, then all blocks; the head at lr * head_lr_factor"
    knobs = (Knob("head_lr_factor", 10.0, "the new head trains at lr times this", POSITIVE),
             Knob("warm_epochs", 1, "epochs in which only the head trains", AT_LEAST_0))

    def plan(self, epoch, probe):
        head = self.uniform(self.head, self.cfg.lr * self.cfg.head_lr_factor)
        warm = self.cfg.warm_epochs
        if epoch < warm:
            return EpochPlan(self.head, head, "head", (epoch, warm), final_stage=False)
        names = self.params_of(self.all_blocks)
        return EpochPlan(names, {**self.uniform(names), **head}, "all", (epoch - warm, self.cfg.max_epochs - warm))
"""

GRID = """
imports: [head_boost.py]
dataset: synthetic
synthetic_size: 160
backbone: tinycnn
image_size: 16
batch_size: 32
max_epochs: 2
device: cpu
lr: 0.01
schedule: constant
strategy: [head_boost, ft]
head_lr_factor: [1, 10]
"""


@pytest.fixture
def head_boost_grid(tmp_path):
    (tmp_path / "head_boost.py").write_text(HEAD_BOOST)
    (tmp_path / "grid.yaml").write_text(GRID)
    yield tmp_path / "grid.yaml"
    if "head_boost" in STRATEGIES:
        STRATEGIES.remove("head_boost")  # and its knobs with it


def test_a_strategy_with_two_knobs_in_one_file_runs_through_a_grid(head_boost_grid, tmp_path):
    from studylib.core.knobs import KNOBS
    from studylib.study.grid import load_grid, run_grid

    grid = load_grid(head_boost_grid)  # imports the file: the knobs are config keys now
    assert [(c.strategy, c.head_lr_factor) for c in grid.runs] == [("head_boost", 1.0), ("head_boost", 10.0),
                                                                   ("ft", 1.0)]
    # FT never reads head_lr_factor: sweeping it gives FT one run, not two
    table = run_grid(head_boost_grid, tmp_path / "out", engine="inline", progress=False)
    assert (table.status == "finished").all() and len(table) == 3
    for path in (tmp_path / "out" / "runs").glob("synthetic-tinycnn-head_boost-*"):
        config = json.loads((path / "config.json").read_text())
        layers = pd.read_csv(path / "layers.csv")
        assert layers.groupby("epoch").trainable.sum().tolist() == [1, 5]  # warm_epochs=1: the head alone first
        second = layers[layers.epoch == 1].set_index("block").lr_max
        assert second["head"] == pytest.approx(0.01 * config["head_lr_factor"])
        assert second.drop("head").max() == pytest.approx(0.01)
    STRATEGIES.remove("head_boost")
    assert "head_lr_factor" not in KNOBS  # unregistering takes its knobs away


def test_a_new_strategys_knobs_reach_config_help_the_parameters_cell_and_set(head_boost_grid, capsys):
    import sys

    from studylib.cli import main
    from studylib.core.config import parse_assignment
    from studylib.study.grid import load_grid

    load_grid(head_boost_grid)
    assert parse_assignment("head_lr_factor=3") == ("head_lr_factor", 3.0)
    assert tiny_config(strategy="head_boost", warm_epochs=2).warm_epochs == 2
    with pytest.raises(ConfigError, match=r"head_lr_factor=0.0 is out of range; set head_lr_factor to greater than 0"):
        tiny_config(head_lr_factor=0.0)
    main(["config"])
    assert re.search(r"head_lr_factor += 10.0 +# \[tuned\] head_boost: the new head trains at lr times this",
                     capsys.readouterr().out)
    main(["strategies"])
    assert "knobs: head_lr_factor=10.0, warm_epochs=1" in capsys.readouterr().out
    sys.path.insert(0, str(ROOT / "notebooks"))
    try:
        from build_notebooks import parameters_cell
    finally:
        sys.path.remove(str(ROOT / "notebooks"))
    cell = parameters_cell([]).source
    assert "warm_epochs: int = 1  # head_boost: epochs in which only the head trains" in cell


@pytest.mark.slow
def test_a_papermill_grid_imports_the_strategy_file_in_its_kernel_and_goes_on_past_a_failing_cell(
        head_boost_grid, tmp_path):
    """One papermill grid, two kernels: a cell that fails (surgical_block names no block) marks its run failed with
    the reason and the grid goes on to the plugin strategy, which its kernel imported from the grid's `imports:`."""
    from studylib.study.grid import run_grid

    grid = head_boost_grid.read_text().replace("strategy: [head_boost, ft]", "strategy: [surgical, head_boost]")
    head_boost_grid.write_text(grid.replace("head_lr_factor: [1, 10]", "head_lr_factor: 5\nsurgical_block: nowhere"))
    table = run_grid(head_boost_grid, tmp_path / "out", progress=False)
    assert table.status.tolist() == ["failed", "finished"], table.reason.tolist()
    failed = table[table.status == "failed"]
    assert "surgical" in failed.run.iloc[0] and "surgical_block='nowhere'" in failed.reason.iloc[0]
    assert "notebook cell" in failed.reason.iloc[0]
    config = json.loads(next((tmp_path / "out" / "runs").glob("*head_boost*/config.json")).read_text())
    assert config["strategy"] == "head_boost" and config["head_lr_factor"] == 5.0
    retried = run_grid(head_boost_grid, tmp_path / "out", dry_run=True, progress=False)
    assert list(retried.action).count("run") == 1  # the failed one is retried next time
