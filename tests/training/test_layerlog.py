"""training/layerlog.py against its definitions: norms, distance moved, RGN and rates per block."""
import math

import pytest
import torch

from studylib.models.backbones import create_backbone
from studylib.training.layerlog import LayerLog
from studylib.training.strategies import EpochPlan


def test_a_block_row_is_the_formula_over_its_tensors():
    torch.manual_seed(0)
    backbone = create_backbone("tinycnn", 3)
    log = LayerLog(backbone)
    block = backbone.block_names[0]
    names = backbone.blocks[block]
    params = dict(backbone.model.named_parameters())
    start = {n: params[n].detach().clone() for n in names}
    with torch.no_grad():
        for n in names:
            params[n].add_(0.1)
    log.grads = {n: 0.5 for n in names}
    optimizer = torch.optim.SGD([{"params": [params[n] for n in names], "lr": 0.01}], lr=0.01)
    plan = EpochPlan(list(names), {n: 0.01 for n in names}, "x", (0, 1), ratios={names[0]: 0.25})
    log.record(0, plan, optimizer)
    row = next(r for r in log.rows if r["block"] == block)
    weight = math.sqrt(sum(params[n].detach().pow(2).sum().item() for n in names))
    moved = math.sqrt(sum((params[n].detach() - start[n]).pow(2).sum().item() for n in names))
    initial = math.sqrt(sum(start[n].pow(2).sum().item() for n in names))
    grad = math.sqrt(len(names) * 0.25)
    assert row["weight_norm"] == pytest.approx(weight, rel=1e-5)
    assert row["dist_init"] == pytest.approx(moved, rel=1e-5)
    assert row["rel_dist_init"] == pytest.approx(moved / initial, rel=1e-5)
    assert row["grad_norm"] == pytest.approx(grad) and row["rgn"] == pytest.approx(grad / weight, rel=1e-5)
    assert row["lr"] == row["lr_max"] == 0.01 and row["trainable"] and row["score"] == 0.25
    frozen = next(r for r in log.rows if r["block"] != block)
    assert not frozen["trainable"] and frozen["lr"] == 0.0 and math.isnan(frozen["grad_norm"])
