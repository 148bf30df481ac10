"""What a backbone is to studylib: its spec (builder, block map, head, weights) and the error of weights that cannot
load. Its own module so the registry (backbones.py) and the specs made on demand (timm_backbones.py) share it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..data.bundle import IMAGENET_MEAN, IMAGENET_STD


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
    # the input statistics its weights were trained with (each image is normalised with them): ImageNet's for
    # torchvision's, timm's per model (0.5 for most ViTs)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
