"""Fine-tuning strategies: what trains each epoch, at which learning rate, with which extra loss.

One registry (`STRATEGIES`), one module per family: `base` (the contract and shared helpers), `study` (the
study's eight), `layerwise` (Auto-SNR, surgical, discriminative rates), `efficient` (BitFit, norm-only, SSF, LoRA),
`penalties` (BSS, DELTA: regularisers on features).
Importing this package registers them all, in that order. Definitions follow docs/design.md section 2.
"""
from .base import (
    STRATEGIES,
    EpochPlan,
    Probe,
    Strategy,
    cosine_factor,
    create_strategy,
    get_strategy,
    list_strategies,
    register_strategy,
    scale_by_max,
    stage_position,
    strategy_label,
)
from .study import (
    L1SP,
    L2SP,
    LPFT,
    AutoRGN,
    FullFineTuning,
    GradualFirstLast,
    GradualLastFirst,
    GradualUnfreezing,
    LinearProbe,
    SPRegularised,
)

# isort: split
# (the registration order is the order of every listing: the study's eight first)
from .layerwise import AutoSNR, DiscriminativeLR, Surgical

# isort: split
from .efficient import SSF, BitFit, LoRA, NormTune, ParameterSubset

# isort: split
from .penalties import BSS, DELTA, bss_penalty, delta_penalty

STUDY_STRATEGIES = tuple(name for name, cls in STRATEGIES.items() if cls.study)  # in registration order

__all__ = ["BSS", "DELTA", "SSF", "STRATEGIES", "STUDY_STRATEGIES", "AutoRGN", "AutoSNR", "BitFit", "DiscriminativeLR",
           "EpochPlan", "FullFineTuning", "GradualFirstLast", "GradualLastFirst", "GradualUnfreezing", "L1SP", "L2SP",
           "LPFT", "LinearProbe", "LoRA", "NormTune", "ParameterSubset", "Probe", "SPRegularised", "Strategy",
           "Surgical", "bss_penalty", "cosine_factor", "create_strategy", "delta_penalty", "get_strategy",
           "list_strategies", "register_strategy", "scale_by_max", "stage_position", "strategy_label"]
