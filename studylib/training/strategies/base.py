"""What a strategy is (`Strategy`, `EpochPlan`), the registry, and helpers the families share.

A strategy answers `plan(epoch, probe)` with an `EpochPlan`; the engine applies it
(requires_grad, BatchNorm modes, optimizer groups) and trains.
"""
from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol

import torch

from ...core import knobs
from ...core.config import FIELDS, RunConfig
from ...core.knobs import Knob
from ...core.registry import Registry
from ...models.backbones import Backbone


class Probe(Protocol):
    """What a strategy may measure on the training data before it plans an epoch (the engine's TrainingProbe)."""

    def __call__(self, names: list[str], n_batches: int, on_grads: Callable[[dict[str, torch.Tensor]], None]) -> None:
        """Run n training batches forward/backward with only `names` requiring grad; on_grads({name: grad})
        after each (Auto-RGN, Auto-SNR)."""

    def batches(self, n_batches: int, seed: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """n training batches (images on the device, labels), drawn without moving the batch order; a `seed`
        draws the same batches whenever it is asked (DELTA measures once per run, and again after a resume)."""


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

    def merge(self) -> dict[str, str]:
        """After training, before the test: fold what the strategy added to the network into its own layers
        (SSF, LoRA), so the tested and saved network has the backbone's architecture and the same outputs.
        Returns the parameters it renamed (name while training -> name after), for measures keyed by name."""
        return {}

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
    for prefix, kind in DERIVED_KINDS.items():  # a weight-space ensemble of another strategy's runs
        if name.startswith(prefix) and name[len(prefix):] in STRATEGIES:
            return f"{kind}({strategy_label(name[len(prefix):])}) {rest}".strip()
    short = STRATEGIES.get(name).label if name in STRATEGIES else ""
    return f"{short or name} {rest}".strip()


# Derived arms (study/derived.py: no training, weights combined) are named <prefix><the strategy combined>.
DERIVED_KINDS = {"wise_": "WiSE-FT", "soup_uniform_": "Soup", "soup_greedy_": "Greedy soup"}


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


def cosine_factor(position: int, length: int) -> float:
    """Cosine decay from 1 towards 0 over `length` epochs, evaluated per epoch."""
    return 0.5 * (1 + math.cos(math.pi * position / max(1, length)))
