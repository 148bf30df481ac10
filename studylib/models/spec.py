"""What a backbone is to studylib: its spec (builder, block map, head, weights) and the error of weights that cannot
load. Its own module so the registry (backbones.py) and the specs made on demand (timm_backbones.py) share it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn


class WeightsError(RuntimeError):
    """Weights that cannot be loaded; the message says how to get or pass them."""


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    description: str
    build: Callable[[], nn.Module]  # the architecture with its original head
    blocks: Callable[[nn.Module], dict[str, list[str]]]  # block -> module-name prefixes, input to output
    head: str  # dotted name of the final Linear, replaced by a new head
    weights_enum: type | Callable[[], type] | None = None  # torchvision weights enum (or a function returning it)
    channels_last: bool = True  # faster on CUDA (DenseNet is slower with it: docs/design.md section 5)
    min_size: int = 1  # smallest input side its downsampling stages leave at least one pixel for
    # weights by name other than torchvision's: (name, progress) -> state dict, and the names it takes (timm's)
    named_weights: Callable[[str, bool], dict] | None = None
    weight_names: tuple[str, ...] = ()
