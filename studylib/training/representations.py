"""How much each block's features changed: linear CKA between the starting and the fine-tuned network.

Centred kernel alignment (Kornblith et al., "Similarity of Neural Network Representations
Revisited", ICML 2019) with a linear kernel compares two representations of the same images, X (n x p)
and Y (n x q), after centring each feature:

    CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)

It is 1 for identical representations, invariant to orthogonal transforms and isotropic scaling of
either, and falls as the features change. HSIC is estimated without bias (Song et al. 2012), so the
value does not depend on how many channels a block has (see `linear_cka`). A block's output depends
on every block below it, so CKA is cumulative: a frozen block above a trained one changes too; the
relative weight distance beside it is the per-block measure. Each block's output (the block map's units; a feature map
averaged over its spatial positions into one vector per image) is taken on a fixed, seeded subset of
validation images, in eval mode, once from the starting network (pretrained backbone with its new
head) and again from the selected network (and every `log_representations_every` epochs). Memory stays
bounded by the subset: n x channels per block, never more than n x n for the Gram matrices. The
subset's pooled features are all CKA needs, so no library (torch-cka and friends keep whole feature
maps or hook every module) is used; tests check it against its definition.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..data.bundle import DataBundle, DeviceBatches
from ..models.backbones import Backbone


def linear_cka(x: np.ndarray, y: np.ndarray, debiased: bool = True) -> float:
    """Linear CKA of two representations of the same n images (rows), in the Gram form (n x n).

    debiased (the default): HSIC by the unbiased estimator of Song et al. (JMLR 2012), as in Nguyen et al.
    (ICLR 2021). The plain (biased) estimator has a floor that grows with the number of features p
    against n: unrelated 2048-channel features score about 0.89 on 256 images, so wide blocks would
    look unchanged; the debiased one scores them about 0. Both are 1 for identical representations
    and invariant to orthogonal transforms and isotropic scaling."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    if debiased and len(x) < 4:  # the unbiased estimator needs 4 images: a tiny validation split has no value
        return math.nan
    x, y = x - x.mean(0), y - y.mean(0)
    k, l_ = x @ x.T, y @ y.T
    hsic = _hsic_unbiased if debiased else _hsic_biased
    denominator = hsic(k, k) * hsic(l_, l_)
    if not denominator > 0:  # a constant representation (a dead block): similarity undefined
        return math.nan
    return float(hsic(k, l_) / math.sqrt(denominator))


def _hsic_biased(k: np.ndarray, l_: np.ndarray) -> float:
    """tr(K H L H) up to a constant, for K and L of centred features (already H K H)."""
    return float((k * l_).sum())


def _hsic_unbiased(k: np.ndarray, l_: np.ndarray) -> float:
    """Song et al. 2012, eq. 5 (up to the constant 1 / (n (n - 3)), which cancels in CKA)."""
    n = len(k)
    k, l_ = k - np.diag(np.diag(k)), l_ - np.diag(np.diag(l_))
    ones_k, ones_l = k.sum(0), l_.sum(0)
    return float((k * l_).sum() + k.sum() * l_.sum() / ((n - 1) * (n - 2)) - 2 / (n - 2) * ones_k @ ones_l)


def probe_subset(data: DataBundle, size: int, seed: int) -> np.ndarray:
    """Indices of a fixed, seeded subset of the validation images (all of them when there are fewer)."""
    val = data.indices("val")
    if size >= len(val):
        return val
    return np.sort(np.random.default_rng([seed, 2019]).choice(val, size, replace=False))


class BlockFeatures:
    """Pooled outputs of every backbone block for a fixed batch source, with forward hooks.

    A block's output is that of the last module the block map lists for it. The head block is left out
    (the new head starts random, so its change says nothing about transfer); where that block also holds
    pretrained layers (VGG-19's classifier), the head's input stands for it.
    """

    def __init__(self, backbone: Backbone, batches: DeviceBatches, autocast):
        self.backbone, self.batches, self.autocast = backbone, batches, autocast
        channels = backbone.channel_dims()  # 1 for a CNN's maps, the last for a ViT's tokens
        self.points = {block: (name, "output", channels[block]) for block, name in backbone.block_ends().items()}
        last = backbone.block_names[-1]
        if len(backbone.blocks[last]) > len(backbone.head_params):
            self.points[last] = (backbone.spec.head, "input", 1)

    @torch.no_grad()
    def __call__(self) -> dict[str, np.ndarray]:
        """Block -> (n, channels) features of the current model, in eval mode (training mode restored)."""
        model = self.backbone.model
        outputs: dict[str, list[torch.Tensor]] = {block: [] for block in self.points}
        handles = [self._hook(model.get_submodule(name), where, outputs[block], channel)
                   for block, (name, where, channel) in self.points.items()]
        was_training = {m: m.training for m in model.modules()}
        try:
            model.eval()
            for x, _ in self.batches.batches():
                with self.autocast():
                    model(x)
        finally:
            for handle in handles:
                handle.remove()
            for module, mode in was_training.items():
                module.train(mode)
        return {block: torch.cat(parts).cpu().double().numpy() for block, parts in outputs.items()}

    @staticmethod
    def _hook(module: nn.Module, where: str, sink: list, channel: int = 1):
        def pooled(t: torch.Tensor) -> torch.Tensor:  # one value per channel: averaged over positions or tokens
            t = t.detach().float().movedim(channel, 1)
            return t.mean(dim=tuple(range(2, t.dim()))) if t.dim() > 2 else t  # before any in-place ReLU

        if where == "input":
            return module.register_forward_pre_hook(lambda _m, args: sink.append(pooled(args[0])))
        return module.register_forward_hook(lambda _m, _args, out: sink.append(pooled(out)))


class Representations:
    """representations.csv: per block, CKA of the current features to the starting ones, beside the
    relative weight distance from the starting weights (the same measure as layers.csv)."""

    def __init__(self, backbone: Backbone, batches: DeviceBatches, autocast, initial: dict[str, torch.Tensor]):
        self.features = BlockFeatures(backbone, batches, autocast)
        self.backbone, self.initial = backbone, initial
        self.start = self.features()  # the starting network: computed before any training step
        self.rows: list[dict] = []

    def record(self, epoch: int, selected: bool = False) -> list[dict]:
        now = self.features()
        params = dict(self.backbone.model.named_parameters())
        rows = []
        for block, start in self.start.items():
            names = self.backbone.blocks[block]
            if block == self.backbone.block_names[-1]:  # the head's input: the pretrained layers before the head
                names = [n for n in names if n not in self.backbone.head_params]
            rows.append({"epoch": epoch, "selected": selected, "block": block, "images": len(start),
                         "features": start.shape[1], "cka": linear_cka(start, now[block]),
                         **_distance(params, self.initial, names)})
        self.rows += rows
        return rows


def _distance(params: dict, initial: dict, names: list[str]) -> dict[str, float]:
    """Distance of a block's weights from the starting weights, absolute and relative to their norm."""
    with torch.no_grad():
        dist = math.sqrt(sum(float((params[n].detach().float() - initial[n].float()).pow(2).sum()) for n in names))
        norm = math.sqrt(sum(float(initial[n].float().pow(2).sum()) for n in names))
    return {"dist_init": dist, "rel_dist_init": dist / norm if norm > 0 else math.nan}
