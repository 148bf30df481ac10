"""Backbone registry: builders, pinned weights, a new head and one block map per architecture.

Every backbone exposes the same small interface (`Backbone`): the model, its ordered
blocks (the unit of unfreezing, surgical tuning and per-block logging), the new head,
and the normalisation layers found by module type. Strategies never special-case an
architecture.
"""
from __future__ import annotations

import functools
import re
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..core.fileio import sha256_file
from ..core.registry import Registry
from .spec import BackboneSpec, WeightsError

RMS_NORMS = (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()  # torch >= 2.4
NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm,
              *RMS_NORMS)  # timm's LayerNorm2d, BatchNormAct2d, GroupNormAct subclass these (its RmsNorm does not)


def _made(name: str) -> BackboneSpec | None:
    from .timm_backbones import make_spec  # timm is imported only when a timm:NAME is asked for

    return make_spec(name)


BACKBONES: Registry[BackboneSpec] = Registry("backbone", maker=_made)


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    return BACKBONES.add(spec.name, spec)


def get_backbone_spec(name: str) -> BackboneSpec:
    return BACKBONES.get(name)


def list_backbones() -> list[str]:
    return BACKBONES.names()


@dataclass
class Backbone:
    """A model with a new head, its block map and the lookups strategies need."""

    spec: BackboneSpec
    model: nn.Module
    blocks: dict[str, list[str]]  # block -> parameter names, input to output; the last holds the head
    head_params: list[str] = field(default_factory=list)  # the new head's parameter names
    adapted: list[str] = field(default_factory=list)  # a 1-channel checkpoint's tensors spread over R, G, B

    @property
    def block_names(self) -> list[str]:
        return list(self.blocks)

    def block_of(self) -> dict[str, str]:
        """Parameter name -> block name."""
        return {p: b for b, names in self.blocks.items() for p in names}

    def reindex(self) -> None:
        """Rebuild the block map after a strategy added or removed parameters inside the blocks (SSF, LoRA)."""
        self.blocks = _index(self.spec, self.model).blocks

    def block_ends(self) -> dict[str, str]:
        """Block -> the module whose output ends it (the last its map lists), every block before the head's."""
        return _ends(self.spec, self.model)

    def channel_dims(self) -> dict[str, int]:
        """Block -> the dimension of its end's output that holds the channels (block_ends' blocks)."""
        return channel_dims(self.spec.name)

    def norm_modules(self, block: str) -> list[nn.Module]:
        """Normalisation layers of a block, found by module type (never by name)."""
        return self._norms[block]

    @functools.cached_property
    def _norms(self) -> dict[str, list[nn.Module]]:
        prefixes = self.spec.blocks(self.model)
        return {block: [m for name, m in self.model.named_modules()
                        if isinstance(m, NORM_TYPES) and _under(name, prefixes[block])] for block in prefixes}

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.model.parameters())
        return f"Backbone({self.spec.name}, {n / 1e6:.2f}M parameters, blocks={self.block_names})"


def _under(name: str, prefixes: list[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def create_backbone(name: str, num_classes: int, weights: str = "none", sha256: str = "",
                    progress: bool = True, keys: str = "", channels: str = "") -> Backbone:
    """Build `name` with `weights` and a new `num_classes` head.

    Args:
        name: registered backbone name.
        num_classes: outputs of the new head.
        weights: "none" (random init), a torchvision weight set (e.g. IMAGENET1K_V1) or a checkpoint file path
            (.pt, .pth, .safetensors, ...).
        sha256: expected SHA-256 of a checkpoint file; "": not checked.
        progress: show torchvision's download progress.
        keys: the config's weights_keys: "regex=>replacement" rewrites of a checkpoint's key names, ";"-separated.
        channels: the config's weights_channels: "repeat" or "luminance" adapts a 1-channel checkpoint to RGB.
    """
    spec = get_backbone_spec(name)
    model = spec.build()
    if weights.lower() != "none" and not _is_path(weights):
        named = spec.named_weights or functools.partial(_torchvision_state, spec)
        model.load_state_dict(named(weights, progress))
    _replace_head(model, spec.head, num_classes)
    adapted = load_checkpoint(model, Path(weights), sha256, spec, keys, channels) if _is_path(weights) else []
    backbone = _index(spec, model)
    backbone.adapted = adapted
    return backbone


@functools.cache
def block_names(name: str) -> tuple[str, ...]:
    """The block map's names of backbone `name`, input to output, without weights or memory (built on
    the meta device), so configurations can be checked before anything is built."""
    return tuple(get_backbone_spec(name).blocks(meta_model(name)))


def meta_model(name: str) -> nn.Module:
    """Backbone `name`'s architecture (its original head) without weights or memory, on the meta device: what a
    config check may inspect before anything is built."""
    with torch.device("meta"):
        return get_backbone_spec(name).build()


def _ends(spec: BackboneSpec, model: nn.Module) -> dict[str, str]:
    prefixes = spec.blocks(model)
    *body, _ = prefixes
    modules = dict(model.named_modules())  # a block may also list bare tensors (a ViT's cls_token)
    return {block: [p for p in prefixes[block] if p in modules][-1] for block in body}


@functools.cache
def channel_dims(name: str) -> dict[str, int]:
    """Block -> the dimension of its end module's output that holds the channels: 1 for a CNN's maps (B, C, H, W),
    the last for a transformer's tokens (B, N, C) or channels-last maps (B, H, W, C). Found by forwards on the meta
    device (no memory, no time) at two image sides: the channel dimension is the one whose size stays; 1 where
    that is not one dimension (or the forward fails)."""
    model = meta_model(name).eval()
    ends = _ends(get_backbone_spec(name), model)
    side = max(get_backbone_spec(name).min_size, 32)
    shapes: dict[str, list[tuple]] = {block: [] for block in ends}
    handles = [model.get_submodule(module).register_forward_hook(
        lambda _m, _a, out, b=block: shapes[b].append(tuple(out.shape))) for block, module in ends.items()]
    try:
        with torch.device("meta"):
            for size in (side, 2 * side):
                model(torch.empty(2, 3, size, size))
    except Exception:  # a model the meta device cannot run: the CNN layout
        return dict.fromkeys(ends, 1)
    finally:
        for handle in handles:
            handle.remove()
    dims = {}
    for block, (small, large) in shapes.items():
        steady = [d for d in range(1, len(small)) if small[d] == large[d]]
        dims[block] = steady[0] if len(steady) == 1 and len(small) == len(large) else 1
    return dims


def _index(spec: BackboneSpec, model: nn.Module) -> Backbone:
    prefixes = spec.blocks(model)
    blocks: dict[str, list[str]] = {b: [] for b in prefixes}
    for pname, _ in model.named_parameters():
        owners = [b for b, pre in prefixes.items() if _under(pname, pre)]
        if len(owners) != 1:
            raise AssertionError(f"{spec.name}: parameter {pname} is in blocks {owners}; fix the block map")
        blocks[owners[0]].append(pname)
    head = [p for p, _ in model.named_parameters() if _under(p, [spec.head])]
    return Backbone(spec, model, blocks, head)


def _is_path(weights: str) -> bool:
    return weights.endswith((".pt", ".pth", ".bin", ".ckpt", ".safetensors")) or "/" in weights or "\\" in weights


def swap_module(model: nn.Module, dotted: str, new: nn.Module) -> nn.Module:
    """Put `new` where the submodule `dotted` is; returns the module it replaced."""
    parent_name, _, child = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, child)
    setattr(parent, child, new)
    return old


def _replace_head(model: nn.Module, dotted: str, num_classes: int) -> None:
    old = model.get_submodule(dotted)
    if not isinstance(old, nn.Linear):
        raise WeightsError(f"the classifier {dotted} is a {type(old).__name__}, not a Linear layer: studylib replaces "
                           "a Linear head only; choose another model")
    swap_module(model, dotted, nn.Linear(old.in_features, num_classes))


def _torchvision_state(spec: BackboneSpec, weights: str, progress: bool) -> dict:
    enum = weight_sets(spec)
    valid = [w.name for w in enum] if enum else []
    if weights not in valid:
        raise WeightsError(f"{spec.name} has no weight set {weights!r}. Use one of {', '.join(valid + ['none'])} "
                           "or a checkpoint file path (DEFAULT is refused: it changes between releases)")
    entry = enum[weights]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(entry.url).name
    try:  # torch.hub downloads to a temporary file first, so no partial file is left behind
        return entry.get_state_dict(progress=progress, check_hash=True)
    except (urllib.error.URLError, OSError) as err:
        raise WeightsError(
            f"could not download {spec.name} {weights} ({err}). Offline, pre-fill the cache: on a machine "
            f"with network run  python -c \"import torchvision; torchvision.models.get_weight('"
            f"{type(entry).__name__}.{weights}').get_state_dict()\"  and copy the file to {cached}; or pass "
            f"weights=/path/to/{cached.name} (a local checkpoint file).") from None


def load_checkpoint(model: nn.Module, path: Path, sha256: str, spec: BackboneSpec, keys: str = "",
                    channels: str = "") -> list[str]:
    """Load every non-head weight from a local file (a .safetensors file, or torch.load with weights_only=True),
    its key names rewritten by `keys`, a 1-channel first convolution adapted by `channels`, checking shapes.

    Args:
        model: the built network, new head in place; loaded in place.
        path: checkpoint file: a state dict (also under "state_dict" or "model"), or a .safetensors file.
        sha256: expected SHA-256 of the file; "": not checked.
        spec: the backbone's spec (the head's weights are left out).
        keys: "regex=>replacement" rewrites of the file's key names, ";"-separated (empty replacement: dropped).
        channels: a convolution saved for 1 input channel where the model takes 3: "repeat" (over them, divided
            by 3) or "luminance" (weighted as grey conversion weighs R, G and B); "": refused with this fix named.
    """
    if not path.is_file():
        raise WeightsError(f"checkpoint file {path} does not exist; pass an existing file or weights=none")
    actual = sha256_file(path) if sha256 else ""
    if actual != sha256.lower():
        raise WeightsError(f"checkpoint {path} has SHA-256 {actual}, expected {sha256}; "
                           "the file is corrupt or not the one you meant")
    try:
        if path.suffix == ".safetensors":  # no pickle at all
            from safetensors.torch import load_file

            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types, some with cryptic messages
        kind = "safetensors file" if path.suffix == ".safetensors" else "PyTorch checkpoint"
        raise WeightsError(f"{path} is not a readable {kind} ({type(err).__name__}: "
                           f"{str(err).strip().splitlines()[0][:120] if str(err).strip() else ''}); "
                           "pass a file written by torch.save(model.state_dict()) or safetensors.torch.save_file, "
                           "or weights=none") from None
    state = _renamed(_unwrap_state(state, path), keys)
    own = {k: v for k, v in model.state_dict().items() if not _under(k, [spec.head])}
    theirs, adapted = _channels_adapted({k: v for k, v in state.items() if not _under(k, [spec.head])}, own,
                                        channels, path)
    _check_fit(own, theirs, path, spec.name)
    model.load_state_dict(theirs, strict=False)
    return adapted


def _renamed(state: dict[str, torch.Tensor], keys: str) -> dict[str, torch.Tensor]:
    """The state dict with each "regex=>replacement" rule of `keys` applied to every key name, in order; a key
    rewritten to "" is dropped (a tensor the backbone has no place for, e.g. torchxrayvision's op_threshs)."""
    rules = [rule.partition("=>")[::2] for rule in filter(None, keys.split(";"))]
    out = {}
    for key, tensor in state.items():
        for pattern, replacement in rules:
            key = re.sub(pattern, replacement, key)
        if key:
            out[key] = tensor
    return out


CHANNEL_MODES = {"repeat": (1 / 3, 1 / 3, 1 / 3),  # the mean of R, G and B
                 "luminance": (0.299, 0.587, 0.114)}  # ITU-R BT.601 grey, as PIL's convert("L") weighs them


def _channels_adapted(theirs: dict, own: dict, channels: str, path: Path) -> tuple[dict, list[str]]:
    """Convolutions saved for 1 input channel where the model's take 3: spread over R, G and B by `channels`
    ("repeat": each a third, so the convolution sees the channels' mean; "luminance": the grey level's weights,
    so it sees the image converted to grey); both give a grey image (R = G = B) the checkpoint's response.
    Refused with the fix named otherwise."""
    single = [k for k, v in theirs.items() if k in own and v.ndim == 4 and v.shape[1] == 1 and own[k].shape[1] == 3
              and v.shape[0] == own[k].shape[0]]
    if single and channels not in CHANNEL_MODES:
        raise WeightsError(f"checkpoint {path} was saved for 1-channel images ({single[0]}: "
                           f"{tuple(theirs[single[0]].shape)}) and the backbone takes 3; set weights_channels=repeat "
                           "(its first convolution on the mean of R, G and B) or weights_channels=luminance (on the "
                           "image converted to grey)")
    spread = torch.tensor(CHANNEL_MODES.get(channels, (1, 1, 1))).view(1, 3, 1, 1)
    return {k: (v.repeat(1, 3, 1, 1) * spread.to(v.dtype) if k in single else v) for k, v in theirs.items()}, single


def _unwrap_state(state: object, path: Path) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _check_fit(own: dict, theirs: dict, path: Path, name: str) -> None:
    missing = sorted(set(own) - set(theirs))
    extra = sorted(set(theirs) - set(own))
    shapes = [f"{k}: file {tuple(theirs[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in theirs and own[k].shape != theirs[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} weights missing (e.g. {', '.join(missing[:3])})")
    if extra:
        problems.append(f"{len(extra)} unexpected weights (e.g. {', '.join(extra[:3])})")
    if shapes:
        problems.append(f"{len(shapes)} shapes differ ({'; '.join(shapes[:3])})")
    if problems:
        raise WeightsError(f"checkpoint {path} does not fit backbone {name}: {'; '.join(problems)}. "
                           "Was it saved from the same backbone?")


# --- block maps (docs/design.md section 3) ---

def _resnet_blocks(model: nn.Module) -> dict[str, list[str]]:
    blocks = {"stem": ["conv1", "bn1"]}
    blocks.update({f"layer{i}": [f"layer{i}"] for i in range(1, 5)})
    blocks["head"] = ["fc"]
    return blocks


def _densenet_blocks(model: nn.Module) -> dict[str, list[str]]:
    blocks = {"stem": ["features.conv0", "features.norm0"]}
    for i in range(1, 4):
        blocks[f"denseblock{i}"] = [f"features.denseblock{i}"]
        blocks[f"transition{i}"] = [f"features.transition{i}"]
    blocks["denseblock4"] = ["features.denseblock4", "features.norm5"]
    blocks["head"] = ["classifier"]
    return blocks


def _vgg_blocks(model: nn.Module) -> dict[str, list[str]]:
    """Five convolution stages (each ends at a max-pool), then the classifier."""
    blocks: dict[str, list[str]] = {}
    stage = 1
    for index, layer in enumerate(model.features):
        blocks.setdefault(f"conv{stage}", []).append(f"features.{index}")
        stage += isinstance(layer, nn.MaxPool2d)
    blocks["classifier"] = ["classifier"]
    return blocks


class TinyCNN(nn.Module):
    """A small residual-free CNN with BatchNorm: four stages, global pooling, a linear head.

    Fast on a laptop CPU at 32 to 64 pixels; the backbone of the demo, the teaching
    notebooks and the tests.
    """

    def __init__(self, num_classes: int = 16, widths: tuple[int, ...] = (16, 32, 64, 96)):
        super().__init__()
        self.stem = _conv_bn(3, widths[0], stride=1)
        self.stage1 = nn.Sequential(_conv_bn(widths[0], widths[1], 2), _conv_bn(widths[1], widths[1], 1))
        self.stage2 = nn.Sequential(_conv_bn(widths[1], widths[2], 2), _conv_bn(widths[2], widths[2], 1))
        self.stage3 = nn.Sequential(_conv_bn(widths[2], widths[3], 2), _conv_bn(widths[3], widths[3], 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage3(self.stage2(self.stage1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def _conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _tiny_blocks(model: nn.Module) -> dict[str, list[str]]:
    return {"stem": ["stem"], "stage1": ["stage1"], "stage2": ["stage2"], "stage3": ["stage3"], "head": ["fc"]}


def tv():
    """torchvision.models, imported on first use: it costs about 3 s, which every process (a grid, each
    notebook kernel) would otherwise pay even for the tinycnn runs that never touch it."""
    import torchvision.models

    return torchvision.models


def weight_sets(spec: BackboneSpec) -> type | None:
    """The backbone's torchvision weights enum, resolved (None: only checkpoint files or none)."""
    enum = spec.weights_enum
    return enum if enum is None or isinstance(enum, type) else enum()


def weight_names(spec: BackboneSpec) -> list[str]:
    """The weights a config may name for the backbone, besides none and a checkpoint file."""
    enum = weight_sets(spec)
    return [w.name for w in enum] if enum else list(spec.weight_names)


register_backbone(BackboneSpec("resnet50", "ResNet-50 (study backbone); 6 blocks: stem, layer1-4, head",
                               lambda: tv().resnet50(weights=None), _resnet_blocks, "fc",
                               lambda: tv().ResNet50_Weights))
register_backbone(BackboneSpec("densenet121", "DenseNet-121 (study backbone); 9 blocks: stem, 4 dense blocks, "
                               "3 transitions, head", lambda: tv().densenet121(weights=None), _densenet_blocks,
                               "classifier", lambda: tv().DenseNet121_Weights, channels_last=False, min_size=32))
register_backbone(BackboneSpec("vgg19", "VGG-19 (study backbone); 6 blocks: conv1-5, classifier (last layer new)",
                               lambda: tv().vgg19(weights=None), _vgg_blocks, "classifier.6",
                               lambda: tv().VGG19_Weights, min_size=32))
register_backbone(BackboneSpec("resnet18", "ResNet-18 (smaller study-style backbone); same 6-block map as ResNet-50",
                               lambda: tv().resnet18(weights=None), _resnet_blocks, "fc",
                               lambda: tv().ResNet18_Weights))
register_backbone(BackboneSpec("tinycnn", "tiny 4-stage CNN (0.2M parameters) for CPU teaching, demo and tests",
                               TinyCNN, _tiny_blocks, "fc", None, channels_last=False))
