"""Fine-tuning strategies: what trains each epoch, at which learning rate, with which extra loss.

A strategy answers `plan(epoch, probe)` with an `EpochPlan`; the engine applies it
(requires_grad, BatchNorm modes, optimizer groups) and trains. Definitions follow
docs/design.md section 2; each class docstring says where it comes from.
"""
from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..core import knobs
from ..core.config import FIELDS, ConfigError, RunConfig
from ..core.knobs import AT_LEAST_0, AT_LEAST_1, POSITIVE, Knob, between
from ..core.registry import Registry
from ..models.backbones import Backbone

# probe(names, n_batches, on_grads): runs n training batches forward/backward with only
# `names` requiring grad and calls on_grads({name: grad}) after each one.
Probe = Callable[[list[str], int, Callable[[dict[str, torch.Tensor]], None]], None]


@dataclass
class EpochPlan:
    trainable: list[str]  # parameter names that train this epoch
    lrs: dict[str, float]  # parameter name -> learning rate before the schedule
    stage: str  # label for logs
    span: tuple[int, int]  # (epoch within the schedule span, span length) for the cosine schedule
    final_stage: bool = True  # early stopping only counts in the last stage
    reset_optimizer: bool = False  # drop optimizer state (otherwise kept for parameters that stay)
    weight_decay: float = 0.0
    ratios: dict[str, float] = field(default_factory=dict)  # Auto-RGN / Auto-SNR score per tensor, for logs
    max_tensor: str = ""  # Auto-RGN / Auto-SNR: the tensor whose score set the maximum (history.csv, tensors.csv)


class Strategy(abc.ABC):
    """What every strategy is: a `plan` per epoch (which tensors train, at which rate) and, optionally,
    a `penalty()` added to the loss. That is the whole contract for a new strategy: define `plan`,
    and `penalty` if it regularises; the engine backpropagates the penalty with autograd. A strategy
    may also override `backward` with a faster fused gradient (the SP strategies do; a test checks it
    against autograd). `knobs` declares the settings it owns (name, default, help, range: one place,
    core/knobs.py), `reads` the protocol fields it uses, and `check(cfg)` refuses configurations it
    cannot run, before any run starts."""

    name = ""
    label = ""
    description = ""
    default_bn = "train"
    default_dropout = "train"
    reads: tuple[str, ...] = ("lr", "weight_decay")  # the RunConfig fields it uses besides its knobs
    knobs: tuple[Knob, ...] = ()  # its own settings; a subclass adds to its bases' (see all_knobs)
    study = False  # one of the eight strategies of the study

    def __init__(self, cfg: RunConfig, backbone: Backbone):
        self.cfg, self.backbone = cfg, backbone
        resolved = self.resolve(cfg)
        self.bn_policy, self.dropout = resolved.bn_policy, resolved.dropout
        self.norm_params = set(_norm_param_names(backbone))

    @classmethod
    def all_knobs(cls) -> tuple[Knob, ...]:
        """Its knobs and those of its base classes (the SP strategies share `sp_beta`)."""
        found = {k.name: k for klass in reversed(cls.__mro__) for k in vars(klass).get("knobs", ())}
        return tuple(found.values())

    @classmethod
    def settings(cls) -> tuple[str, ...]:
        """Every config key it reads: the fields, then its knobs (`studylib strategies`, tuning budgets)."""
        return (*cls.reads, *(k.name for k in cls.all_knobs()))

    @classmethod  # noqa: B027 - optional override hook
    def check(cls, cfg: RunConfig) -> None:
        """Raise ConfigError for a configuration this strategy cannot run as meant."""

    @classmethod
    def resolve(cls, cfg: RunConfig) -> RunConfig:
        """`cfg` with every `auto` this strategy decides replaced by its value (bn_policy, dropout, and
        what a strategy adds, e.g. surgical's block), so config.json and the analysis see what ran."""
        changes = {key: getattr(cls, f"default_{short}") for key, short in (("bn_policy", "bn"), ("dropout", "dropout"))
                   if getattr(cfg, key) == "auto"}
        return cfg.replace(**changes) if changes else cfg

    # helpers shared by every strategy -------------------------------------------------
    def params_of(self, blocks: list[str]) -> list[str]:
        """Parameters of `blocks`, less normalisation parameters when the policy freezes them."""
        names = [p for b in blocks for p in self.backbone.blocks[b]]
        return self._allowed(names)

    def _allowed(self, names: list[str]) -> list[str]:
        if self.bn_policy == "freeze":
            return [n for n in names if n not in self.norm_params]
        return names

    @property
    def all_blocks(self) -> list[str]:
        return self.backbone.block_names

    @property
    def head(self) -> list[str]:
        return list(self.backbone.head_params)

    def uniform(self, names: list[str], lr: float | None = None) -> dict[str, float]:
        return {n: self.cfg.lr if lr is None else lr for n in names}

    def whole_run(self, epoch: int) -> tuple[int, int]:
        return epoch, self.cfg.max_epochs

    # what a strategy defines ------------------------------------------------------------
    @abc.abstractmethod
    def plan(self, epoch: int, probe: Probe) -> EpochPlan:
        """Which parameters train in `epoch`, at which rates (`probe` measures gradients when needed)."""

    def penalty(self) -> torch.Tensor | None:
        """Extra loss term added to the cross-entropy (differentiable), or None."""
        return None

    @property
    def has_penalty(self) -> bool:
        """Whether the loss carries a penalty (then features cannot be cached: the penalty needs the weights)."""
        return type(self).penalty is not Strategy.penalty

    def backward(self, loss: torch.Tensor) -> torch.Tensor | None:
        """Backpropagate the loss plus the penalty; returns the penalty's value (None without one)."""
        penalty = self.penalty()
        (loss if penalty is None else loss + penalty).backward()
        return penalty


STRATEGIES: Registry[type[Strategy]] = Registry("strategy", "strategies", on_remove=knobs.withdraw)


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Register `cls` under `cls.name` and declare its knobs (from then on config keys like any field)."""
    knobs.declare(cls.name, cls.all_knobs(), reserved=set(FIELDS))
    return STRATEGIES.add(cls.name, cls)


def get_strategy(name: str) -> type[Strategy]:
    return STRATEGIES.get(name)


def list_strategies() -> list[str]:
    return STRATEGIES.names()


def strategy_label(arm: str) -> str:
    """'lp_ft' -> 'LP-FT'; an arm with variant fields keeps them ('FT [bn_policy=freeze]'); unknown names stay;
    a run whose config lost its strategy shows '?'."""
    if not isinstance(arm, str):
        return "?"
    name, _, rest = arm.partition(" ")
    short = STRATEGIES.get(name).label if name in STRATEGIES else ""
    return f"{short or name} {rest}".strip()


def create_strategy(cfg: RunConfig, backbone: Backbone) -> Strategy:
    return get_strategy(cfg.strategy)(cfg, backbone)


def _norm_param_names(backbone: Backbone) -> list[str]:
    ids = {id(p) for block in backbone.block_names for module in backbone.norm_modules(block)
           for p in module.parameters(recurse=False)}
    return [n for n, p in backbone.model.named_parameters() if id(p) in ids]


def scale_by_max(scores: dict[str, float]) -> dict[str, float]:
    """Scores divided by the largest one (all 1 when every score is 0)."""
    top = max(scores.values())
    return {n: (s / top if top > 0 else 1.0) for n, s in scores.items()}


def stage_position(epoch: int, lengths: list[int], total: int) -> tuple[int, int, int]:
    """(stage index, epoch within stage, stage length); the last stage runs to `total`."""
    start = 0
    for index, length in enumerate(lengths):
        if epoch < start + length:
            return index, epoch - start, length
        start += length
    return len(lengths), epoch - start, max(1, total - start)


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
        from ..models.backbones import BACKBONES, block_names

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
        from ..models.backbones import BACKBONES, block_names

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


class ParameterSubset(Strategy):
    """Parameter-efficient tuning by a fixed subset: `chosen()` names the backbone tensors that train every
    epoch, beside the new head (which always trains fully); the rest stays at its pretrained values."""

    subset = ""  # what the subset is, for the stage label and messages

    def chosen(self) -> list[str]:
        raise NotImplementedError

    def plan(self, epoch: int, probe: Probe) -> EpochPlan:
        names = list(dict.fromkeys(self._allowed(self.chosen()) + self.head))
        return EpochPlan(names, self.uniform(names), self.subset, self.whole_run(epoch),
                         weight_decay=self.cfg.weight_decay)


@register_strategy
class BitFit(ParameterSubset):
    """Ben Zaken, Ravfogel, Goldberg (ACL 2022), BitFit: only the bias terms train, plus the new head.

    Every tensor named `bias` counts: convolution and linear biases and BatchNorm's shift (beta). ResNet-50
    and DenseNet-121 convolutions have no bias, so there BitFit trains the BatchNorm shifts; VGG-19 has no
    BatchNorm, so there it trains the convolution and classifier biases.
    """

    name, label, subset = "bitfit", "BitFit", "biases"
    description = "only bias terms (BatchNorm shifts included) and the new head train"

    def chosen(self) -> list[str]:
        head = set(self.head)
        return [n for n, _ in self.backbone.model.named_parameters() if n.endswith("bias") and n not in head]


@register_strategy
class NormTune(ParameterSubset):
    """Frankle, Schwab, Morcos (ICLR 2021), "Training BatchNorm and only BatchNorm": only the normalisation
    layers' affine parameters (scale gamma and shift beta) train, plus the new head. A backbone without
    normalisation layers (VGG-19) is refused: it would be linear probing under another name."""

    name, label, subset = "norm_tune", "Norm", "normalisation"
    description = "only normalisation layers' scale and shift and the new head train"

    @classmethod
    def check(cls, cfg: RunConfig) -> None:
        if cfg.bn_policy == "freeze":
            raise ConfigError("norm_tune with bn_policy=freeze would freeze the only layers it trains (linear probing "
                              "under another name); use bn_policy=auto, train or freeze_stats")

    def chosen(self) -> list[str]:
        head = set(self.head)
        names = [n for n, _ in self.backbone.model.named_parameters() if n in self.norm_params and n not in head]
        if not names:
            raise ValueError(f"norm_tune: {self.backbone.spec.name} has no normalisation layers, so only the head "
                             "would train; use strategy lp for that, or a backbone with BatchNorm")
        return names


def cosine_factor(position: int, length: int) -> float:
    """Cosine decay from 1 towards 0 over `length` epochs, evaluated per epoch."""
    return 0.5 * (1 + math.cos(math.pi * position / max(1, length)))


STUDY_STRATEGIES = tuple(name for name, cls in STRATEGIES.items() if cls.study)  # in registration order
