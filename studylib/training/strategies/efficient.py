"""Parameter-efficient strategies: a small subset of the pretrained network, or a few parameters added to it,
trains beside the new head."""
from __future__ import annotations

import torch
from torch import nn

from ...core.config import ConfigError, RunConfig, names_of
from ...core.knobs import AT_LEAST_1, POSITIVE, Knob, between
from ...models.backbones import NORM_TYPES, RMS_NORMS, Backbone, meta_model
from .base import EpochPlan, Probe, Strategy, register_strategy


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

    @classmethod
    def check(cls, cfg: RunConfig) -> None:
        """bn_policy=freeze freezes BatchNorm's shifts: where they are the only biases, nothing but the head trains."""
        from ...models.backbones import BACKBONES, get_backbone_spec

        if cfg.bn_policy != "freeze" or cfg.backbone not in BACKBONES:
            return
        head = get_backbone_spec(cfg.backbone).head
        outside_norms = [n for name, m in meta_model(cfg.backbone).named_modules() if not isinstance(m, NORM_TYPES)
                         and not name.startswith(head) for n, _ in m.named_parameters(recurse=False) if n == "bias"]
        if not outside_norms:
            raise ConfigError(f"bitfit with bn_policy=freeze on {cfg.backbone} trains only the head (its biases are "
                              "all BatchNorm shifts, which freeze freezes): linear probing under another name; use "
                              "bn_policy=auto, train or freeze_stats")

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


def _scale_shift(norm: nn.Module, _args, out: torch.Tensor) -> torch.Tensor:
    """SSF after a normalisation layer: y * scale + shift per channel (channels second; last for a LayerNorm or
    RMSNorm over tokens, but second for timm's LayerNorm2d, which normalises (B, C, H, W) maps over C)."""
    scale, shift = norm.ssf_scale.to(out.dtype), norm.ssf_shift.to(out.dtype)  # bf16 activations stay bf16
    if isinstance(norm, (nn.LayerNorm, *RMS_NORMS)) and not type(norm).__name__.endswith("2d"):
        return out * scale + shift
    shape = (1, -1) + (1,) * (out.dim() - 2)
    return out * scale.view(shape) + shift.view(shape)


@register_strategy
class SSF(ParameterSubset):
    """Lian, Zhou, Feng, Wang (NeurIPS 2022), "Scaling & Shifting Your Features": a learnable per-channel scale
    (from 1) and shift (from 0) after every normalisation layer of the backbone, plus the new head, train; the
    pretrained weights stay. The scale and shift are parameters of the norm layer (`<norm>.ssf_scale`,
    `<norm>.ssf_shift`), so they sit in its block. After training, `merge` folds them into the norm layer's own
    affine (gamma' = s gamma, beta' = s beta + t: the same outputs in train and eval mode), so the tested and
    saved network is the plain backbone. A backbone without normalisation layers (VGG-19) is refused."""

    name, label, subset = "ssf", "SSF", "scale-shift"
    description = "a per-channel scale and shift after every normalisation layer, and the new head, train; " \
                  "folded into the norm layers for the test"

    @classmethod
    def check(cls, cfg: RunConfig) -> None:
        from ...models.backbones import BACKBONES

        if cfg.backbone in BACKBONES and not any(isinstance(m, NORM_TYPES)
                                                 for m in meta_model(cfg.backbone).modules()):
            raise ConfigError(f"ssf scales and shifts after normalisation layers and {cfg.backbone} has none; use a "
                              "backbone with BatchNorm (resnet50, densenet121) or strategy bitfit")

    def __init__(self, cfg: RunConfig, backbone: Backbone):
        super().__init__(cfg, backbone)
        head = set(backbone.head_params)
        self.norms = [m for name, m in backbone.model.named_modules() if isinstance(m, NORM_TYPES)  # with an affine
                      and getattr(m, "weight", None) is not None and getattr(m, "bias", None) is not None
                      and not any(n.startswith(name + ".") for n in head)]
        if not self.norms:
            raise ValueError(f"ssf: {backbone.spec.name} has no normalisation layers with an affine to fold into; "
                             "use strategy bitfit, or a backbone with BatchNorm")
        if any(hasattr(norm, "ssf_scale") for norm in self.norms):
            raise ValueError("ssf: this backbone already carries SSF parameters; build a new backbone per run")
        self.handles = []
        for norm in self.norms:  # shaped as the layer's affine: per channel, or LayerNorm's normalised shape
            norm.register_parameter("ssf_scale", nn.Parameter(torch.ones_like(norm.weight, requires_grad=True)))
            norm.register_parameter("ssf_shift", nn.Parameter(torch.zeros_like(norm.weight, requires_grad=True)))
            self.handles.append(norm.register_forward_hook(_scale_shift))
        backbone.reindex()

    def chosen(self) -> list[str]:
        return [n for n, _ in self.backbone.model.named_parameters() if n.endswith((".ssf_scale", ".ssf_shift"))]

    @torch.no_grad()
    def merge(self) -> dict[str, str]:
        for norm, handle in zip(self.norms, self.handles):
            scale, shift = norm.ssf_scale, norm.ssf_shift
            norm.bias.mul_(scale).add_(shift)
            norm.weight.mul_(scale)
            handle.remove()
            del norm.ssf_scale, norm.ssf_shift
        self.handles, self.norms = [], []
        self.backbone.reindex()
        return {}


@register_strategy
class LoRA(ParameterSubset):
    """Hu et al. (ICLR 2022), low-rank adaptation, on convolutions as well as linear layers (as peft implements
    it): each chosen layer W gains a trainable update (alpha / r) * B A of rank r (A from a Kaiming draw, B from 0,
    so training starts from the pretrained network), with dropout on the update's input; W stays frozen. The
    chosen layers are every Conv2d and Linear of `lora_blocks` except the new head, which trains fully. The
    adapters come from the `peft` library; after training, `merge` adds B A into W and removes the adapters, so
    the tested and saved network is the plain backbone (same outputs)."""

    name, label, subset = "lora", "LoRA", "low-rank updates"
    description = "rank-r updates of every convolution and linear layer of lora_blocks, and the new head, " \
                  "train; merged into the weights for the test"
    knobs = (Knob("lora_rank", 8, "rank r of each layer's update", AT_LEAST_1),
             Knob("lora_alpha", 16.0, "the update is scaled by lora_alpha / lora_rank", POSITIVE),
             Knob("lora_dropout", 0.0, "dropout on the input of each update",
                  ("from 0 to below 1", between(0, 1, high_open=True))),
             Knob("lora_blocks", "all", "comma-separated blocks whose layers get updates; all: every block"))

    @classmethod
    def check(cls, cfg: RunConfig) -> None:
        import importlib.util

        from ...models.backbones import BACKBONES, block_names

        if importlib.util.find_spec("peft") is None:
            raise ConfigError("strategy lora needs the peft library: pip install 'studylib[lora]' (or pip install "
                              "peft)")
        if cfg.lora_blocks != "all" and cfg.backbone in BACKBONES:
            unknown = sorted(set(names_of(cfg.lora_blocks)) - set(block_names(cfg.backbone)))
            if unknown:
                raise ConfigError(f"lora_blocks names {unknown}, not blocks of {cfg.backbone}; choose from "
                                  f"{', '.join(block_names(cfg.backbone))} or all")

    def __init__(self, cfg: RunConfig, backbone: Backbone):
        super().__init__(cfg, backbone)
        peft = _peft()
        self.targets = self.target_layers()
        if not self.targets:
            raise ValueError(f"lora: no convolution or linear layer in lora_blocks={cfg.lora_blocks!r} besides the "
                             "head; choose other blocks")
        config = peft.LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                 target_modules=self.targets)
        peft.inject_adapter_in_model(config, backbone.model)
        backbone.reindex()

    def target_layers(self) -> list[str]:
        """Full names of the Conv2d and Linear layers of the chosen blocks, the head left out, and grouped
        (depthwise) convolutions too: peft adapts a grouped convolution only when the rank is a multiple of its
        groups, and a depthwise one (ConvNeXt, EfficientNet) has as many groups as channels; they stay frozen."""
        prefixes = self.backbone.spec.blocks(self.backbone.model)
        chosen = self.all_blocks if self.cfg.lora_blocks == "all" else names_of(self.cfg.lora_blocks)
        head = self.backbone.spec.head
        return [name for name, module in self.backbone.model.named_modules()
                if (isinstance(module, nn.Linear) or isinstance(module, nn.Conv2d) and module.groups == 1)
                and name != head
                and any(name == p or name.startswith(p + ".") for block in chosen for p in prefixes[block])]

    def chosen(self) -> list[str]:
        return [n for n, _ in self.backbone.model.named_parameters() if ".lora_A." in n or ".lora_B." in n]

    @torch.no_grad()
    def merge(self) -> dict[str, str]:
        from ...models.backbones import swap_module

        layers = [(name, module) for name, module in self.backbone.model.named_modules()
                  if isinstance(module, _peft().tuners.lora.LoraLayer)]
        renamed = {}
        for name, module in layers:
            module.merge()
            base = module.get_base_layer()
            renamed.update({f"{name}.base_layer.{p}": f"{name}.{p}" for p, _ in base.named_parameters()})
            swap_module(self.backbone.model, name, base)
        self.backbone.reindex()
        return renamed


def _peft():
    """The peft library, imported when LoRA is used (it brings transformers: seconds to import)."""
    try:
        import peft
        import peft.tuners.lora  # noqa: F401 - merge finds its layer type there
    except ImportError:
        raise ConfigError("strategy lora needs the peft library: pip install 'studylib[lora]' (or pip install peft)"
                          ) from None
    return peft
