"""Frozen-backbone shortcut: compute the head's inputs once, then train the head on them.

Linear probing and the first stage of LP-FT change only the new head while the backbone is
frozen with its normalisation layers in eval mode, so without augmentation every epoch would
recompute identical features. `FrozenFeatures` computes them once per split and serves
batches with the same interface (and the same shuffled order) as `DeviceBatches`.
"""
from __future__ import annotations

import torch
from torch import nn

from ..data.bundle import DeviceBatches, batch_indices, indices_on
from ..models.backbones import Backbone, swap_module


class FrozenFeatures:
    """Features (inputs of the new head) of one split, computed once in eval mode."""

    def __init__(self, backbone: Backbone, data: DeviceBatches, autocast):
        self.batch_size = data.batch_size
        self.weights = data.weights
        self.features = self._compute(backbone, data, autocast)
        self.labels = data.labels.to(self.features.device)

    @staticmethod
    @torch.no_grad()
    def _compute(backbone: Backbone, data: DeviceBatches, autocast) -> torch.Tensor:
        model = backbone.model
        was_training = model.training
        head = swap_module(model, backbone.spec.head, nn.Identity())  # the model now ends where the head begins
        try:
            model.eval()
            chunks = []
            for x, _ in data.batches():
                with autocast():
                    chunks.append(model(x).float())
        finally:
            swap_module(model, backbone.spec.head, head)
            model.train(was_training)
        return torch.cat(chunks)

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def batches(self, shuffle: bool = False, generator: torch.Generator | None = None, augment: bool = False,
                max_batches: int = 0):
        """Same order as DeviceBatches.batches for the same generator state.

        Args:
            shuffle: shuffle (or draw class-balanced, when the split has sampling weights) instead of keeping the order.
            generator: random generator that orders the batches.
            augment: ignored: the features are fixed (kept for DeviceBatches' interface).
            max_batches: stop after this many batches; 0: all.
        """
        order = batch_indices(len(self.labels), self.batch_size, shuffle, self.weights, generator, max_batches)
        for index in indices_on(order, self.features.device):
            yield self.features[index], self.labels[index]
