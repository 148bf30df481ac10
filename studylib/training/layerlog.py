"""Per-epoch, per-block training log: what trained, at which rate, how far it moved (layers.csv)."""
from __future__ import annotations

import math

import torch

from ..models.backbones import Backbone
from .strategies import EpochPlan


class LayerLog:
    """Collects one row per epoch x block.

    Columns: trainable, number of parameters, learning rate (mean and max over the block's
    trainable tensors, after the schedule), gradient norm (root of the summed per-tensor
    mean squared gradient norms over the epoch's steps), weight norm, RGN = grad / weight
    norm, distance from the initial weights (absolute and relative), and the strategy's
    per-tensor score (Auto-RGN / Auto-SNR ratio) averaged over the block, and whether the block
    (or tensor) holds the tensor whose score set the maximum that epoch (`sets_max`).
    """

    def __init__(self, backbone: Backbone, per_tensor: bool = False):
        self.backbone = backbone
        self.per_tensor = per_tensor  # also one row per parameter tensor (tensors.csv)
        self.tensor_rows: list[dict] = []
        self.initial = {n: p.detach().clone() for n, p in backbone.model.named_parameters()}
        self.grads: dict[str, float] = {}  # filled by the trainer each epoch
        self.rows: list[dict] = []

    @torch.no_grad()
    def record(self, epoch: int, plan: EpochPlan, optimizer: torch.optim.Optimizer) -> None:
        lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
        for block, names in self.backbone.blocks.items():
            self.rows.append({"epoch": epoch, "block": block, "stage": plan.stage,
                              **self.summary(names, lr_of, plan), "sets_max": plan.max_tensor in names})
            if self.per_tensor:
                self.tensor_rows += [{"epoch": epoch, "tensor": n, "block": block,
                                      **self.summary([n], lr_of, plan), "sets_max": n == plan.max_tensor}
                                     for n in names]

    def summary(self, names: list[str], lr_of: dict[int, float], plan: EpochPlan) -> dict:
        """The log columns for one group of parameter tensors (a block, or a single tensor)."""
        params = dict(self.backbone.model.named_parameters())
        trainable = set(plan.trainable)
        weights = [params[n].detach().float() for n in names]
        initial = [self.initial[n].float() for n in names]
        weight_norm = _root_sum_squares(torch._foreach_norm(weights))
        dist = _root_sum_squares(torch._foreach_norm(torch._foreach_sub(weights, initial)))
        init_norm = _root_sum_squares(torch._foreach_norm(initial))
        lrs = [lr_of[id(params[n])] for n in names if id(params[n]) in lr_of]
        grads = [self.grads[n] for n in names if n in self.grads]
        grad_norm = math.sqrt(sum(g * g for g in grads)) if grads else math.nan
        ratios = [plan.ratios[n] for n in names if n in plan.ratios]
        return {
            "trainable": any(n in trainable for n in names),
            "trainable_tensors": sum(n in trainable for n in names), "tensors": len(names),
            "params": sum(params[n].numel() for n in names),
            "lr": sum(lrs) / len(lrs) if lrs else 0.0, "lr_max": max(lrs, default=0.0),
            "grad_norm": grad_norm, "weight_norm": weight_norm,
            "rgn": grad_norm / weight_norm if weight_norm > 0 else math.nan,
            "dist_init": dist, "rel_dist_init": dist / init_norm if init_norm > 0 else math.nan,
            "score": sum(ratios) / len(ratios) if ratios else math.nan,
        }


def _root_sum_squares(norms: list[torch.Tensor]) -> float:
    if not norms:
        return 0.0
    return float(torch.stack(norms).pow(2).sum().sqrt())
