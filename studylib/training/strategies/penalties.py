"""Feature-space regularisers: fine-tuning whose penalty looks at what the network computes, not at its weights.

BSS shrinks the smallest singular values of the batch's penultimate features; DELTA keeps each block's feature
maps near the pretrained network's on the same images, weighted by how much each channel matters. Both are a
`penalty()` on the loss (the strategy contract); forward hooks hand them the current batch's features.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ...core.config import RunConfig
from ...core.knobs import AT_LEAST_0, AT_LEAST_1, Knob
from ...models.backbones import Backbone
from .base import EpochPlan, Probe, Strategy, register_strategy


def bss_penalty(features: torch.Tensor, k: int) -> torch.Tensor:
    """Sum of the k smallest squared singular values of the (batch x dimension) feature matrix."""
    singular = torch.linalg.svdvals(features.float().flatten(1))  # descending
    return singular[-k:].pow(2).sum()


def delta_penalty(current: list[torch.Tensor], pretrained: list[torch.Tensor],
                  attention: list[torch.Tensor] | None) -> torch.Tensor:
    """DELTA's behavioural term, averaged over the batch: per block, the sum over channels of
    W_c * ||FM_c(w) - FM_c(w0)||^2, with the squared distance over the c channels' h x w positions scaled by
    c / (h w) so a block's term does not grow with its map size (TLlib's normalisation); without attention
    (the plain variant) every position of every channel counts 1/2."""
    total = current[0].new_zeros(())
    for i, (now, then) in enumerate(zip(current, pretrained)):
        b, c = now.shape[:2]
        squared = (now.float() - then.float()).pow(2).reshape(b, c, -1)
        if attention is None:
            total = total + 0.5 * squared.sum() / b
        else:
            hw = squared.shape[2]
            total = total + 0.5 * (c / hw * attention[i] * squared.sum(2)).sum() / b
    return total


class _Capture:
    """Keeps a tensor a module sees in a training forward (grad on): its input or its output."""

    def __init__(self, module: nn.Module, where: str, channel: int = 1):
        self.value: torch.Tensor | None = None
        self.channel = channel  # kept channels-second: a ViT's (B, N, C) tokens become (B, C, N)
        if where == "input":
            self.handle = module.register_forward_pre_hook(lambda _m, args: self._keep(args[0]))
        else:
            self.handle = module.register_forward_hook(lambda _m, _args, out: self._keep(out))

    def _keep(self, tensor: torch.Tensor) -> None:
        if torch.is_grad_enabled():  # evaluation and feature caching run without grad: nothing to keep
            self.value = tensor.movedim(self.channel, 1)

    def take(self) -> torch.Tensor:
        if self.value is None:
            raise RuntimeError("the penalty was asked for before a training forward pass")
        value, self.value = self.value, None
        return value


@register_strategy
class BSS(Strategy):
    """Chen, Wang, Fu, Long, Wang (NeurIPS 2019), batch spectral shrinkage: fine-tuning with
    eta * sum_{i<=k} sigma_{-i}^2, the k smallest singular values of the batch's penultimate feature matrix
    (the head's input, batch x features), so the feature directions the target barely supports, where
    untransferable source knowledge sits, shrink. Everything trains at `lr`, with plain weight decay as FT."""

    name, label = "bss", "BSS"
    description = "FT plus eta times the k smallest squared singular values of the batch's penultimate features"
    knobs = (Knob("bss_eta", 0.001, "weight of the batch spectral shrinkage term", AT_LEAST_0),
             Knob("bss_k", 1, "how many of the smallest singular values are shrunk", AT_LEAST_1))

    def __init__(self, cfg: RunConfig, backbone: Backbone):
        super().__init__(cfg, backbone)
        self.features = _Capture(backbone.model.get_submodule(backbone.spec.head), "input")

    def plan(self, epoch: int, probe: Probe) -> EpochPlan:
        names = self.params_of(self.all_blocks)
        return EpochPlan(names, self.uniform(names), "all", self.whole_run(epoch), weight_decay=self.cfg.weight_decay)

    def penalty(self) -> torch.Tensor:
        features = self.features.take()
        if min(features.shape[0], features[0].numel()) <= self.cfg.bss_k:
            return features.new_zeros(())  # a batch this small has no small directions: shrinking would hit the top
        return self.cfg.bss_eta * bss_penalty(features, self.cfg.bss_k)


@register_strategy
class DELTA(Strategy):
    """Li, Xiong, Wang, Huan, Wang, Xu (ICLR 2019), DELTA: fine-tuning with
    alpha * sum_blocks sum_c W_c ||FM_c(w, x) - FM_c(w0, x)||^2 + beta/2 ||w_head||^2, where FM are the feature
    maps at the end of each block of the network being tuned (w) and of the pretrained one (w0, a frozen copy)
    on the same batch, and W_c a block's channel attention: how much the target loss rises when channel c is
    removed from the pretrained network (with a linear classifier fitted on its frozen features), standardised
    and passed through softmax(./5) per block, as TLlib computes it. Measured once, before the first epoch, on
    `delta_attention_batches` training batches. `delta_attention: none` is the plain feature-map variant.
    No plain weight decay: the penalty replaces it."""

    name, label = "delta", "DELTA"
    description = "FT plus the distance of each block's feature maps to the pretrained network's, channel-weighted"
    reads = ("lr",)
    knobs = (Knob("delta_alpha", 0.01, "weight of the feature-map distance to the pretrained network", AT_LEAST_0),
             Knob("delta_beta", 0.01, "weight of 1/2 ||w||^2 over the new head", AT_LEAST_0),
             Knob("delta_attention", "channel", "channel: weight channels by their measured importance; none: the "
                  "plain feature-map distance", choices=("channel", "none")),
             Knob("delta_attention_batches", 4, "training batches on which the channel attention is measured",
                  AT_LEAST_1))

    def __init__(self, cfg: RunConfig, backbone: Backbone):
        super().__init__(cfg, backbone)
        self.pretrained = copy.deepcopy(backbone.model).eval().requires_grad_(False)
        self.ends = backbone.block_ends()
        self.channels = backbone.channel_dims()  # each block end's channel dimension (a ViT's tokens: the last)
        model = backbone.model
        self.input = _Capture(model, "input")
        self.current = [_Capture(model.get_submodule(name), "output", self.channels[block])
                        for block, name in self.ends.items()]
        self.head_w = [p for n, p in model.named_parameters() if n in set(self.head)]
        self.attention: list[torch.Tensor] | None = None

    def plan(self, epoch: int, probe: Probe) -> EpochPlan:
        if self.cfg.delta_attention == "channel" and self.attention is None:
            # seeded batches and a forked RNG: a resumed run measures the same attention and draws the same
            # random numbers afterwards as the run it continues
            batches = list(probe.batches(self.cfg.delta_attention_batches, seed=self.cfg.seed))
            with torch.random.fork_rng(devices=[]):
                self.attention = self.channel_attention(batches)
        names = self.params_of(self.all_blocks)
        return EpochPlan(names, self.uniform(names), "all", self.whole_run(epoch), weight_decay=0.0)

    def penalty(self) -> torch.Tensor:
        x = self.input.take()
        current = [c.take() for c in self.current]
        for copy_, module in zip(self.pretrained.modules(), self.backbone.model.modules()):
            copy_.training = module.training  # the same BatchNorm and dropout behaviour: at w = w0 the distance is 0
        dtype = current[0].dtype  # under bf16 autocast the pretrained maps are bf16 too: at w = w0 the distance is 0
        with torch.no_grad(), torch.autocast(x.device.type, dtype=dtype, enabled=dtype != torch.float32):
            pretrained = self.pretrained_maps(x)
        behaviour = delta_penalty(current, pretrained, self.attention)
        head = self.cfg.delta_beta / 2 * sum(w.pow(2).sum() for w in self.head_w)
        return self.cfg.delta_alpha * behaviour + head

    def pretrained_maps(self, x: torch.Tensor, drop: tuple[int, int] | None = None) -> list[torch.Tensor]:
        """The pretrained network's block-end maps on `x` (with channel drop[1] of block drop[0] zeroed, and
        every later block seeing that)."""
        maps, _ = self._pretrained_forward(x, drop)
        return maps

    def _pretrained_forward(self, x, drop=None):
        maps: list[torch.Tensor] = []
        head_input: list[torch.Tensor] = []

        def keep(index, channel):
            def hook(_m, _args, out):
                if drop is not None and drop[0] == index:
                    out = out.clone()
                    out.select(channel, drop[1]).zero_()  # that channel, wherever its dimension is
                maps.append(out.movedim(channel, 1))
                return out
            return hook

        model = self.pretrained
        handles = [model.get_submodule(name).register_forward_hook(keep(i, self.channels[block]))
                   for i, (block, name) in enumerate(self.ends.items())]
        handles.append(model.get_submodule(self.backbone.spec.head).register_forward_pre_hook(
            lambda _m, args: head_input.append(args[0])))
        try:
            model(x)
        finally:
            for handle in handles:
                handle.remove()
        return maps, head_input[0]

    @torch.no_grad()
    def channel_attention(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
        """Per block, softmax(standardised loss rise / 5) over its channels (see the class docstring)."""
        self.pretrained.eval()
        classifier = self._fit_classifier(batches)
        base = [F.cross_entropy(classifier(self._pretrained_forward(x)[1].float()), y) for x, y in batches]
        attention = []
        for index, maps in enumerate(self._pretrained_forward(batches[0][0])[0]):
            rises = torch.zeros(maps.shape[1])
            for channel in range(maps.shape[1]):
                losses = [F.cross_entropy(classifier(self._pretrained_forward(x, (index, channel))[1].float()), y)
                          for x, y in batches]
                rises[channel] = torch.stack(losses).mean() - torch.stack(base).mean()
            spread = rises.std(correction=0)  # np.std, as TLlib
            scores = (rises - rises.mean()) / spread if spread > 0 else torch.zeros_like(rises)
            attention.append(torch.softmax(scores / 5, 0).to(maps.device))
        return attention

    def _fit_classifier(self, batches) -> nn.Linear:
        """A linear classifier on the pretrained network's frozen head inputs (DELTA measures channel importance
        for the target task): 200 full-batch Adam steps, seeded."""
        features = torch.cat([self._pretrained_forward(x)[1].float().flatten(1) for x, _ in batches])
        labels = torch.cat([y for _, y in batches])
        head = self.backbone.model.get_submodule(self.backbone.spec.head)
        generator = torch.Generator().manual_seed(self.cfg.seed)
        classifier = nn.Linear(features.shape[1], head.out_features).to(features.device)
        with torch.no_grad():
            classifier.weight.copy_(torch.randn(classifier.weight.shape, generator=generator) * 0.01)
            classifier.bias.zero_()
        optimizer = torch.optim.Adam(classifier.parameters(), lr=0.01)
        with torch.enable_grad():
            for _ in range(200):
                optimizer.zero_grad()
                F.cross_entropy(classifier(features), labels).backward()
                optimizer.step()
        return classifier.requires_grad_(False)
