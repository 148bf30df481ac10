"""The study's eight strategies (Davila et al. 2024): FT, LP, gradual unfreezing both ways, L1-SP, L2-SP,
LP-FT and Auto-RGN. Definitions follow docs/design.md section 2; each docstring says where it comes from."""
from __future__ import annotations

import torch

from ...core.config import ConfigError, RunConfig
from ...core.knobs import AT_LEAST_0, AT_LEAST_1, POSITIVE, Knob
from ...models.backbones import Backbone
from .base import EpochPlan, Probe, Strategy, register_strategy, stage_position


@register_strategy
class FullFineTuning(Strategy):
    """The baseline every gain is measured against: a new head, every parameter trains at the base rate."""

    name, label, study = "ft", "FT", True
    description = "full fine-tuning: new head, every parameter trains"

    def plan(self, epoch: int, probe: Probe) -> EpochPlan:
        names = self.params_of(self.all_blocks)
        return EpochPlan(names, self.uniform(names), "all", self.whole_run(epoch), weight_decay=self.cfg.weight_decay)


@register_strategy
class LinearProbe(Strategy):
    """Backbone frozen and in eval mode (BatchNorm statistics and dropout fixed); only the new head trains."""

    name, label, study = "lp", "LP", True
    description = "linear probing: backbone frozen and in eval mode; only the new head trains"

    def plan(self, epoch: int, probe: Probe) -> EpochPlan:
        return EpochPlan(self.head, self.uniform(self.head), "head", self.whole_run(epoch),
                         weight_decay=self.cfg.weight_decay)


class GradualUnfreezing(Strategy):
    """ULMFiT-style gradual unfreezing; one block more every `gu_epochs_per_stage` epochs."""

    knobs = (Knob("gu_epochs_per_stage", 2, "epochs before the next block unfreezes", AT_LEAST_1),)

    @classmethod
    def check(cls, cfg: RunConfig) -> None:
        from ...models.backbones import BACKBONES, block_names

        if cfg.backbone not in BACKBONES:
            return  # check_config names the unknown backbone
        stages = len(block_names(cfg.backbone))
        needed = (stages - 1) * cfg.gu_epochs_per_stage + 1  # the last stage needs at least one epoch
        if needed > cfg.max_epochs:
            fits = (cfg.max_epochs - 1) // (stages - 1)  # the longest stage that still reaches the last one
            other = f", or lower gu_epochs_per_stage to {fits}" if fits >= 1 else ""
            raise ConfigError(
                f"{cfg.strategy} on {cfg.backbone} has {stages} stages of "
                f"gu_epochs_per_stage={cfg.gu_epochs_per_stage} "
                f"epochs and needs at least {needed} epochs to train every block, but max_epochs={cfg.max_epochs}; "
                f"raise max_epochs to {needed} or more{other}")

    def trainable_blocks(self, stage: int) -> list[str]:
        raise NotImplementedError

    def plan(self, epoch: int, probe: Probe) -> EpochPlan:
        n_stages = len(self.all_blocks)
        lengths = [self.cfg.gu_epochs_per_stage] * (n_stages - 1)
        stage, _, _ = stage_position(epoch, lengths, self.cfg.max_epochs)
        blocks = self.trainable_blocks(stage)
        names = self.params_of(blocks)
        return EpochPlan(names, self.uniform(names), "+".join(blocks), self.whole_run(epoch),
                         final_stage=stage == n_stages - 1, weight_decay=self.cfg.weight_decay)


@register_strategy
class GradualLastFirst(GradualUnfreezing):
    name, label, study = "gu_last_first", "G-LF", True
    description = "gradual unfreezing from the head towards the input, one block per stage"

    def trainable_blocks(self, stage: int) -> list[str]:
        return self.all_blocks[len(self.all_blocks) - 1 - stage:]


@register_strategy
class GradualFirstLast(GradualUnfreezing):
    name, label, study = "gu_first_last", "G-FL", True
    description = "gradual unfreezing from the input towards the output; the head trains from the start"

    def trainable_blocks(self, stage: int) -> list[str]:
        blocks = self.all_blocks
        return blocks if stage >= len(blocks) - 1 else blocks[:stage] + [blocks[-1]]


class SPRegularised(Strategy):
    """Li, Grandvalet, Davoine (ICML 2018): penalise the distance to the pretrained weights w0.

    The penalty covers every backbone (non-head) parameter; the new head gets beta/2 ||w||^2.
    No plain weight decay is applied.
    """

    alpha_field = ""  # the subclass's knob that weighs the distance
    reads = ("lr",)  # no plain weight decay: the penalty replaces it
    knobs = (Knob("sp_beta", 0.01, "weight of 1/2 ||w||^2 over head parameters", AT_LEAST_0),)

    def __init__(self, cfg: RunConfig, backbone: Backbone):
        super().__init__(cfg, backbone)
        params = dict(backbone.model.named_parameters())
        head = set(self.head)
        self.backbone_names = [n for n in params if n not in head]
        self.w = [params[n] for n in self.backbone_names]
        self.w0 = [p.detach().clone() for p in self.w]  # frozen copy of the starting weights
        self.head_w = [params[n] for n in self.head]
        self.alpha = getattr(cfg, self.alpha_field)

    def plan(self, epoch: int, probe: Probe) -> EpochPlan:
        names = self.params_of(self.all_blocks)
        return EpochPlan(names, self.uniform(names), "all", self.whole_run(epoch), weight_decay=0.0)

    def penalty(self) -> torch.Tensor:
        diffs = torch._foreach_sub(self.w, self.w0)
        head = self.cfg.sp_beta / 2 * sum(w.pow(2).sum() for w in self.head_w)
        return self.alpha * self.distance(diffs) + head

    def backward(self, loss: torch.Tensor) -> torch.Tensor:
        """The cross-entropy through autograd, the penalty's gradient added directly: the same as
        backpropagating loss + penalty(), with a few fused element-wise passes instead of an autograd
        graph over every weight (a test checks the two agree)."""
        loss.backward()
        return self.add_penalty_grad()

    @torch.no_grad()
    def add_penalty_grad(self) -> torch.Tensor:
        diffs = torch._foreach_sub(self.w, self.w0)
        value = self.alpha * self.distance(diffs)
        pairs = [(w.grad, d) for w, d in zip(self.w, self.distance_grad(diffs)) if w.grad is not None]
        if pairs:
            torch._foreach_add_([g for g, _ in pairs], [d for _, d in pairs], alpha=self.alpha)
        heads = [w for w in self.head_w if w.grad is not None]
        if heads:
            value = value + self.cfg.sp_beta / 2 * torch.stack(torch._foreach_norm(heads)).pow(2).sum()
            torch._foreach_add_([w.grad for w in heads], heads, alpha=self.cfg.sp_beta)
        return value

    def distance(self, diffs: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def distance_grad(self, diffs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Gradient of `distance` with respect to w, given w - w0 (may overwrite `diffs`)."""
        raise NotImplementedError


@register_strategy
class L1SP(SPRegularised):
    name, label, study = "l1_sp", "L1-SP", True
    description = "all parameters train; loss + alpha * sum |w - w0| (backbone) + beta/2 ||w_head||^2"
    alpha_field = "l1sp_alpha"
    knobs = (Knob(alpha_field, 1e-4, "weight of sum |w - w0| over backbone parameters", AT_LEAST_0),)

    def distance(self, diffs: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(torch._foreach_norm(diffs, 1)).sum()

    def distance_grad(self, diffs: list[torch.Tensor]) -> list[torch.Tensor]:
        torch._foreach_sign_(diffs)  # in place: the subgradient autograd uses, 0 where w == w0
        return diffs


@register_strategy
class L2SP(SPRegularised):
    name, label, study = "l2_sp", "L2-SP", True
    description = "all parameters train; loss + alpha/2 ||w - w0||^2 (backbone) + beta/2 ||w_head||^2"
    alpha_field = "l2sp_alpha"
    knobs = (Knob(alpha_field, 0.01, "weight of 1/2 ||w - w0||^2 over backbone parameters", AT_LEAST_0),)

    def distance(self, diffs: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(torch._foreach_norm(diffs, 2)).pow(2).sum() / 2

    def distance_grad(self, diffs: list[torch.Tensor]) -> list[torch.Tensor]:
        return diffs


@register_strategy
class LPFT(Strategy):
    """Kumar et al. (ICLR 2022): linear probe, then fine-tune everything from the probed head.

    The second stage starts a fresh optimizer and its own cosine schedule at lr * lpft_lr_factor;
    BatchNorm statistics stay frozen by default, as in the authors' setting.
    """

    name, label, study = "lp_ft", "LP-FT", True
    description = "linear probe for lp_epochs, then fine-tune all at lr * lpft_lr_factor from the probed head"
    default_bn = "freeze_stats"
    knobs = (Knob("lp_epochs", 5, "epochs of the linear-probing stage", AT_LEAST_1),
             Knob("lpft_lr_factor", 0.1, "the second stage trains at lr times this factor", POSITIVE))

    @classmethod
    def check(cls, cfg: RunConfig) -> None:
        if cfg.lp_epochs >= cfg.max_epochs:
            raise ConfigError(f"lp_ft with lp_epochs={cfg.lp_epochs} and max_epochs={cfg.max_epochs} never reaches "
                              "its fine-tuning stage; lower lp_epochs or raise max_epochs")

    def plan(self, epoch: int, probe: Probe) -> EpochPlan:
        stage, at, length = stage_position(epoch, [self.cfg.lp_epochs], self.cfg.max_epochs)
        if stage == 0:
            return EpochPlan(self.head, self.uniform(self.head), "lp", (at, length), final_stage=False,
                             weight_decay=self.cfg.weight_decay)
        names = self.params_of(self.all_blocks)
        lr = self.cfg.lr * self.cfg.lpft_lr_factor
        return EpochPlan(names, self.uniform(names, lr), "ft", (at, length), reset_optimizer=at == 0,
                         weight_decay=self.cfg.weight_decay)


PROBE_BATCHES = Knob("rgn_probe_batches", 5, "training batches probed at the start of each epoch", AT_LEAST_1)


@register_strategy
class AutoRGN(Strategy):
    """Lee et al. (ICLR 2023) Auto-RGN, as in the official code.

    At the start of every epoch: RGN_i = mean over `rgn_probe_batches` batches of
    ||grad_i|| / ||w_i||, per tensor; lr_i = base_lr * RGN_i / max RGN; a fresh Adam
    (state reset) with these rates. BatchNorm is frozen and in eval mode by default
    (found by module type, unlike the reference code's name match), and so is dropout
    (the reference keeps the whole model in eval mode; `dropout: train` changes it).

    `rgn_max_over: all` (the reference) takes the maximum over every trainable tensor. With a
    freshly initialised head, as in the study, the head usually holds the largest RGN and every
    backbone tensor trains at a small fraction of lr; `backbone` takes the maximum over the
    backbone's tensors only and trains the new head at lr.
    """

    name, label, study = "auto_rgn", "Auto-RGN", True
    knobs = (PROBE_BATCHES,
             Knob("rgn_max_over", "all", "the largest RGN is taken over all trainable tensors (reference code) or "
                  "backbone (the new head then trains at lr)", role="method", choices=("all", "backbone")))
    description = "per-tensor lr = lr * RGN / max RGN, RGN = ||grad|| / ||w|| probed each epoch; optimizer reset"
    default_bn = "freeze"
    default_dropout = "eval"

    def plan(self, epoch: int, probe: Probe) -> EpochPlan:
        names = self.params_of(self.all_blocks)
        rgn = self.relative_gradient_norms(names, probe)
        head = set(self.head) if self.cfg.rgn_max_over == "backbone" else set()
        over = {n: v for n, v in rgn.items() if n not in head} or rgn
        top = max(over, key=over.get)
        scaled = {n: 1.0 if n in head else (v / over[top] if over[top] > 0 else 1.0) for n, v in rgn.items()}
        lrs = {n: self.cfg.lr * s for n, s in scaled.items()}
        return EpochPlan(names, lrs, "all", self.whole_run(epoch), reset_optimizer=True,
                         weight_decay=self.cfg.weight_decay, ratios=scaled, max_tensor=top)

    def relative_gradient_norms(self, names: list[str], probe: Probe) -> dict[str, float]:
        params = dict(self.backbone.model.named_parameters())
        totals = dict.fromkeys(names, 0.0)
        count = [0]

        def add(grads: dict[str, torch.Tensor]) -> None:
            count[0] += 1
            for n in names:
                weight_norm = params[n].detach().float().norm().item()
                grad_norm = grads[n].float().norm().item() if n in grads else 0.0
                totals[n] += grad_norm / weight_norm if weight_norm > 0 else 0.0

        probe(names, self.cfg.rgn_probe_batches, add)
        return {n: v / max(1, count[0]) for n, v in totals.items()}
