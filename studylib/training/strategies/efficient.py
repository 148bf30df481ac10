"""Parameter-efficient strategies: a small subset of the pretrained network trains beside the new head."""
from __future__ import annotations

from ...core.config import ConfigError, RunConfig
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
