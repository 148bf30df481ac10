"""Layer-selective strategies beyond the study: Auto-SNR, surgical fine-tuning, discriminative learning rates."""
from __future__ import annotations

import torch

from ...core.config import RunConfig
from ...core.knobs import Knob, between
from .base import EpochPlan, Probe, Strategy, register_strategy, scale_by_max
from .study import PROBE_BATCHES


@register_strategy
class AutoSNR(Strategy):
    """Lee et al. (ICLR 2023) Auto-SNR: freeze tensors whose gradient signal-to-noise ratio is low.

    Per element, SNR = mean^2 / variance of the gradient over `rgn_probe_batches` batches
    (at least 2); averaged over the tensor, divided by the largest tensor SNR. Tensors
    under `snr_threshold` are frozen for the epoch; the others train at the base rate.
    """

    name, label = "auto_snr", "Auto-SNR"
    knobs = (PROBE_BATCHES, Knob("snr_threshold", 0.1, "tensors whose SNR / max SNR is under this are frozen for the "
                                 "epoch", ("from 0 to 1", between(0, 1))))
    description = "per epoch, freeze tensors whose gradient SNR / max SNR < snr_threshold; others train at lr"
    default_bn = "freeze"
    default_dropout = "eval"

    def plan(self, epoch: int, probe: Probe) -> EpochPlan:
        names = self.params_of(self.all_blocks)
        snr = self.gradient_snr(names, probe)
        scaled = scale_by_max(snr)
        keep = [n for n in names if scaled[n] >= self.cfg.snr_threshold or n in self.head]
        return EpochPlan(keep, self.uniform(keep), f"{len(keep)}/{len(names)} tensors", self.whole_run(epoch),
                         weight_decay=self.cfg.weight_decay, ratios=scaled, max_tensor=max(snr, key=snr.get))

    def gradient_snr(self, names: list[str], probe: Probe) -> dict[str, float]:
        sums: dict[str, torch.Tensor] = {}
        squares: dict[str, torch.Tensor] = {}
        count = [0]

        def add(grads: dict[str, torch.Tensor]) -> None:
            count[0] += 1
            for n, g in grads.items():
                g = g.detach().float()
                sums[n] = sums.get(n, 0) + g
                squares[n] = squares.get(n, 0) + g * g

        probe(names, max(2, self.cfg.rgn_probe_batches), add)
        out = {}
        for n in names:
            if n not in sums:
                out[n] = 0.0
                continue
            mean = sums[n] / count[0]
            var = (squares[n] / count[0] - mean * mean).clamp_min(0)
            out[n] = float((mean * mean / (var + 1e-12)).mean())
        return out


@register_strategy
class Surgical(Strategy):
    """Surgical fine-tuning (Lee et al., ICLR 2023): one chosen block and the head train."""

    name, label = "surgical", "Surgical"
    knobs = (Knob("surgical_block", "", "the one block (besides the head) that trains; empty: the first block"),)
    description = "only surgical_block (default: the first block) and the head train"

    @classmethod
    def resolve(cls, cfg: RunConfig) -> RunConfig:
        """The empty surgical_block is the backbone's first block: config.json records which."""
        from ...models.backbones import BACKBONES, block_names

        cfg = super().resolve(cfg)
        if not cfg.surgical_block and cfg.backbone in BACKBONES:
            cfg = cfg.replace(surgical_block=block_names(cfg.backbone)[0])
        return cfg

    def plan(self, epoch: int, probe: Probe) -> EpochPlan:
        block = self.cfg.surgical_block or self.all_blocks[0]
        if block not in self.all_blocks:
            raise ValueError(f"surgical_block={block!r} is not a block of {self.backbone.spec.name}; "
                             f"choose one of {', '.join(self.all_blocks)}")
        names = list(dict.fromkeys(self.params_of([block]) + self.head))
        return EpochPlan(names, self.uniform(names), block, self.whole_run(epoch), weight_decay=self.cfg.weight_decay)


@register_strategy
class DiscriminativeLR(Strategy):
    """ULMFiT / fastai discriminative learning rates: each block below the head at dlr_decay x the rate above."""

    name, label = "discriminative_lr", "Disc-LR"
    knobs = (Knob("dlr_decay", 0.5, "each block below the head trains at this times the lr above it",
                  ("above 0 and at most 1 (1: every block at the head's rate)", between(0, 1, low_open=True))),)
    description = "all blocks train; block k below the head at lr * dlr_decay**k"

    def plan(self, epoch: int, probe: Probe) -> EpochPlan:
        blocks = self.all_blocks
        lrs = {}
        for depth, block in enumerate(reversed(blocks)):
            lrs.update(self.uniform(self.params_of([block]), self.cfg.lr * self.cfg.dlr_decay ** depth))
        return EpochPlan(list(lrs), lrs, "all", self.whole_run(epoch), weight_decay=self.cfg.weight_decay)
