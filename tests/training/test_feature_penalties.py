"""BSS and DELTA against their definitions: each penalty computed independently (numpy, the test's own hooks
and its own copy of the pretrained network) on fixed tensors and on a training forward pass."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from studylib import RunConfig
from studylib.models.backbones import create_backbone
from studylib.training.strategies import BSS, DELTA, bss_penalty, delta_penalty


def numpy_bss(features: np.ndarray, k: int) -> float:
    singular = np.linalg.svd(features, compute_uv=False)  # descending
    return float(np.sum(np.sort(singular)[:k] ** 2))


def numpy_delta(current, pretrained, attention) -> float:
    """Per sample and block: sum over channels of W_c * c/(hw) * ||diff_c||^2 / 2 (plain: ||diff||^2 / 2),
    averaged over the batch; loops, no vectorisation shared with the library."""
    total = 0.0
    batch = current[0].shape[0]
    for block, (now, then) in enumerate(zip(current, pretrained)):
        for i in range(batch):
            channels = now.shape[1]
            for c in range(channels):
                squared = float(np.sum((now[i, c] - then[i, c]) ** 2))
                positions = now[i, c].size
                weight = 1.0 if attention is None else attention[block][c] * channels / positions
                total += 0.5 * weight * squared
    return total / batch


@pytest.mark.parametrize("k", [1, 3])
def test_bss_is_the_sum_of_the_k_smallest_squared_singular_values(k):
    features = np.random.default_rng(0).normal(size=(8, 5))
    assert bss_penalty(torch.tensor(features), k).item() == pytest.approx(numpy_bss(features, k), rel=1e-5)


@pytest.mark.parametrize("with_attention", [True, False])
def test_delta_term_matches_its_definition_on_fixed_maps(with_attention):
    rng = np.random.default_rng(1)
    current = [rng.normal(size=(3, 4, 5, 5)), rng.normal(size=(3, 6, 2, 2))]
    pretrained = [rng.normal(size=m.shape) for m in current]
    attention = [rng.dirichlet(np.ones(m.shape[1])) for m in current] if with_attention else None
    got = delta_penalty([torch.tensor(m) for m in current], [torch.tensor(m) for m in pretrained],
                        [torch.tensor(a) for a in attention] if attention else None)
    assert got.item() == pytest.approx(numpy_delta(current, pretrained, attention), rel=1e-5)


def training_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.train()
    return model(x)


def test_bss_penalises_the_head_input_of_the_batch_it_trained_on():
    torch.manual_seed(0)
    backbone = create_backbone("tinycnn", 3)
    strategy = BSS(RunConfig(strategy="bss", backbone="tinycnn", bss_eta=0.5, bss_k=2), backbone)
    seen = []
    head = backbone.model.get_submodule(backbone.spec.head)
    handle = head.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().numpy().copy()))
    training_forward(backbone.model, torch.randn(6, 3, 16, 16))
    handle.remove()
    assert strategy.penalty().item() == pytest.approx(0.5 * numpy_bss(seen[0], 2), rel=1e-4)
    with pytest.raises(RuntimeError, match="before a training forward"):
        strategy.penalty()  # each batch's features are used once


class Batches:
    """The probe's `batches`: fixed seeded training batches."""

    def __init__(self, n_classes: int):
        generator = torch.Generator().manual_seed(3)
        self.data = [(torch.randn(8, 3, 16, 16, generator=generator), torch.arange(8) % n_classes) for _ in range(2)]

    def batches(self, n, seed=None):
        return iter(self.data[:n])


def test_delta_compares_each_blocks_maps_with_the_untouched_pretrained_network():
    torch.manual_seed(0)
    backbone = create_backbone("tinycnn", 3)
    original = copy.deepcopy(backbone.model)
    cfg = RunConfig(strategy="delta", backbone="tinycnn", delta_alpha=0.3, delta_beta=0.2)
    strategy = DELTA(cfg, backbone)
    strategy.plan(0, Batches(3))
    attention = [a.numpy() for a in strategy.attention]
    x = torch.randn(4, 3, 16, 16)

    def maps(model):
        found = []
        handles = [model.get_submodule(n).register_forward_hook(lambda _m, _a, out: found.append(
            out.detach().numpy().copy())) for n in backbone.block_ends().values()]
        training_forward(model, x)
        for h in handles:
            h.remove()
        return found

    assert [len(a) for a in attention] == [m.shape[1] for m in maps(copy.deepcopy(original))]
    assert all(a.sum() == pytest.approx(1.0, abs=1e-5) and (a > 0).all() for a in attention)
    assert any(np.ptp(a) > 1e-4 for a in attention)  # channels differ in importance

    head_norm = sum(float((p.detach() ** 2).sum()) for n, p in backbone.model.named_parameters()
                    if n in backbone.head_params)
    training_forward(backbone.model, x)  # at w = w0 the maps agree: only the head term is left
    assert strategy.penalty().item() == pytest.approx(0.2 / 2 * head_norm, rel=1e-5)

    with torch.no_grad():  # move the tuned network away from w0
        for name, p in backbone.model.named_parameters():
            if name not in backbone.head_params:
                p.add_(0.05 * torch.randn_like(p))
    expected = 0.3 * numpy_delta(maps(backbone.model), maps(original), attention) + 0.2 / 2 * head_norm
    backbone.model.zero_grad()
    training_forward(backbone.model, x)
    penalty = strategy.penalty()
    assert penalty.item() == pytest.approx(expected, rel=1e-4)
    penalty.backward()  # the distance pulls the backbone, not only the head
    assert backbone.model.get_submodule("stem")[0].weight.grad.abs().sum() > 0


def test_delta_attention_is_the_softmax_of_standardised_loss_rises_over_5():
    """Recomputed here for the last block end: zero each channel of the pretrained network's block output (the
    test's own hook on its own copy), the rise of the fitted classifier's loss, standardised (ddof 0), softmax / 5."""
    torch.manual_seed(0)
    backbone = create_backbone("tinycnn", 3)
    original = copy.deepcopy(backbone.model).eval()
    strategy = DELTA(RunConfig(strategy="delta", backbone="tinycnn"), backbone)
    batches = Batches(3).data
    strategy.plan(0, Batches(3))
    classifier = strategy._fit_classifier(batches)  # the same seeded fit the attention used
    name = list(backbone.block_ends().values())[-1]
    head = original.get_submodule(backbone.spec.head)

    def loss(channel=None):
        total = []
        for x, y in batches:
            seen = []
            hooks = [head.register_forward_pre_hook(lambda _m, args, seen=seen: seen.append(args[0]))]
            if channel is not None:
                def zero(_m, _a, out, channel=channel):
                    out = out.clone()
                    out[:, channel] = 0
                    return out
                hooks.append(original.get_submodule(name).register_forward_hook(zero))
            with torch.no_grad():
                original(x)
                total.append(torch.nn.functional.cross_entropy(classifier(seen[0]), y).item())
            for h in hooks:
                h.remove()
        return np.mean(total)

    base = loss()
    rises = np.array([loss(c) - base for c in range(strategy.attention[-1].numel())])
    scores = (rises - rises.mean()) / rises.std()
    expected = np.exp(scores / 5) / np.exp(scores / 5).sum()
    assert strategy.attention[-1].numpy() == pytest.approx(expected, rel=2e-3)  # float32 losses, differenced
